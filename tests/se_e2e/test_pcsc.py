"""The real PC/SC stack: pcscd + Debian's vsmartcard-vpcd + ``hatchway se emulate --vpcd``.

pyscard (libpcsclite) lists the vpcd reader with the emulated card in it, and an
SCP11a channel (GP Amendment F) opens through pcscd with the same host code the server
uses; then the whole web flow runs through ``hatchway se bridge --pcsc``.
Skips without pcscd/vpcd locally, fails when CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from hatchway.runtime import system_clock, system_random
from hatchway.se import (
    HATCHWAY_AID,
    AppletIns,
    CommandApdu,
    KeyRef,
    ResponseApdu,
    Scp11Host,
    Scp11Variant,
    get_certificate_store_command,
    parse_certificate_store,
    transceive,
)
from hatchway.se.bridge import set_origin_apdu
from hatchway.server.process import ServerProcess, free_port
from tests.services import require, require_program

from .harness import Pcscd, card_secret

pytestmark = [pytest.mark.e2e, pytest.mark.pcscd]

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")


@pytest.fixture
def pcscd(tmp_path: Path) -> Iterator[Pcscd]:
    program = require_program("pcscd")
    require(VPCD_DRIVER.exists(), "vsmartcard-vpcd")
    require(importlib.util.find_spec("smartcard") is not None, "pyscard (pip install '.[pcsc]')")
    daemon = Pcscd(program, tmp_path, free_port()).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def emulator(pcscd: Pcscd, card_file: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    log = (tmp_path / "emulate.log").open("a")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hatchway",
            "se",
            "emulate",
            "--card",
            str(card_file),
            "--vpcd",
            f"127.0.0.1:{pcscd.port}",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        assert proc.stdout is not None
        proc.stdout.close()


def wait_for_reader(timeout: float = 45.0) -> str:
    from smartcard.System import readers

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for reader in readers():
            if "Virtual PCD" in str(reader):
                try:
                    connection = reader.createConnection()
                    connection.connect()
                    connection.disconnect()
                    return str(reader)
                except Exception:  # noqa: S110 - the card is not inserted yet; poll
                    pass
        time.sleep(0.2)
    raise TimeoutError("pyscard never saw the emulated card in the vpcd reader")


def test_pyscard_sees_the_card_and_opens_scp11(
    server: ServerProcess, emulator: subprocess.Popen[str]
) -> None:
    from hatchway.flows.sechannel import ensure_application_identity
    from hatchway.se.pcsc import PcscTransport, list_readers
    from hatchway.server.datadir import ensure_data_dir

    name = wait_for_reader()
    assert name in list_readers()
    card = PcscTransport(name)
    try:
        assert card.atr.startswith(b"\x3b") and card.atr.endswith(b"hatchway" + card.atr[-1:])
        identity = ensure_data_dir(server.data_dir)
        app = ensure_application_identity(
            server.data_dir,
            identity.ca,
            origin=server.https_url,
            tls_cert_path=identity.tls_cert_path,
            now=system_clock(),
        )
        ResponseApdu.parse(card.transmit(set_origin_apdu(server.https_url))).check()
        transceive(card.transmit, CommandApdu(0, 0xA4, 4, 0, HATCHWAY_AID)).check()
        store = transceive(card.transmit, get_certificate_store_command(KeyRef(0x11, 1)))
        certs = parse_certificate_store(store.check())
        host = Scp11Host(
            Scp11Variant.A,
            card_certificates=certs,
            random=system_random,
            now=system_clock(),
            trust_anchor=identity.ca.certificate,
            oce_chain=[app.certificate],
            oce_key=app.oce_key,
            short_apdus=True,
        )
        channel = host.run(card.transmit)
        cmd = CommandApdu(0x80, AppletIns.READ_COUNTER, 0, 0, le=256)
        counter = ResponseApdu.parse(channel.unwrap(card.transmit(channel.wrap(cmd.encode()))))
        assert counter.check() == bytes(4)
        assert isinstance(certs[-1], x509.Certificate)
    finally:
        card.close()


def test_web_flow_through_bridge_pcsc(
    server: ServerProcess, emulator: subprocess.Popen[str], card_file: Path, tmp_path: Path
) -> None:
    from hatchway.se.relay import PageClient

    reader = wait_for_reader()
    log = (tmp_path / "bridge.log").open("a")
    bridge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hatchway",
            "se",
            "bridge",
            "--pcsc",
            reader,
            "--allow-origin",
            server.https_url,
            "--port",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=dict(os.environ),
    )
    log.close()
    try:
        assert bridge.stdout is not None
        import json

        port = json.loads(bridge.stdout.readline())["port"]
        tls = ssl.create_default_context(cafile=str(server.ca_file))
        with PageClient(
            server.https_url, f"ws://127.0.0.1:{port}/", origin=server.https_url, verify=tls
        ) as page:
            result = page.run()
        assert result.ok, result.outcome
    finally:
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(15) == 0
        assert bridge.stdout is not None
        bridge.stdout.close()
    emulator.send_signal(signal.SIGTERM)
    assert emulator.wait(15) == 0
    secret = card_secret(card_file)
    assert secret is not None and len(secret) == 32
