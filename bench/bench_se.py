"""Secure-element benchmark: SCP03 secure-messaging overhead and the SCP11 handshake.

Run: ``.venv/bin/python bench/bench_se.py``. Everything is in-process (the emulator's
``transmit``), so the numbers are CPU cost without transport latency; ratios are
measured in the same run and printed next to the absolute values.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.se import (
    HATCHWAY_AID,
    AppletIns,
    CardStateFile,
    CommandApdu,
    Scp11Host,
    Scp11Variant,
    SoftCard,
    get_certificate_store_command,
    issue_application_certificate,
    parse_certificate_store,
    personalize,
    transceive,
)
from hatchway.se.apdu import ResponseApdu
from hatchway.se.kdf import SessionKeys
from hatchway.se.scp11_host import KeyRef
from hatchway.se.securemsg import CardSecureChannel, SecureChannel

ORIGIN = "https://localhost:8443"
# A fixed instant: the CA, the card and the host all take the time injected.
# (Never read the clock at import; tests/test_no_wall_clock_at_import.py.)
NOW = 1_700_000_000.0
ROUNDS = 2000


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median µs per call over 5 batches."""
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        samples.append((time.perf_counter() - start) / rounds * 1e6)
    return statistics.median(samples)


def make_world(tmp: Path) -> tuple[SoftCard, Scp11Host, Callable[[], Scp11Host]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    start = dt.datetime.fromtimestamp(NOW, dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(start - dt.timedelta(days=1))
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    oce_key = ec.generate_private_key(ec.SECP256R1())
    oce = issue_application_certificate(
        ca, ca_key, oce_key.public_key(), origin=ORIGIN, tls_spki_sha256=None, now=NOW, valid_days=1
    )
    storage = CardStateFile(tmp / "card.json")
    storage.save(personalize(ca, ca_key, now=NOW, random=SeededRandom(b"bench")))
    card = SoftCard.from_file(storage.path, clock=FrozenClock(NOW), random=SeededRandom(b"c"))
    card.power_on()
    store = parse_certificate_store(
        transceive(card.transmit, get_certificate_store_command(KeyRef(0x11, 1))).check()
    )
    counter = iter(range(10**9))

    def new_host() -> Scp11Host:
        return Scp11Host(
            Scp11Variant.A,
            card_certificates=store,
            trust_anchor=ca,
            oce_chain=[oce],
            oce_key=oce_key,
            now=NOW,
            random=SeededRandom(next(counter).to_bytes(8, "big")),
        )

    return card, new_host(), new_host


def bench_secure_messaging() -> None:
    keys = SessionKeys(b"\x01" * 16, b"\x02" * 16, b"\x03" * 16)
    print("secure messaging per APDU (host wrap + card unwrap + card wrap + host unwrap)")
    print(
        f"{'payload':>8} {'plain µs':>9} {'SM µs':>8} {'×':>6} {'plain B':>8} {'SM B':>6} {'+B':>5}"
    )
    for size in (0, 16, 64, 200, 1024):
        _sm_row(keys, size)


def _sm_row(keys: SessionKeys, size: int) -> None:
    data = bytes(size)
    command = CommandApdu(0x80, AppletIns.STORE_SECRET, 0, 0, data)
    answer = ResponseApdu(data, 0x9000)
    host = SecureChannel(keys)
    card = CardSecureChannel(keys, bytes(16), oce_authenticated=True)

    def plain() -> None:
        CommandApdu.parse(command.encode())
        ResponseApdu.parse(answer.encode())

    def protected() -> None:
        wrapped = host.wrap(command.encode())
        card.unwrap_command(CommandApdu.parse(wrapped))
        host.unwrap(card.wrap_response(answer).encode())

    t_plain, t_sm = timed(plain, ROUNDS), timed(protected, ROUNDS // 4)
    plain_bytes = len(command.encode()) + len(answer.encode())
    h2, c2 = SecureChannel(keys), CardSecureChannel(keys, bytes(16), oce_authenticated=True)
    wrapped = h2.wrap(command.encode())
    c2.unwrap_command(CommandApdu.parse(wrapped))
    sm_bytes = len(wrapped) + len(c2.wrap_response(answer).encode())
    print(
        f"{size:>8} {t_plain:>9.1f} {t_sm:>8.1f} {t_sm / t_plain:>6.1f} "
        f"{plain_bytes:>8} {sm_bytes:>6} {sm_bytes - plain_bytes:>5}"
    )


def bench_handshake() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        card, _, new_host = make_world(Path(tmp))
        card.set_origin(ORIGIN)
        transceive(card.transmit, CommandApdu(0, 0xA4, 4, 0, HATCHWAY_AID)).check()
        apdus = 0

        def handshake() -> None:
            nonlocal apdus
            host = new_host()
            commands = host.handshake_commands()
            apdus = len(commands)
            host.receive_responses([card.transmit(c) for c in commands])

        t_handshake = timed(handshake, 20)
        channel = new_host().run(card.transmit)
        read = CommandApdu(0x80, AppletIns.READ_COUNTER, 0, 0).encode()

        def job() -> None:
            channel.unwrap(card.transmit(channel.wrap(read)))

        t_job = timed(job, 500)
        print(
            f"\nfull SCP11a handshake in-process: {t_handshake / 1000:.2f} ms, "
            f"{apdus} APDUs in 1 batched round trip (the server's flow also puts SELECT "
            f"and GET DATA BF21 in that batch)"
        )
        print(
            f"one protected applet command through the emulator: {t_job:.1f} µs "
            f"(handshake = {t_handshake / t_job:.0f}× one command)"
        )


if __name__ == "__main__":
    bench_secure_messaging()
    bench_handshake()
