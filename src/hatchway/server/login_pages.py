"""HTML for the phone's approval page (US 9,635,022 B2 claim steps 3–5).

The page tells the truth about the request (who, which device, when, from
where), asks for the password only, and gives Approve and Deny the same size
and weight. No inline script or style: the CSP allows only ``'self'``, so the
session reference and the CSRF token reach ``login-page.js`` as data attributes.
Every value from the store or the network goes through :func:`html.escape`, and
every value the requester chose (name, device, address) sits in its own ``<bdi>``.

Issue 8: the page names the registered client (its operator-given name, not
only the device's self-chosen one) and lists its scopes in plain words; for a
confirm-code client reached by the QR link it first asks which of three codes
the device shows; after Approve, Deny becomes "Withdraw approval".
"""

from __future__ import annotations

from html import escape

from hatchway.clients import describe_scope
from hatchway.flows.login.approval import SessionPage, started_at_iso, started_at_text
from hatchway.flows.login.common import mask_username

STATIC_PREFIX = "/login/static/"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Strict-Transport-Security": "max-age=31536000",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # "same-origin", not "no-referrer": with no-referrer Chromium sends
    # "Origin: null" on the Deny form POST, which the CSRF check must refuse;
    # the user code in our URLs still never leaves the origin.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _layout(title: str, body: str, *, script: bool = False) -> str:
    js = f'<script type="module" src="{STATIC_PREFIX}login-page.js"></script>' if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · hatchway</title>"
        f'<link rel=stylesheet href="{STATIC_PREFIX}login.css">{js}</head>'
        f"<body><main>{body}</main></body></html>"
    )


def code_entry_page(csrf: str, *, message: str = "") -> str:
    """``verification_uri``: asks for the code shown on the device."""
    note = f"<p class=note role=alert>{escape(message)}</p>" if message else ""
    return _layout(
        "Enter code",
        "<h1>Sign in a device</h1>"
        "<p>Enter the code your device shows.</p>"
        f"{note}"
        # POST, CSRF-bound: only a code typed on this page counts as "typed",
        # which spares the user the confirm-code step (a link cannot fake it).
        '<form method=post action="/login">'
        f'<input type=hidden name=csrf value="{escape(csrf)}">'
        "<label for=user_code>Code</label>"
        "<input id=user_code name=user_code autocomplete=off autocapitalize=characters "
        'spellcheck=false placeholder="XXXX-XXXX" required maxlength=16>'
        "<button type=submit>Continue</button></form>",
    )


_ENDED = {
    "approved": ("Already approved", "This request was approved already. Nothing more to do."),
    "consumed": ("Already used", "This code was used already. Start again on the device."),
    "denied": ("Request denied", "This request was denied. The device was not signed in."),
    "withdrawn": (
        "Approval withdrawn",
        "You withdrew your approval before the device collected it. The device was not signed in.",
    ),
    "too_late": (
        "Too late to withdraw",
        "The device had already collected its sign-in before you pressed Deny, so it is "
        "signed in. Sign it out on the device, or ask your administrator to revoke that "
        "session.",
    ),
    "expired": ("Code expired", "This code has expired. Start again on the device."),
    "unknown": (
        "Unknown code",
        "This code is unknown, expired or already used. Check it, or start again on the device.",
    ),
    "limited": ("Too many attempts", "Too many codes were tried from here. Wait a minute."),
    "needs_js": (
        "JavaScript needed",
        "Approving needs JavaScript, so that your password is checked on this phone and "
        "never sent. Nothing was approved or denied. Turn JavaScript on and open the link again.",
    ),
}


def ended_page(status: str) -> str:
    title, text = _ENDED.get(status, _ENDED["unknown"])
    return _layout(
        title,
        f"<h1 id=status data-status={escape(status)}>{escape(title)}</h1><p>{escape(text)}</p>"
        '<p><a href="/login">Enter another code</a></p>',
    )


def _deny_form(view: SessionPage, csrf: str) -> str:
    s = view.session
    assert s is not None  # noqa: S101 - callers pass a session page
    return (
        f'<form id=deny method=post action="/login/deny">'
        f'<input type=hidden name=user_code value="{escape(s.user_code)}">'
        f'<input type=hidden name=session_ref value="{escape(s.reference)}">'
        f'<input type=hidden name=csrf value="{escape(csrf)}"></form>'
    )


def _client_facts(view: SessionPage) -> str:
    """Which registered app asks, and what it may do, in plain words."""
    s = view.session
    assert s is not None  # noqa: S101 - callers pass a session page
    if view.client is not None:
        app = (
            f"<p id=client>App: <strong><bdi id=client-name>{escape(view.client.name)}</bdi>"
            f"</strong> (registered as <bdi>{escape(s.client_id)}</bdi>)</p>"
        )
    else:
        app = f"<p id=client>App: <bdi>{escape(s.client_id)}</bdi> (no longer registered)</p>"
    scopes = s.scope.split()
    if not scopes:
        return app + "<p id=scopes>It asks only to sign you in, nothing more.</p>"
    items = "".join(f"<li data-scope={escape(t)}>{escape(describe_scope(t))}</li>" for t in scopes)
    return app + f"<p>If you approve, it will be able to:</p><ul id=scopes>{items}</ul>"


def approved_page(view: SessionPage, csrf: str) -> str:
    """An approved session whose device has not collected yet: offer to withdraw."""
    if view.session is None:
        return ended_page("unknown")
    return _layout(
        "Already approved",
        "<h1 id=status data-status=approved>Already approved</h1>"
        "<p>This request was approved. Changed your mind? Until the device has collected "
        "its sign-in you can still withdraw the approval.</p>"
        f"{_deny_form(view, csrf)}"
        "<div class=choices><button id=deny-button type=submit form=deny>"
        "Withdraw approval</button></div>",
    )


def approval_page(view: SessionPage, csrf: str, *, typed_token: str = "") -> str:
    """The page for a pending session: the request's facts, a password, two buttons.

    The device name is what the device *says* it is (sanitised at device
    authorization), so the page labels it that way. Without JavaScript the
    password form stays hidden and the page says why: the password is proved
    on the phone and must never be posted. Deny is a plain form of its own and
    works without script.
    """
    s = view.session
    if s is None:
        return ended_page("unknown")
    who = escape(mask_username(s.username))
    device = escape(s.device_name)
    when = (
        f'<time id=started datetime="{escape(started_at_iso(s))}">'
        f"{escape(started_at_text(s))}</time>"
    )
    where = escape(s.initiator_ip)
    # Confirm-code (issue 8 §2): a user who came by the link picks the code the
    # device shows before the password field appears; a typed code needs no pick.
    confirm = ""
    if s.code_choices is not None and not typed_token:
        buttons = "".join(
            f'<button type=button class=code data-code="{escape(c)}">{escape(c)}</button>'
            for c in s.code_choices
        )
        confirm = (
            "<section id=confirm><p><strong>Which code does your device show?</strong></p>"
            f"<div class=codes>{buttons}</div>"
            "<p class=note>If it shows none of these, or you did not start this yourself, "
            "press Deny.</p></section>"
        )
    # Every value the requester chose is escaped *and* isolated in <bdi>: right-
    # to-left letters in it then cannot reorder the page's own words around it.
    return _layout(
        "Approve sign-in",
        f"<h1>Sign in as <bdi id=who>{who}</bdi> on a device calling itself "
        f"“<bdi id=device>{device}</bdi>”</h1>"
        f"<p id=origin>Sign in as <bdi>{who}</bdi> on a device calling itself "
        f"“<bdi>{device}</bdi>” — started {when} from <bdi>{where}</bdi></p>"
        f"{_client_facts(view)}"
        "<p>Only continue if you started this yourself on that device, just now.</p>"
        f"{confirm}"
        "<p id=nojs class=note>Approving needs JavaScript: your password is checked on "
        "this phone and never sent. Turn JavaScript on and reload, or deny below.</p>"
        f"{_deny_form(view, csrf)}"
        # No method, no action, no name on the password: even if this form were
        # submitted without the script, the password would not leave the page.
        f'<form id=approve hidden data-session-ref="{escape(s.reference)}" '
        f'data-user-code="{escape(s.user_code)}" data-csrf="{escape(csrf)}" '
        f'data-typed="{escape(typed_token)}" data-confirm="{"1" if confirm else ""}">'
        "<label for=password>Password</label>"
        "<input id=password type=password autocomplete=current-password></form>"
        "<div class=choices>"
        "<button id=approve-button type=submit form=approve hidden>Approve</button>"
        "<button id=deny-button type=submit form=deny>Deny</button>"
        "</div>"
        "<p id=result role=status aria-live=polite></p>"
        "<p id=match hidden>Enter this number on the device: <strong id=match-number>"
        "</strong></p>"
        "<p id=withdraw-note hidden>Changed your mind? Until the device has collected its "
        "sign-in, Withdraw approval stops it.</p>",
        script=True,
    )
