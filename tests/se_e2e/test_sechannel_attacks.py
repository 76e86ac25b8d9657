"""Attacks on the server's side of the SE channel, each as an attacker would run it.

* S1: an enrolled device owner (or anyone holding a key certified by hatchway's CA
  for another purpose) runs the stock emulator re-keyed with that certificate and
  poses as a secure element, to receive the provisioned secret;
* S2: a client floods ``/se/api/start``; a cross-site page makes visitors' browsers
  post to the API;
* a relay that reorders the job's answers;
* a public HTTPS URL with a path (the server used to refuse to start).
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway.config import Settings
from hatchway.flows.sechannel import (
    SecureChannelService,
    SessionRefused,
    Stage,
    Step,
    ensure_application_identity,
)
from hatchway.login.ratelimit import TokenBucket
from hatchway.runtime import FrozenClock, SeededRandom, system_random
from hatchway.se import SoftCard, personalize
from hatchway.se.bridge import set_origin_apdu, transmit_whole
from hatchway.se.certprofile import KEY_AGREEMENT_ONLY, SE_ECKA_EKU
from hatchway.server.context import ServerContext
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


def service_for(
    tmp_path: Path, ident: ServerIdentity, clock: FrozenClock, **kwargs: object
) -> SecureChannelService:
    app = ensure_application_identity(
        tmp_path / "data", ident.ca, origin=ORIGIN, tls_cert_path=ident.tls_cert_path, now=clock()
    )
    return SecureChannelService(app, clock=clock, random=SeededRandom(b"server"), **kwargs)  # type: ignore[arg-type]


def fake_card(
    ident: ServerIdentity,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    clock: FrozenClock,
) -> SoftCard:
    """The stock emulator, re-keyed by its owner with a key and certificate they hold."""
    genuine = personalize(
        ident.ca.certificate, ident.ca.private_key, now=clock(), random=SeededRandom(b"card")
    )
    card = SoftCard(
        replace(genuine, sd_key=key, sd_certificate=cert),
        clock=clock,
        random=SeededRandom(b"card-rng"),
    )
    card.power_on()
    assert card.transmit(set_origin_apdu(ORIGIN))[-2:] == b"\x90\x00"
    return card


def run_flow(service: SecureChannelService, card: SoftCard) -> None:
    step = service.start("203.0.113.7")
    while isinstance(step, Step):
        step = service.advance(
            step.session, step.stage, [transmit_whole(card, a) for a in step.apdus]
        )


def ca_issued(
    ident: ServerIdentity,
    key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.KeyUsage,
    eku: list[x509.ObjectIdentifier] | None,
    ca: bool = False,
) -> x509.Certificate:
    start = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .issuer_name(ident.ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ident.ca.private_key, hashes.SHA256())


def _device(ident: ServerIdentity, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return ident.ca.issue_device("my-device", key.public_key(), now=dt.datetime.now(dt.UTC))


def _tls(ident: ServerIdentity, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return ident.ca.issue_tls_server(
        key.public_key(), dns_names=["localhost"], ip_addresses=[], now=dt.datetime.now(dt.UTC)
    )


def _agreement_no_eku(ident: ServerIdentity, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return ca_issued(ident, key, usage=KEY_AGREEMENT_ONLY, eku=None)


def _se_eku_signing(ident: ServerIdentity, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    both = x509.KeyUsage(True, False, False, False, True, False, False, False, False)
    return ca_issued(ident, key, usage=both, eku=[SE_ECKA_EKU])


def _se_eku_ca(ident: ServerIdentity, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return ca_issued(ident, key, usage=KEY_AGREEMENT_ONLY, eku=[SE_ECKA_EKU], ca=True)


@pytest.mark.parametrize("issue", [_device, _tls, _agreement_no_eku, _se_eku_signing, _se_eku_ca])
def test_a_ca_certificate_of_another_profile_cannot_pose_as_a_card(
    tmp_path: Path, ident: ServerIdentity, issue: object
) -> None:
    clock = FrozenClock(_now())
    service = service_for(tmp_path, ident, clock)
    key = ec.generate_private_key(ec.SECP256R1())
    card = fake_card(ident, key, issue(ident, key), clock)  # type: ignore[operator]
    with pytest.raises(SessionRefused) as refused:
        run_flow(service, card)
    assert refused.value.code == "untrusted_card" and refused.value.status_hint == 403
    assert card.state.secret is None and service.provisioned == {}
    assert service.open_sessions == 0


def test_the_servers_own_oce_certificate_cannot_pose_as_a_card(
    tmp_path: Path, ident: ServerIdentity
) -> None:
    clock = FrozenClock(_now())
    service = service_for(tmp_path, ident, clock)
    app = service.identity
    card = fake_card(ident, app.oce_key, app.certificate, clock)
    with pytest.raises(SessionRefused, match="not a secure-element certificate"):
        run_flow(service, card)
    assert card.state.secret is None


def test_flooding_start_from_one_address_leaves_others_served(
    tmp_path: Path, ident: ServerIdentity
) -> None:
    clock = FrozenClock(_now())
    service = service_for(
        tmp_path,
        ident,
        clock,
        max_sessions=16,
        max_per_client=4,
        start_rate=TokenBucket(capacity=6, refill_per_second=0.5),
    )
    attacker = "198.51.100.9"
    for _ in range(4):
        service.start(attacker)
    with pytest.raises(SessionRefused) as capped:
        service.start(attacker)
    assert capped.value.status_hint == 429 and capped.value.retry_after
    for _ in range(2):  # the bucket runs dry even while the cap refuses
        with pytest.raises(SessionRefused):
            service.start(attacker)
    with pytest.raises(SessionRefused) as limited:
        service.start(attacker)
    assert limited.value.code == "slow_down" and limited.value.retry_after == 2
    assert isinstance(service.start("203.0.113.7"), Step)  # a real user still gets in
    assert service.open_sessions == 5


def test_expired_sessions_are_evicted_before_anyone_is_refused(
    tmp_path: Path, ident: ServerIdentity
) -> None:
    clock = FrozenClock(_now())
    service = service_for(tmp_path, ident, clock, max_sessions=3, max_per_client=3)
    for client in ("a", "b", "c"):
        service.start(client)
    with pytest.raises(SessionRefused) as full:
        service.start("d")
    assert full.value.status_hint == 503
    clock.advance(120)
    assert isinstance(service.start("d"), Step) and service.open_sessions == 1


def test_a_relay_that_swaps_the_job_answers_gets_nothing(
    tmp_path: Path, ident: ServerIdentity
) -> None:
    clock = FrozenClock(_now())
    service = service_for(tmp_path, ident, clock)
    card = fake_card(ident, *_genuine(ident, clock), clock)
    step = service.start()
    job = service.advance(
        step.session, Stage.HANDSHAKE, [transmit_whole(card, a) for a in step.apdus]
    )
    assert isinstance(job, Step) and len(job.apdus) == 2
    answers = [transmit_whole(card, a) for a in job.apdus]
    with pytest.raises(SessionRefused) as refused:
        service.advance(step.session, Stage.JOB, answers[::-1])
    assert refused.value.code == "channel_failed" and service.provisioned == {}


def _genuine(
    ident: ServerIdentity, clock: FrozenClock
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    state = personalize(
        ident.ca.certificate, ident.ca.private_key, now=clock(), random=SeededRandom(b"genuine")
    )
    return state.sd_key, state.sd_certificate


def test_public_url_with_a_path_starts_and_binds_its_origin(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", public_https_url="https://se.example:8443/hatchway/"
    )
    ctx = ServerContext.create(settings, clock=FrozenClock(_now()), random=system_random)
    try:
        assert ctx.sechannel is not None
        assert ctx.sechannel.identity.origin == "https://se.example:8443"
    finally:
        ctx.close()


@pytest.mark.e2e
def test_api_takes_same_origin_json_only(server: ServerProcess) -> None:
    tls = ssl.create_default_context(cafile=str(server.ca_file))
    form = {"content-type": "application/x-www-form-urlencoded", "origin": server.https_url}
    with httpx.Client(base_url=server.https_url, verify=tls) as http:
        for path in ("/se/api/start", "/se/api/handshake", "/se/api/job"):
            # A cross-site <form> can post only "simple" content types...
            assert http.post(path, content=b"{}", headers=form).status_code == 415
            # ...and fetch() from another origin carries that origin.
            for origin in ("https://evil.example", "null", server.https_url + ".evil"):
                refused = http.post(path, json={}, headers={"origin": origin})
                assert refused.status_code == 403, origin
            assert http.post(path, json={}).status_code == 403  # no Origin at all
        ok = http.post("/se/api/start", json={}, headers={"origin": server.https_url})
        assert ok.status_code == 200 and len(ok.json()["apdus"]) == 5
