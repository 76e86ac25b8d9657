"""Cross-device login (US 9,635,022 B2) over the store, the limits and the bus.

* :mod:`.service` — the device side: RFC 8628 device authorization, token and
  push endpoints (claim steps 1, 2 and 6);
* :mod:`.approval` — the phone side: the approval page's SCRAM proof, Deny and
  withdrawal (claim steps 3–5);
* :mod:`.guard` — password-attempt limits; :mod:`.polls` — poll timing kept in
  memory; :mod:`.tokens` — access and refresh tokens; :mod:`.common` — what
  the others share.

Import from the modules themselves: the package re-exports nothing, because
:mod:`hatchway.flows.clients` and :mod:`.common` import each other's modules.
"""
