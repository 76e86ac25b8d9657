"""``hatchway device revoke``: operator-side de-registration (issue 9, fig. 7).

Registered on the ``device`` command group by :mod:`hatchway.cli.device`; the flow is
:mod:`hatchway.flows.deregistration`, and docs/revocation.md says what happens next.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption, operator_context
from hatchway.cli.output import console, emit, errors_reported, shown


def revoke(
    device_id: Annotated[str, typer.Argument(help="The device id, e.g. meter-001.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why, e.g. stolen; the device is told this.")
    ],
    code: Annotated[
        str,
        typer.Option(
            "--code",
            help="RFC 5280 reasonCode for the CRL: keyCompromise, cessationOfOperation, "
            "affiliationChanged, superseded, privilegeWithdrawn or unspecified.",
        ),
    ] = "keyCompromise",
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Operator: revoke a device and its certificate. Its next message gets a sealed
    de-registration notice (pushed at once over MQTT), then everything from it is
    refused; the CRL lists the certificate; re-enrolment needs `provision --force`."""
    from hatchway.cli.device import _wake_pushers as wake_pushers
    from hatchway.flows.deregistration import RevocationService
    from hatchway.pki import RevocationCode

    with errors_reported(as_json):
        codes = [c.value for c in RevocationCode]
        if code not in codes:
            raise ValueError(f"--code must be one of {', '.join(codes)}")
        with operator_context(data_dir, database_url) as ctx:
            service = RevocationService(
                store=ctx.store, ca=ctx.identity.ca, clock=ctx.enrolment.clock
            )
            done = service.revoke(device_id, reason=reason, code=RevocationCode(code))
            wake_pushers(ctx, device_id)
        r = done.revocation
        data = {
            "device_id": device_id,
            "revoked": True,
            "already_revoked": not done.new,
            "reason": r.reason,
            "code": r.code,
            "revoked_at": r.revoked_at,
            "serial": None if done.serial is None else format(done.serial, "x"),
            "crl_number": done.crl_number,
        }
        emit(
            as_json,
            data,
            lambda: console.print(
                f"{shown(device_id)} {'revoked' if done.new else 'was already revoked'} "
                f"({shown(r.reason)}); certificate "
                f"{shown(data['serial'] or 'none (never enrolled)')} on CRL #{done.crl_number}",
                highlight=False,
            ),
        )
