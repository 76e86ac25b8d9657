"""Issue 9 revocation end to end over HTTP: a real ``hatchway serve``, the operator's and
the device's CLI as real processes.

revoke -> the device's next message gets the sealed notice -> the device deletes its
keys, prints one line and exits 3 -> everything further is refused (a copy of its keys
included) -> the CRL fetched from the metadata's URL lists the certificate -> re-enrolment
is refused until ``provision --force``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from hatchway.server.process import ServerProcess
from hatchway.store import DeviceStatus, Store
from tests.e2e.revocation_helpers import (
    EXIT_REVOKED,
    assert_crl_lists,
    certificate_of,
    fetch_crl,
    hatchway,
    ok_json,
)

pytestmark = pytest.mark.e2e


def enroll(server: ServerProcess, device_id: str, state: Path, secret: str) -> None:
    done = hatchway(
        "device",
        "enroll",
        "--server",
        server.https_url,
        "--device-id",
        device_id,
        "--state",
        str(state),
        "--json",
        server=server,
        env={"HATCHWAY_ENROLMENT_SECRET": secret},
    )
    ok_json(done)


def test_revoke_notice_key_deletion_refusal_crl_and_reenrolment(
    server: ServerProcess, tmp_path: Path
) -> None:
    secret = ok_json(hatchway("device", "provision", "meter-001", "--json", server=server))
    state, thief = tmp_path / "meter-001.json", tmp_path / "thief.json"
    enroll(server, "meter-001", state, str(secret["secret"]))
    ok_json(
        hatchway("device", "send", "--state", str(state), '{"kwh": 1}', "--json", server=server)
    )
    cert = certificate_of(state)
    _, crl_uri = fetch_crl(server)
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name == [x509.UniformResourceIdentifier(crl_uri)]
    shutil.copy(state, thief)  # a copy of the keys, as a thief would have

    revoked = ok_json(
        hatchway("device", "revoke", "meter-001", "--reason", "stolen", "--json", server=server)
    )
    assert revoked["serial"] == format(cert.serial_number, "x")
    assert revoked["revoked"] and not revoked["already_revoked"]

    # The next message gets the notice: one line, exit 3, keys gone.
    done = hatchway("device", "send", "--state", str(state), '{"kwh": 2}', server=server)
    assert done.returncode == EXIT_REVOKED, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "revoked" in lines[0] and "stolen" in lines[0]
    tomb = json.loads(state.read_text())
    assert tomb["revoked"]["reason"] == "stolen" and "signing_key" not in tomb
    # Never sends again: the tombstone answers before any network.
    again = hatchway("device", "poll", "--state", str(state), "--json", server=server)
    assert again.returncode == EXIT_REVOKED
    assert "revoked" in json.loads(again.stdout)["error"]

    # The copy of the keys is refused with the uniform answer, and nothing is stored.
    stolen = hatchway("device", "send", "--state", str(thief), '{"kwh": 3}', server=server)
    assert stolen.returncode == 1 and "rejected" in stolen.stderr
    with Store.open(f"sqlite:///{server.data_dir / 'hatchway.sqlite3'}") as store:
        assert store.count_messages("meter-001") == 1
        record = store.get_device("meter-001")
        assert record is not None and record.status is DeviceStatus.REVOKED

    assert_crl_lists(server, cert.serial_number, reason=x509.ReasonFlags.key_compromise)

    # No re-enrolment with the old secret; provision --force issues a new one.
    refused = hatchway(
        "device",
        "enroll",
        "--server",
        server.https_url,
        "--device-id",
        "meter-001",
        "--state",
        str(tmp_path / "again.json"),
        server=server,
        env={"HATCHWAY_ENROLMENT_SECRET": str(secret["secret"])},
    )
    assert refused.returncode != 0 and "invalid_grant" in refused.stderr
    fresh = ok_json(
        hatchway("device", "provision", "meter-001", "--force", "--json", server=server)
    )
    assert fresh["revocation_cleared"] is True
    enroll(server, "meter-001", state, str(fresh["secret"]))  # over the tombstone
    ok_json(
        hatchway("device", "send", "--state", str(state), '{"kwh": 4}', "--json", server=server)
    )
    assert certificate_of(state).serial_number != cert.serial_number
    # The old certificate stays revoked.
    assert_crl_lists(server, cert.serial_number, reason=x509.ReasonFlags.key_compromise)


def test_revoke_input_errors_exit_2(server: ServerProcess) -> None:
    done = hatchway("device", "revoke", "nobody", "--reason", "x", "--json", server=server)
    assert done.returncode == 2 and "no device" in json.loads(done.stdout)["error"]
    ok_json(hatchway("device", "provision", "meter-009", "--json", server=server))
    bad = hatchway(
        "device",
        "revoke",
        "meter-009",
        "--reason",
        "x",
        "--code",
        "certificateHold",
        server=server,
    )
    assert bad.returncode == 2 and "--code" in bad.stderr
