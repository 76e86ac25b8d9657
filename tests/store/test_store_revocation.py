"""Revision 0008_revocation on SQLite and PostgreSQL: revoked devices, the sealed
notice (once, then the same bytes for a retransmission, then refusals), revoked
certificates that survive ``provision --force``, and numbered CRLs."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from hatchway.errors import InvalidMessage
from hatchway.store import (
    AcceptRequest,
    DeviceStatus,
    InvalidTransition,
    ReplayedJti,
    RevocationClosed,
    RevokedCertificate,
    SealedDelivery,
    SecretAlreadyUsed,
    Store,
    UnknownDevice,
)
from hatchway.store.engine import alembic_config

pytest_plugins = ["store_fixtures"]

KID = "k-dev-1"  # store_enrol's throwaway signing kid for dev-1


def _advance(seq: int) -> object:
    def advance(highest: int, bitmap: int) -> tuple[int, int]:
        if seq <= highest:
            raise InvalidMessage("seq replayed")
        return seq, bitmap

    return advance


def request(
    seq: int, jti: str, mid: str | None, *, now: float = 3000.0, kid: str = KID
) -> AcceptRequest:
    return AcceptRequest(
        "dev-1",
        seq=seq,
        jti=jti,
        exp=now + 300,
        mid=mid,
        typ="hatchway-telemetry+jwt",
        body={"readings": {"kwh": 1}},
        now=now,
        advance=_advance(seq),  # type: ignore[arg-type]
        signing_kid=kid,
    )


class Sealer:
    """Stands in for the messaging flow's sealing; counts how often it was asked."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, seq: int) -> SealedDelivery:
        self.calls.append(seq)
        return SealedDelivery(jti=f"n{seq}", exp=3300.0, reply=f"sealed-{seq}".encode())


def revoke(store: Store, *, serial: int | None = 0xABC, now: float = 2500.0) -> None:
    store.revoke_device(
        "dev-1",
        reason="stolen",
        code="keyCompromise",
        serial=serial,
        now=now,
        notice_until=now + 1000,
    )


def test_revoke_marks_device_and_certificate(store: Store, enrolled_device: str) -> None:
    record, new = store.revoke_device(
        "dev-1",
        reason="stolen",
        code="keyCompromise",
        serial=0xABC,
        now=2500.0,
        notice_until=3500.0,
    )
    assert new and record.reason == "stolen" and record.revoked_at == 2500.0
    device = store.get_device("dev-1")
    assert device is not None and device.status is DeviceStatus.REVOKED
    assert store.revoked_certificates() == [
        RevokedCertificate(serial=0xABC, device_id="dev-1", revoked_at=2500.0, code="keyCompromise")
    ]
    again, new_again = store.revoke_device(
        "dev-1", reason="other", code="superseded", serial=0xABC, now=2600.0, notice_until=3600.0
    )
    assert not new_again and again == record  # idempotent: the first revocation stands
    assert len(store.revoked_certificates()) == 1


def test_revoke_refuses_unknown_devices_and_bad_reasons(
    store: Store, provisioned_device: str
) -> None:
    with pytest.raises(UnknownDevice):
        store.revoke_device(
            "nobody", reason="x", code="keyCompromise", serial=None, now=1.0, notice_until=2.0
        )
    for reason in ("", "r" * 201):
        with pytest.raises(ValueError, match="reason"):
            store.revoke_device(
                "dev-1", reason=reason, code="keyCompromise", serial=None, now=1.0, notice_until=2.0
            )
    # A provisioned device (never enrolled, no certificate) can be revoked too.
    revoke(store, serial=None)
    assert store.revoked_certificates() == []
    record = store.get_device("dev-1")
    assert record is not None and record.status is DeviceStatus.REVOKED


def test_revoked_device_cannot_enrol_or_deregister(store: Store, provisioned_device: str) -> None:
    revoke(store, serial=None)
    with pytest.raises(SecretAlreadyUsed):
        store.consume_enrolment_secret("dev-1", now=2600.0)
    with pytest.raises(InvalidTransition):
        store.deregister_device("dev-1", now=2600.0)


def test_notice_once_then_same_bytes_for_a_retransmission_then_refused(
    store: Store, enrolled_device: str
) -> None:
    revoke(store)
    seal = Sealer()
    first = store.answer_revoked(request(1, "j1", "mid-1"), seal)
    assert first == b"sealed-1"
    # The same message re-sealed after a lost reply: same mid, fresh seq and jti.
    assert store.answer_revoked(request(2, "j2", "mid-1"), seal) == first
    assert len(seal.calls) == 1
    # Anything else from it is refused, and nothing of it is written.
    with pytest.raises(RevocationClosed):
        store.answer_revoked(request(3, "j3", "mid-2"), seal)
    with pytest.raises(RevocationClosed):
        store.answer_revoked(request(4, "j4", None), seal)
    # After the notice expired, even the retransmission is refused.
    with pytest.raises(RevocationClosed):
        store.answer_revoked(request(5, "j5", "mid-1", now=3300.0), seal)
    assert store.count_messages("dev-1") == 0
    revocation = store.get_revocation("dev-1")
    assert revocation is not None and revocation.notice_sent_at == 3000.0


def test_replays_never_get_a_notice(store: Store, enrolled_device: str) -> None:
    revoke(store)
    seal = Sealer()
    store.answer_revoked(request(5, "j5", "m"), seal)
    with pytest.raises(InvalidMessage):  # below the window: a pre-revocation token
        store.answer_revoked(request(4, "j-old", "m"), seal)
    with pytest.raises(ReplayedJti):
        store.answer_revoked(request(6, "j5", "m"), seal)
    assert seal.calls == [seal.calls[0]]


def test_notice_needs_the_revoked_key_and_the_grace(store: Store, enrolled_device: str) -> None:
    seal = Sealer()
    with pytest.raises(UnknownDevice):  # not revoked
        store.answer_revoked(request(1, "j1", "m"), seal)
    revoke(store)
    with pytest.raises(UnknownDevice):  # another key
        store.answer_revoked(request(1, "j1", "m", kid="other"), seal)
    with pytest.raises(RevocationClosed):  # never told, and the grace is over
        store.answer_revoked(request(1, "j1", "m", now=3500.0), seal)
    assert seal.calls == []


def test_push_is_claimed_once_and_not_after_the_reply(store: Store, enrolled_device: str) -> None:
    assert store.notices_to_push(now=2600.0) == []
    revoke(store)
    assert store.notices_to_push(now=2600.0) == ["dev-1"]
    assert store.notices_to_push(now=3600.0) == []  # past notice_until
    assert store.claim_notice_push("dev-1", now=2600.0)
    assert not store.claim_notice_push("dev-1", now=2601.0)
    assert store.notices_to_push(now=2602.0) == []


def test_reprovision_clears_the_revocation_but_not_the_certificate(
    store: Store, enrolled_device: str
) -> None:
    revoke(store)
    store.reprovision_device("dev-1", "hash-2", now=4000.0)
    record = store.get_device("dev-1")
    assert record is not None and record.status is DeviceStatus.PROVISIONED
    assert store.get_revocation("dev-1") is None
    assert [c.serial for c in store.revoked_certificates()] == [0xABC]
    assert store.notices_to_push(now=4001.0) == []


def test_crl_numbers_grow_and_the_newest_is_served(store: Store, enrolled_device: str) -> None:
    assert store.latest_crl() is None
    seen: list[tuple[int, int]] = []

    def build(number: int, entries: Sequence[RevokedCertificate]) -> tuple[float, float, bytes]:
        seen.append((number, len(entries)))
        return 10.0 * number, 10.0 * number + 5, b"crl-%d" % number

    first = store.publish_crl(build)
    revoke(store)
    second = store.publish_crl(build)
    assert (first.number, second.number) == (1, 2)
    assert seen == [(1, 0), (2, 1)]
    latest = store.latest_crl()
    assert latest == second and latest.der == b"crl-2"


def test_downgrade_below_0008_turns_revoked_into_deregistered(store: Store) -> None:
    store.provision_device("dev-1", "hash-1", now=1.0)
    revoke(store, serial=None)
    with store.engine.connect() as conn, conn.begin():
        config = alembic_config(conn)
        below = ScriptDirectory.from_config(config).get_revision("0008_revocation")
        command.downgrade(config, str(below.down_revision))
        tables = set(inspect(conn).get_table_names())
        status = conn.exec_driver_sql("SELECT status FROM devices").scalar_one()
    assert not tables & {"device_revocations", "revoked_certificates", "crls"}
    assert status == "deregistered"
