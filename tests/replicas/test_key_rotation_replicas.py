"""Issue 9 "Key rotation" with two replicas on one PostgreSQL store.

The server's key generations live in the store, wrapped under the data dir's
``message-keys.json`` that both replicas hold. ``hatchway keys rotate`` runs once;
replica A (restarted) answers the device under the old key with the new keys; the
device's next message, sealed to the new key, lands on replica B, which has not
re-read the store yet (its periodic refresh is an hour away): B re-reads at once and
opens it. Nothing is lost; replays are refused on both replicas.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hatchway.device import Device
from hatchway.msgsec import MessageType
from hatchway.store import Store
from tests.login_e2e.conftest import hatchway
from tests.replicas.conftest import start_replicas
from tests.replicas.test_two_replicas import JOSE, Alternating

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_server_key_rotation_reaches_both_replicas(database_url: str, tmp_path: Path) -> None:
    env = {"HATCHWAY_SERVER_KEY_REFRESH": "3600"}
    with start_replicas(tmp_path, database_url, env) as replicas:
        a, b = replicas.a, replicas.b
        secret = str(hatchway(a, "device", "provision", "meter-k1")["secret"])
        transport = Alternating(replicas.public_http, a, b)
        device = Device.enroll(
            server=replicas.public_https,
            device_id="meter-k1",
            secret=secret,
            state_path=tmp_path / "meter-k1.json",
            ca_file=a.ca_file,
            transport=transport,
        )
        try:
            for i in range(4):
                assert device.send({"n": i}).typ is MessageType.ACK
            old_kid = device._server.verifying_key.kid
            rotated = hatchway(a, "keys", "rotate", "--overlap", "1h")
            a.restart()  # A reads the new generation at start; B does not re-read for an hour
            replies = [device.send({"n": i}).typ for i in range(4, 10)]
            # A answered first, under the old key, with the new keys; B then opened a
            # message sealed to a key it had not read yet.
            assert replies[0] is MessageType.SERVER_KEYS
            assert replies[1:] == [MessageType.ACK] * 5
            assert device._server.verifying_key.kid != old_kid
            assert rotated["generation"] == 2
            for token, other in (
                (transport.sent[a.http_url][-1], b),
                (transport.sent[b.http_url][-1], a),
                (transport.sent[b.http_url][0], a),
            ):
                answer = httpx.post(other.http_url + "/m", content=token, headers=JOSE)
                assert answer.status_code == 400
        finally:
            device.close()
            transport.close()
        with Store.open(replicas.database_url) as store:
            readings = [m.body["readings"]["n"] for m in store.list_messages("meter-k1")]
        assert sorted(readings) == list(range(10))
