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
(STYLE.md §2). Round trips page↔server: card info (SELECT + GET DATA ``BF21``),
the whole handshake as one batch, then one per job APDU (SCP03 chains each
command's MAC to the previous one, and ``SecureChannel`` unwraps each response
before it wraps the next command).
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
from hatchway.pki import CertificateAuthority
from hatchway.pki.files import write_private, write_public
from hatchway.runtime import Clock, Random
from hatchway.se import (
    HATCHWAY_AID,
    ApduError,
    AppletIns,
    CommandApdu,
    KeyRef,
    MalformedApdu,
    MalformedTlv,
    ResponseApdu,
    Scp11Host,
    Scp11Variant,
    SecureChannel,
    get_certificate_store_command,
    issue_application_certificate,
    origin_identity,
    parse_certificate_store,
    spki_identity,
)
from hatchway.se.appcert import ORIGIN_BINDING_OID, OriginBinding
from hatchway.se.constants import CLA, INS, SW, sw_name

log = logging.getLogger("hatchway.sechannel")

OCE_KEY_FILE = "se-oce.key"
APP_CERT_FILE = "se-app.pem"
APP_CERT_DAYS = 90
#: Renew the application certificate at startup when it has less than this left.
RENEW_BEFORE = dt.timedelta(days=7)
SESSION_TTL = 120.0
MAX_SESSIONS = 1024
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
    matches this CA, origin or TLS key, or is about to expire."""
    key_path, cert_path = data_dir / OCE_KEY_FILE, data_dir / APP_CERT_FILE
    if key_path.exists():
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        key = loaded
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    tls_spki = spki_identity(x509.load_pem_x509_certificate(tls_cert_path.read_bytes()))
    cert = None
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if not _still_good(cert, key, ca, origin_identity(origin), tls_spki, now):
            cert = None
    if cert is None:
        cert = issue_application_certificate(
            ca.certificate,
            ca.private_key,
            key.public_key(),
            origin=origin,
            tls_spki_sha256=tls_spki,
            now=now,
            valid_days=APP_CERT_DAYS,
        )
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        log.info("issued the SE application certificate", extra={"origin": origin})
    return ApplicationIdentity(origin, key, cert, ca.certificate)


def _still_good(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca: CertificateAuthority,
    origin_digest: bytes,
    tls_spki: bytes,
    now: float,
) -> bool:
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        cert.verify_directly_issued_by(ca.certificate)
        ext = cert.extensions.get_extension_for_oid(ORIGIN_BINDING_OID).value
        if not isinstance(ext, x509.UnrecognizedExtension):
            return False
        binding = OriginBinding.decode(ext.value)
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return (
        cert.public_key() == key.public_key()
        and binding.origin_digest == origin_digest
        and binding.tls_spki_digest == tls_spki
        and cert.not_valid_after_utc - RENEW_BEFORE > when
    )


class Stage(Enum):
    """Where a web session is; the page posts to ``/se/api/<stage>``."""

    HANDSHAKE = "handshake"
    JOB = "job"


class SessionState(Enum):
    CARD_INFO = "card-info"
    HANDSHAKE = "handshake"
    STORE = "store"
    READ = "read"
    DONE = "done"


# One table of legal moves (STYLE.md §2): (state, stage the page posted to) → next.
_TRANSITIONS: dict[tuple[SessionState, Stage], SessionState] = {
    (SessionState.CARD_INFO, Stage.HANDSHAKE): SessionState.HANDSHAKE,
    (SessionState.HANDSHAKE, Stage.JOB): SessionState.STORE,
    (SessionState.STORE, Stage.JOB): SessionState.READ,
    (SessionState.READ, Stage.JOB): SessionState.DONE,
}


class SessionRefused(HatchwayError):
    """A web session step failed; ``code`` is the public error, ``sw`` the card's word."""

    def __init__(
        self, code: str, description: str, *, status: int = 400, sw: int | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.status_hint = status
        self.sw = sw


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
    state: SessionState = SessionState.CARD_INFO
    host: Scp11Host | None = None
    channel: SecureChannel | None = None
    card_serial: str = ""
    secret: bytes = b""
    sent: tuple[bytes, ...] = ()
    #: page↔server round trips so far; ``start`` is the first.
    round_trips: int = 1
    apdus: int = 0


class SecureChannelService:
    """Runs handshakes and the provisioning job for web sessions (thread-safe)."""

    def __init__(
        self,
        identity: ApplicationIdentity,
        *,
        clock: Clock,
        random: Random,
        ttl: float = SESSION_TTL,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.identity = identity
        self._clock = clock
        self._random = random
        self._ttl = ttl
        self._max = max_sessions
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        #: Card serial → how many secrets the server has provisioned into it.
        self.provisioned: dict[str, int] = {}

    def start(self) -> Step:
        """A new web session: select the applet and read the card's certificate."""
        now = self._clock()
        sid = base64.urlsafe_b64encode(self._random(32)).rstrip(b"=").decode()
        apdus = (
            CommandApdu(0x00, INS.SELECT, 0x04, 0x00, HATCHWAY_AID, le=256).encode(),
            get_certificate_store_command(KeyRef(Scp11Variant.A.kid, SD_KVN)).encode(),
        )
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= self._max:
                raise SessionRefused("busy", "too many open sessions", status=503)
            self._sessions[sid] = _Session(expires=now + self._ttl, sent=apdus)
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
                result = self._step(session, session_id, nxt, responses)
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
            return Done(
                session_id,
                session.card_serial,
                len(session.secret),
                session.round_trips,
                session.apdus,
            )

    def _step(
        self, session: _Session, sid: str, nxt: SessionState, responses: Sequence[bytes]
    ) -> Step | Done:
        parsed = [_parse(r) for r in responses]
        if nxt is SessionState.HANDSHAKE:
            return self._handshake(session, sid, parsed)
        if nxt is SessionState.STORE:
            return self._open(session, sid, responses)
        if nxt is SessionState.READ:
            _check_job(self._unwrap(session, parsed[0]), "STORE SECRET")
            return self._wrapped(session, sid, AppletIns.READ_SECRET, b"")
        secret = _check_job(self._unwrap(session, parsed[0]), "READ SECRET")
        if not hmac.compare_digest(secret, session.secret):
            raise SessionRefused("job_failed", "the card returned a different secret", status=502)
        self.provisioned[session.card_serial] = self.provisioned.get(session.card_serial, 0) + 1
        log.info("secret provisioned through SCP11a", extra={"card": session.card_serial})
        return Done(sid, session.card_serial, len(session.secret), 0, 0)

    def _handshake(self, session: _Session, sid: str, parsed: list[ResponseApdu]) -> Step:
        for resp, what in zip(parsed, ("SELECT applet", "GET DATA BF21"), strict=True):
            if resp.sw != SW.OK:
                raise SessionRefused("card_refused", f"{what}: {sw_name(resp.sw)}", sw=resp.sw)
        try:
            certs = parse_certificate_store(parsed[1].data)
            host = Scp11Host(
                Scp11Variant.A,
                card_certificates=certs,
                random=self._random,
                now=self._clock(),
                trust_anchor=self.identity.ca_certificate,
                oce_chain=[self.identity.certificate],
                oce_key=self.identity.oce_key,
                sd_kvn=SD_KVN,
                short_apdus=True,
            )
        except (MalformedTlv, InvalidMessage):
            raise SessionRefused(
                "untrusted_card", "the card's certificate is not from this server's CA", status=403
            ) from None
        session.host = host
        session.card_serial = _serial(certs[-1])
        return Step(sid, tuple(host.handshake_commands()), Stage.JOB)

    def _open(self, session: _Session, sid: str, responses: Sequence[bytes]) -> Step:
        assert session.host is not None  # noqa: S101 - set in the HANDSHAKE state
        try:
            session.channel = session.host.receive_responses(responses)
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
        session.host = None
        session.secret = self._random(SECRET_LENGTH)
        return self._wrapped(session, sid, AppletIns.STORE_SECRET, session.secret)

    def _wrapped(self, session: _Session, sid: str, ins: int, data: bytes) -> Step:
        assert session.channel is not None  # noqa: S101 - set when the channel opened
        cmd = CommandApdu(CLA.PROPRIETARY, ins, 0, 0, data, le=256 if not data else None)
        return Step(sid, (session.channel.wrap(cmd.encode()),), Stage.JOB)

    def _unwrap(self, session: _Session, resp: ResponseApdu) -> ResponseApdu:
        assert session.channel is not None  # noqa: S101 - set when the channel opened
        try:
            return ResponseApdu.parse(session.channel.unwrap(resp.encode()))
        except InvalidMessage:
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
