"""Shared by the revocation end-to-end tests (HTTP here, MQTT in tests/mqtt): the CLI as
a real process, and the CRL as a relying party fetches it (from the metadata's URL)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from hatchway.server.process import ServerProcess

METADATA = "/.well-known/oauth-authorization-server"
EXIT_REVOKED = 3


def hatchway(
    *args: str, server: ServerProcess, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``hatchway ARGS`` as its own process, on the server's data dir."""
    full_env = {
        **os.environ,
        "HATCHWAY_DATA_DIR": str(server.data_dir),
        "HATCHWAY_CA_FILE": str(server.ca_file),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "hatchway", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def ok_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def fetch_crl(server: ServerProcess) -> tuple[x509.CertificateRevocationList, str]:
    """The CRL at the URL the server's RFC 8414 metadata names, and that URL."""
    tls = ssl.create_default_context(cafile=str(server.ca_file))
    meta = httpx.get(server.https_url + METADATA, verify=tls, timeout=10).json()
    uri = str(meta["hatchway_crl_uri"])
    response = httpx.get(uri, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-crl"
    # The HTTPS listener serves the same CRL.
    assert httpx.get(server.https_url + "/pki/crl", verify=tls, timeout=10).content == (
        response.content
    )
    return x509.load_der_x509_crl(response.content), uri


def assert_crl_lists(server: ServerProcess, serial: int, *, reason: x509.ReasonFlags) -> None:
    crl, _ = fetch_crl(server)
    ca = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.subject
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None, f"serial {serial:x} not on the CRL"
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is reason


def certificate_of(state: Path) -> x509.Certificate:
    pem = json.loads(state.read_text())["device_certificate"]
    return x509.load_pem_x509_certificate(pem.encode())
