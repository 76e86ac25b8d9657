"""Revision 0007_key_rotation on SQLite and PostgreSQL: device rotations, server keys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from hatchway.store import InvalidTransition, KeyIdTaken, Store, UnknownDevice
from hatchway.store.engine import alembic_config

pytest_plugins = ["store_fixtures"]

NEW_SIG = {"kty": "OKP", "crv": "Ed25519", "x": "new", "kid": "k-new"}
NEW_ENC = {"kty": "OKP", "crv": "X25519", "x": "new-enc", "kid": "e-new"}


def rotate(store: Store, mid: str = "m1", old: str = "k-dev-1", **changes: object) -> object:
    values: dict[str, object] = {
        "mid": mid,
        "old_signing_kid": old,
        "signing_jwk": NEW_SIG,
        "encryption_jwk": NEW_ENC,
        "certificate_pem": "cert-new",
        "now": 2000.0,
        "retires_at": 3000.0,
        **changes,
    }
    return store.rotate_device_keys("dev-1", **values)  # type: ignore[arg-type]


def test_a_rotation_swaps_keys_and_is_idempotent(store: Store, enrolled_device: str) -> None:
    first = rotate(store)
    record = store.get_device(enrolled_device)
    assert record is not None and record.signing_jwk == NEW_SIG
    assert record.encryption_jwk == NEW_ENC and record.certificate_pem == "cert-new"
    assert store.find_device_by_signing_kid("k-new") is not None
    assert store.find_device_by_signing_kid("k-dev-1") is None
    # The same mid again (a retransmission) returns the first rotation, changes nothing.
    assert rotate(store, old="k-new", certificate_pem="other") == first
    assert store.get_device_rotation(enrolled_device, "m1") == first


def test_the_old_key_resolves_only_while_it_is_the_last_one(
    store: Store, enrolled_device: str
) -> None:
    rotate(store)
    previous = store.find_previous_signing_key("k-dev-1")
    assert previous is not None and previous.retires_at == 3000.0
    assert previous.old_signing_jwk["x"] == "sig-dev-1"
    newer = {**NEW_SIG, "kid": "k-newer", "x": "newer"}
    rotate(store, mid="m2", old="k-new", signing_jwk=newer)
    assert store.find_previous_signing_key("k-dev-1") is None
    assert store.find_previous_signing_key("k-new") is not None
    store.deregister_device(enrolled_device, now=2500.0)
    assert store.find_previous_signing_key("k-new") is None


def test_only_the_current_key_can_rotate(store: Store, enrolled_device: str) -> None:
    with pytest.raises(InvalidTransition):
        rotate(store, old="not-the-key")
    with pytest.raises(UnknownDevice):
        store.rotate_device_keys(
            "nobody",
            mid="m",
            old_signing_kid="k",
            signing_jwk=NEW_SIG,
            encryption_jwk=NEW_ENC,
            certificate_pem="c",
            now=1.0,
            retires_at=2.0,
        )
    assert store.get_device_rotation(enrolled_device, "m1") is None


def test_a_key_id_of_another_device_is_refused(store: Store, enrolled_device: str) -> None:
    from store_enrol import enrol_device

    store.provision_device("dev-2", "hash-2", now=1.0)
    enrol_device(store, "dev-2")
    with pytest.raises(KeyIdTaken):
        rotate(store, signing_jwk={**NEW_SIG, "kid": "k-dev-2"})
    record = store.get_device(enrolled_device)
    assert record is not None and record.signing_jwk is not None
    assert record.signing_jwk["kid"] == "k-dev-1"


def test_concurrent_rotations_with_one_mid_rotate_once(store: Store, enrolled_device: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _try(store), range(4)))
    rotations = [r for r in results if not isinstance(r, Exception)]
    assert rotations and all(r == rotations[0] for r in rotations)


def _try(store: Store) -> object:
    try:
        return rotate(store)
    except (InvalidTransition, KeyIdTaken) as exc:  # lost the race before the insert
        return exc


def test_server_key_generations(store: Store) -> None:
    wrap = lambda g: f"wrapped-{g}"  # noqa: E731
    first = store.add_server_keys(
        signing_kid="s1",
        encryption_kid="e1",
        wrap=wrap,
        now=1.0,
        retire_at=None,
        only_if_empty=True,
    )
    again = store.add_server_keys(
        signing_kid="sX",
        encryption_kid="eX",
        wrap=wrap,
        now=1.0,
        retire_at=None,
        only_if_empty=True,
    )
    assert (first, again) == (1, None)
    assert (
        store.add_server_keys(
            signing_kid="s2", encryption_kid="e2", wrap=wrap, now=5.0, retire_at=50.0
        )
        == 2
    )
    store.add_server_keys(signing_kid="s3", encryption_kid="e3", wrap=wrap, now=6.0, retire_at=60.0)
    rows = store.list_server_keys()
    assert [(r.generation, r.wrapped, r.retires_at) for r in rows] == [
        (1, "wrapped-1", 50.0),  # an earlier retirement is never pushed back
        (2, "wrapped-2", 60.0),
        (3, "wrapped-3", None),
    ]


def test_downgrade_below_0007_drops_only_its_tables(store: Store, store_url: str) -> None:
    with store.engine.connect() as conn, conn.begin():
        config = alembic_config(conn)
        below = ScriptDirectory.from_config(config).get_revision("0007_key_rotation")
        command.downgrade(config, str(below.down_revision))
        tables = set(inspect(conn).get_table_names())
        assert not {"device_key_rotations", "server_keys"} & tables and "devices" in tables
        command.upgrade(config, "head")
        assert {"device_key_rotations", "server_keys"} <= set(inspect(conn).get_table_names())
