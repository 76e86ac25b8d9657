"""Secure-element channel through a web app: the server (OCE) side of US 10,812,467 B2.

Claim 1 step by step, as this module runs it:

1. the browser has loaded the web app over HTTPS (``server/se_routes.py``);
2. the server sends its *application certificate* — the GP Amendment F §6.4 OCE
   certificate for its ECKA key, issued by hatchway's CA and carrying SHA-256 of
   the server's origin (RFC 6454) and of its TLS SPKI — inside PERFORM SECURITY
   OPERATION (``ensure_application_identity`` keeps it current in the data dir);
3. the SE gets it, and the origin, from the bridge (SET ORIGIN, WebSocket Origin);
4. the SE checks chain, validity, key usage and the origin digest;
5. SCP11a (Amendment F §3.1.2) mutual authentication with ephemeral keys, then an
   SCP03 secure channel through which the server provisions a secret and reads it
   back. The page relays only ciphertext.

The OCE side is the sans-I/O ``Scp11Host``; this module adds one web session per
handshake — in memory, unguessable id, short expiry — and a transition table
(STYLE.md §2). Two relays in all: SELECT + GET DATA ``BF21`` + PERFORM SECURITY
OPERATION + MUTUAL AUTHENTICATE as one batch (the host checks the card's
certificate and receipt when the answers come back), then STORE SECRET and READ
SECRET wrapped together (SCP03's MAC chain advances only on commands).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.login.ratelimit import KeyedLimiter, TokenBucket
from hatchway.pki import CertificateAuthority
from hatchway.pki.files import write_private, write_public
from hatchway.runtime import Clock, Random
from hatchway.se import (
    HATCHWAY_AID,
    ApduError,
    AppletIns,
    ChannelClosed,
    CommandApdu,
    MalformedApdu,
    ResponseApdu,
    Scp11Host,
    Scp11Variant,
    SecureChannel,
    issue_application_certificate,
    origin_identity,
    serialize_origin,
    spki_identity,
)
from hatchway.se.appcert import OriginBinding, origin_binding_of
from hatchway.se.certprofile import OCE_ECKA_EKU, UntrustedCard
from hatchway.se.constants import CLA, INS, SW, sw_name

log = logging.getLogger("hatchway.sechannel")

OCE_KEY_FILE = "se-oce.key"
APP_CERT_FILE = "se-app.pem"
APP_CERT_DAYS = 90
#: Renew the application certificate at startup when it has less than this left.
RENEW_BEFORE = dt.timedelta(days=7)
SESSION_TTL = 120.0
MAX_SESSIONS = 1024
#: Open sessions per client address; a finished or failed session frees its slot.
MAX_SESSIONS_PER_CLIENT = 8
#: Session starts per client address: a burst of 20, then one a second.
START_RATE = TokenBucket(capacity=20, refill_per_second=1.0)
SECRET_LENGTH = 32
#: SD key version the personalised card uses (``hatchway.se.personalize``).
SD_KVN = 1


@dataclass(frozen=True, slots=True)
class ApplicationIdentity:
    """The server's OCE key and its origin-bound application certificate."""

    origin: str
    oce_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    ca_certificate: x509.Certificate

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def ensure_application_identity(
    data_dir: Path, ca: CertificateAuthority, *, origin: str, tls_cert_path: Path, now: float
) -> ApplicationIdentity:
    """Load the OCE key and certificate, (re)issuing the certificate when it no longer
    matches this CA, origin, TLS key or profile, or is about to expire."""
    origin = serialize_origin(origin)
    key_path, cert_path = data_dir / OCE_KEY_FILE, data_dir / APP_CERT_FILE
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    tls_spki = spki_identity(x509.load_pem_x509_certificate(tls_cert_path.read_bytes()))
    cert = None
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if not _still_good(cert, key, ca, OriginBinding(origin_identity(origin), tls_spki), now):
            cert = None
    if cert is None:
        cert = issue_application_certificate(
            ca.certificate, ca.private_key, key.public_key(), origin=origin,
            tls_spki_sha256=tls_spki, now=now, valid_days=APP_CERT_DAYS)
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        log.info("issued the SE application certificate", extra={"origin": origin})
    return ApplicationIdentity(origin, key, cert, ca.certificate)


def _still_good(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                ca: CertificateAuthority, binding: OriginBinding, now: float) -> bool:
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        cert.verify_directly_issued_by(ca.certificate)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        current = origin_binding_of(cert)
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return (
        cert.public_key() == key.public_key()
        and OCE_ECKA_EKU in eku
        and current == binding
        and cert.not_valid_after_utc - RENEW_BEFORE > when
    )


class Stage(Enum):
    """Where a web session is; the page posts to ``/se/api/<stage>``."""

    HANDSHAKE = "handshake"
    JOB = "job"


class SessionState(Enum):
    HANDSHAKE = "handshake"
    JOB = "job"
    DONE = "done"


# One table of legal moves (STYLE.md §2): (state, stage the page posted to) → next.
_TRANSITIONS: dict[tuple[SessionState, Stage], SessionState] = {
    (SessionState.HANDSHAKE, Stage.HANDSHAKE): SessionState.JOB,
    (SessionState.JOB, Stage.JOB): SessionState.DONE,
}


class SessionRefused(HatchwayError):
    """A web session step failed; ``code`` is the public error, ``sw`` the card's word."""

    def __init__(
        self,
        code: str,
        description: str,
        *,
        status: int = 400,
        sw: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.status_hint = status
        self.sw = sw
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Step:
    """APDUs for the page to relay, and where to post the card's answers."""

    session: str
    apdus: tuple[bytes, ...]
    stage: Stage


@dataclass(frozen=True, slots=True)
class Done:
    session: str
    card_serial: str
    secret_length: int
    round_trips: int
    apdus: int


@dataclass(slots=True)
class _Session:
    expires: float
    client: str
    host: Scp11Host
    state: SessionState = SessionState.HANDSHAKE
    channel: SecureChannel | None = None
    card_serial: str = ""
    secret: bytes = b""
    sent: tuple[bytes, ...] = ()
    #: page↔server round trips so far; ``start`` is the first.
    round_trips: int = 1
    apdus: int = 0


class SecureChannelService:
    """Runs handshakes and the provisioning job for web sessions (thread-safe).

    ``start`` is unauthenticated, so it is rationed per client address: a token
    bucket (``start_rate``) and at most ``max_per_client`` open sessions each, on top
    of the global ``max_sessions``; expired sessions are evicted before any refusal.
    """

    def __init__(
        self,
        identity: ApplicationIdentity,
        *,
        clock: Clock,
        random: Random,
        ttl: float = SESSION_TTL,
        max_sessions: int = MAX_SESSIONS,
        max_per_client: int = MAX_SESSIONS_PER_CLIENT,
        start_rate: TokenBucket = START_RATE,
    ) -> None:
        self.identity = identity
        self._clock = clock
        self._random = random
        self._ttl = ttl
        self._max = max_sessions
        self._max_per_client = max_per_client
        self._limiter = KeyedLimiter(start_rate)
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        #: Card serial → how many secrets the server has provisioned into it.
        self.provisioned: dict[str, int] = {}

    def start(self, client: str = "") -> Step:
        """A new web session: select the applet, read the card's certificate and run
        the whole SCP11a handshake, all in one batch."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            allowance = self._limiter.hit(f"ip:{client}", now)
            if not allowance.allowed:
                raise SessionRefused("slow_down", "too many sessions started from here",
                                     status=429, retry_after=allowance.retry_after)
            if sum(1 for s in self._sessions.values() if s.client == client) >= (
                self._max_per_client
            ):
                raise SessionRefused("busy", "too many open sessions from here", status=429,
                                     retry_after=int(self._ttl))
            if len(self._sessions) >= self._max:
                raise SessionRefused("busy", "too many open sessions", status=503)
            sid = base64.urlsafe_b64encode(self._random(32)).rstrip(b"=").decode()
            host = Scp11Host(
                Scp11Variant.A,
                trust_anchor=self.identity.ca_certificate,
                random=self._random,
                now=now,
                oce_chain=[self.identity.certificate],
                oce_key=self.identity.oce_key,
                sd_kvn=SD_KVN,
                short_apdus=True,
            )
            select = CommandApdu(0x00, INS.SELECT, 0x04, 0x00, HATCHWAY_AID, le=256).encode()
            apdus = (select, *host.handshake_commands())
            self._sessions[sid] = _Session(now + self._ttl, client, host, sent=apdus)
        return Step(sid, apdus, Stage.HANDSHAKE)

    def advance(self, session_id: str, stage: Stage, responses: Sequence[bytes]) -> Step | Done:
        """The card's answers to the last step → the next step, or the job's outcome."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(session_id)
            if session is None:
                raise SessionRefused("unknown_session", "no such session (expired?)", status=404)
            nxt = _TRANSITIONS.get((session.state, stage))
            if nxt is None:
                raise SessionRefused("out_of_order", f"{stage.value} not allowed now", status=409)
            if len(responses) != len(session.sent):
                self._sessions.pop(session_id, None)
                raise SessionRefused("bad_request", "one response per APDU is required")
            try:
                parsed = [_parse(r) for r in responses]
                if nxt is SessionState.JOB:
                    result: Step | Done = self._open(session, session_id, parsed)
                else:
                    result = self._finish_job(session, session_id, parsed)
            except BaseException:
                # A failed step ends the session for good: no retry on a half-open host.
                self._sessions.pop(session_id, None)
                raise
            session.state = nxt
            session.round_trips += 1
            session.apdus += len(session.sent)
            if isinstance(result, Step):
                session.sent = result.apdus
                return result
            self._sessions.pop(session_id, None)
            return Done(session_id, session.card_serial, len(session.secret),
                        session.round_trips, session.apdus)

    def _open(self, session: _Session, sid: str, parsed: list[ResponseApdu]) -> Step:
        if parsed[0].sw != SW.OK:
            sw = parsed[0].sw
            raise SessionRefused("card_refused", f"SELECT applet: {sw_name(sw)}", sw=sw)
        try:
            channel = session.host.receive_responses([r.encode() for r in parsed[1:]])
        except UntrustedCard:
            raise SessionRefused(
                "untrusted_card",
                "the card's certificate is not a secure-element certificate from this "
                "server's CA",
                status=403,
            ) from None
        except ApduError as exc:
            raise SessionRefused(
                "se_refused",
                f"the secure element refused the application certificate: {sw_name(exc.sw)}",
                status=403,
                sw=exc.sw,
            ) from None
        except (InvalidMessage, MalformedApdu):
            raise SessionRefused(
                "handshake_failed", "the card's handshake answer did not verify", status=403
            ) from None
        session.channel = channel
        session.card_serial = _serial(session.host.card_certificates[-1])
        session.secret = self._random(SECRET_LENGTH)
        # The C-MAC chain advances only on commands, so both job commands are wrapped
        # now and travel in one batch; each response is checked in order against its
        # own command's chaining value (``SecureChannel``).
        store = CommandApdu(CLA.PROPRIETARY, AppletIns.STORE_SECRET, 0, 0, session.secret)
        read = CommandApdu(CLA.PROPRIETARY, AppletIns.READ_SECRET, 0, 0, le=256)
        return Step(sid, (channel.wrap(store.encode()), channel.wrap(read.encode())), Stage.JOB)

    def _finish_job(self, session: _Session, sid: str, parsed: list[ResponseApdu]) -> Done:
        stored = _check_job(self._unwrap(session, parsed[0]), "STORE SECRET")
        secret = _check_job(self._unwrap(session, parsed[1]), "READ SECRET")
        if stored or not hmac.compare_digest(secret, session.secret):
            raise SessionRefused("job_failed", "the card returned a different secret", status=502)
        self.provisioned[session.card_serial] = self.provisioned.get(session.card_serial, 0) + 1
        log.info("secret provisioned through SCP11a", extra={"card": session.card_serial})
        return Done(sid, session.card_serial, len(session.secret), 0, 0)

    def _unwrap(self, session: _Session, resp: ResponseApdu) -> ResponseApdu:
        assert session.channel is not None  # noqa: S101 - set when the channel opened
        try:
            return ResponseApdu.parse(session.channel.unwrap(resp.encode()))
        except (InvalidMessage, ChannelClosed):
            raise SessionRefused(
                "channel_failed",
                "a response failed its R-MAC check; the channel is closed",
                status=502,
            ) from None

    def _expire(self, now: float) -> None:
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            del self._sessions[sid]

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)


def _parse(raw: bytes) -> ResponseApdu:
    try:
        return ResponseApdu.parse(raw)
    except MalformedApdu:
        raise SessionRefused("bad_request", "a response APDU is malformed") from None


def _check_job(resp: ResponseApdu, what: str) -> bytes:
    if resp.sw != SW.OK:
        raise SessionRefused("job_failed", f"{what}: {sw_name(resp.sw)}", status=502, sw=resp.sw)
    return resp.data


def _serial(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.SERIAL_NUMBER)
    return str(attrs[0].value) if attrs else cert.serial_number.to_bytes(20, "big").hex()


__all__ = [
    "ApplicationIdentity",
    "Done",
    "SecureChannelService",
    "SessionRefused",
    "Stage",
    "Step",
    "ensure_application_identity",
]
