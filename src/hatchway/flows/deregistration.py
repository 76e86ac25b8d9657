"""Operator-side de-registration: US 11,546,310 B2 fig. 7, started by the server.

``hatchway device revoke ID`` ends a device's enrolment without its cooperation:

1. the device is marked revoked, with the operator's reason, and its certificate's
   serial is recorded as revoked (one store transaction);
2. a new CRL, signed by the dev CA, is published (RFC 5280 §5), and served at
   :data:`~hatchway.pki.CRL_PATH` on both listeners;
3. the device's next message is answered with a sealed ``DEREGISTERED`` notice
   (:mod:`hatchway.flows.messaging`), or the notice is pushed on its MQTT downlink;
   after that, or after :data:`NOTICE_GRACE` without being told, every message from
   it is refused with the uniform ``invalid_message``;
4. enrolment is refused (the device is no longer provisioned) until the operator
   issues a new secret with ``provision --force``; the old certificate stays revoked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from hatchway.flows.enrolment import check_device_id
from hatchway.pki import CertificateAuthority, CrlEntry, RevocationCode, build_crl, crl_der
from hatchway.pki.crl import CRL_VALIDITY, from_timestamp
from hatchway.runtime import Clock
from hatchway.store import CrlRecord, DeviceRecord, RevocationRecord, RevokedCertificate, Store

log = logging.getLogger("hatchway.revocation")

#: How long after the revocation a device that has not been told yet still gets the
#: notice on its next message; afterwards it is only refused.
NOTICE_GRACE = 30 * 24 * 3600.0
#: A CRL is re-signed (with the next number) once half its validity has passed.
REFRESH_AFTER = CRL_VALIDITY.total_seconds() / 2


@dataclass(frozen=True, slots=True)
class Revoked:
    """What ``revoke`` did: the revocation, whether it is new, the CRL now served."""

    revocation: RevocationRecord
    new: bool
    serial: int | None
    crl_number: int


def notice_body(revocation: RevocationRecord) -> dict[str, object]:
    """The ``DEREGISTERED`` message body (msgsec RULES)."""
    return {"reason": revocation.reason, "revoked_at": int(revocation.revoked_at)}


class RevocationService:
    def __init__(self, *, store: Store, ca: CertificateAuthority, clock: Clock) -> None:
        self.store = store
        self.ca = ca
        self.clock = clock

    def revoke(
        self,
        device_id: str,
        *,
        reason: str,
        code: RevocationCode = RevocationCode.KEY_COMPROMISE,
    ) -> Revoked:
        """Revoke ``device_id`` and its certificate; publish the new CRL."""
        check_device_id(device_id)
        reason = reason.strip()
        if not reason or not reason.isprintable():
            raise ValueError("--reason must be printable text, e.g. --reason stolen")
        record = self.store.get_device(device_id)
        if record is None:
            raise ValueError(f"no device {device_id!r}")
        serial = _serial(record)
        now = self.clock()
        revocation, new = self.store.revoke_device(
            device_id,
            reason=reason,
            code=RevocationCode(code).value,
            serial=serial,
            now=now,
            notice_until=now + NOTICE_GRACE,
        )
        crl = self.publish() if new else self.current_crl()
        if new:
            log.info(
                "device revoked",
                extra={"device_id": device_id, "serial": serial, "crl_number": crl.number},
            )
        return Revoked(revocation=revocation, new=new, serial=serial, crl_number=crl.number)

    def publish(self) -> CrlRecord:
        """Sign and store a CRL over every revoked certificate (the next CRL number)."""
        now = self.clock()

        def build(number: int, entries: Sequence[RevokedCertificate]) -> tuple[float, float, bytes]:
            crl = build_crl(
                self.ca,
                [
                    CrlEntry(e.serial, from_timestamp(e.revoked_at), RevocationCode(e.code))
                    for e in entries
                ],
                number=number,
                now=datetime.fromtimestamp(int(now), UTC),
            )
            return now, now + CRL_VALIDITY.total_seconds(), crl_der(crl)

        return self.store.publish_crl(build)

    def current_crl(self) -> CrlRecord:
        """The newest CRL, re-signed first when none exists or half its life is gone."""
        latest = self.store.latest_crl()
        if latest is None or self.clock() >= latest.this_update + REFRESH_AFTER:
            return self.publish()
        return latest


def _serial(record: DeviceRecord) -> int | None:
    if not record.certificate_pem:
        return None  # never enrolled: nothing to put on the CRL
    return x509.load_pem_x509_certificate(record.certificate_pem.encode()).serial_number
