"""Fixtures for the secure-element end-to-end tests: real processes on loopback.

``hatchway serve`` runs as a subprocess (``ServerProcess``); the card is personalised
with ``hatchway se personalize`` against that server's data dir, so it trusts the
server's dev CA exactly as an operator's card would.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hatchway.server.process import ServerProcess
from tests.services import CHROMIUM, CHROMIUM_ARGS, require_chromium

from .harness import PhishingProxy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("se-server") / "data")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def card_file(tmp_path: Path, server: ServerProcess) -> Path:
    path = tmp_path / "card.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hatchway",
            "se",
            "personalize",
            "--card",
            str(path),
            "--data-dir",
            str(server.data_dir),
            "--json",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


@pytest.fixture
def tls(server: ServerProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


@pytest.fixture
def phishing(server: ServerProcess) -> Iterator[PhishingProxy]:
    with PhishingProxy(server.https_url, server.ca_file) as proxy:
        yield proxy


def spki_pin(server: ServerProcess) -> str:
    cert = x509.load_pem_x509_certificate((server.data_dir / "tls.pem").read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(server: ServerProcess) -> Iterator[object]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # The dev CA is not in Chromium's store: pin the server's SPKI instead of
        # turning certificate checks off.
        args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_pin(server)}"]
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield launched
        finally:
            launched.close()
