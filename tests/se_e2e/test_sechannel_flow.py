"""The server's OCE side (``flows.sechannel``) driven in process against ``SoftCard``,
plus the web app's HTTP surface on a real server (CSP, MIME types, API errors)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from hatchway.flows.sechannel import (
    APP_CERT_FILE,
    Done,
    SecureChannelService,
    SessionRefused,
    Stage,
    Step,
    ensure_application_identity,
)
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.se import SoftCard, personalize
from hatchway.se.appcert import ORIGIN_BINDING_OID, OriginBinding, origin_identity
from hatchway.se.bridge import set_origin_apdu, transmit_whole
from hatchway.server.datadir import ServerIdentity, ensure_data_dir
from hatchway.server.process import ServerProcess

ORIGIN = "https://localhost:8443"


def _now() -> float:
    # Read when used, never at import: the server's CA is made when the test runs,
    # minutes after collection on a loaded machine, and a card whose clock was
    # frozen before that sees a CA not yet valid (issue 7: 6984 DATA_INVALID).
    return dt.datetime.now(dt.UTC).timestamp()


@pytest.fixture
def ident(tmp_path: Path) -> ServerIdentity:
    return ensure_data_dir(tmp_path / "data")


def make(
    tmp_path: Path, ident: ServerIdentity, origin: str = ORIGIN, clock: FrozenClock | None = None
) -> tuple[SecureChannelService, SoftCard, FrozenClock]:
    clock = clock or FrozenClock(_now())
    app = ensure_application_identity(
        tmp_path / "data", ident.ca, origin=ORIGIN, tls_cert_path=ident.tls_cert_path, now=clock()
    )
    service = SecureChannelService(app, clock=clock, random=SeededRandom(b"server"))
    state = personalize(
        ident.ca.certificate, ident.ca.private_key, now=clock(), random=SeededRandom(b"card")
    )
    card = SoftCard(state, clock=clock, random=SeededRandom(b"card-rng"))
    card.power_on()
    assert card.transmit(set_origin_apdu(origin))[-2:] == b"\x90\x00"
    return service, card, clock


def relay(card: SoftCard, step: Step) -> list[bytes]:
    return [transmit_whole(card, apdu) for apdu in step.apdus]


def test_claim_1_in_two_relays(tmp_path: Path, ident: ServerIdentity) -> None:
    service, card, _ = make(tmp_path, ident)
    step: Step | Done = service.start()
    relays, sizes = 0, []
    while isinstance(step, Step):
        sizes.append(len(step.apdus))
        step = service.advance(step.session, step.stage, relay(card, step))
        relays += 1
    # SELECT + GET DATA + 2 chained PSO links + MUTUAL AUTHENTICATE; STORE + READ.
    assert sizes == [5, 2] and step.apdus == 7
    assert relays == 2 and step.round_trips == 3 and step.secret_length == 32
    assert card.state.secret is not None and service.provisioned == {card.state.serial: 1}
    assert service.open_sessions == 0


def test_phishing_origin_is_refused_by_the_card(tmp_path: Path, ident: ServerIdentity) -> None:
    service, card, _ = make(tmp_path, ident, origin="https://evil.example")
    step = service.start()
    with pytest.raises(SessionRefused) as refused:
        service.advance(step.session, Stage.HANDSHAKE, relay(card, step))
    assert refused.value.sw == 0x6A88 and refused.value.code == "se_refused"
    assert card.state.secret is None and service.open_sessions == 0


def test_sessions_refuse_out_of_order_unknown_and_expired(
    tmp_path: Path, ident: ServerIdentity
) -> None:
    service, card, clock = make(tmp_path, ident)
    step = service.start()
    with pytest.raises(SessionRefused, match="not allowed"):
        service.advance(step.session, Stage.JOB, relay(card, step))
    with pytest.raises(SessionRefused, match="no such session"):
        service.advance("guess", Stage.HANDSHAKE, [])
    with pytest.raises(SessionRefused, match="one response per APDU"):
        service.advance(step.session, Stage.HANDSHAKE, [b"\x90\x00"])
    step = service.start()
    clock.advance(121)
    with pytest.raises(SessionRefused, match="no such session"):
        service.advance(step.session, Stage.HANDSHAKE, relay(card, step))


def test_application_certificate_follows_origin_and_tls_key(
    tmp_path: Path, ident: ServerIdentity
) -> None:
    data, now = tmp_path / "data", _now()
    first = ensure_application_identity(
        data, ident.ca, origin=ORIGIN, tls_cert_path=ident.tls_cert_path, now=now
    )
    again = ensure_application_identity(
        data, ident.ca, origin=ORIGIN, tls_cert_path=ident.tls_cert_path, now=now
    )
    assert again.certificate == first.certificate
    moved = ensure_application_identity(
        data, ident.ca, origin="https://se.example", tls_cert_path=ident.tls_cert_path, now=now
    )
    assert moved.certificate != first.certificate
    ext = moved.certificate.extensions.get_extension_for_oid(ORIGIN_BINDING_OID).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    binding = OriginBinding.decode(ext.value)
    assert binding.origin_digest == origin_identity("https://se.example")
    assert binding.tls_spki_digest is not None
    late = ensure_application_identity(
        data,
        ident.ca,
        origin="https://se.example",
        tls_cert_path=ident.tls_cert_path,
        now=now + 86 * 86400,
    )
    assert late.certificate != moved.certificate
    assert (data / APP_CERT_FILE).stat().st_mode & 0o777 == 0o644


@pytest.mark.e2e
def test_web_app_is_served_under_a_strict_csp(server: ServerProcess) -> None:
    tls = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(base_url=server.https_url, verify=tls) as http:
        page = http.get("/se/")
        assert page.status_code == 200 and 'src="app.js"' in page.text
        assert "<script>" not in page.text
        csp = page.headers["content-security-policy"]
        assert csp == (
            "default-src 'self'; connect-src 'self' ws://127.0.0.1:*; frame-ancestors 'none'"
        )
        script = http.get("/se/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.headers["x-content-type-options"] == "nosniff"
        cert = http.get("/se/api/certificate").json()
        assert cert["origin"] == server.https_url
        assert cert["certificate"].startswith("-----BEGIN CERTIFICATE-----")
        same = {"Origin": server.https_url}
        assert http.post("/se/api/job", json={"session": "x"}, headers=same).status_code == 400
        missing = http.post("/se/api/job", json={"session": "x", "responses": []}, headers=same)
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_session"
