"""Message-level security after TLS: nested JWTs, sans-I/O (US 11,546,310 step 5).

Every message is a compact JWE (RFC 7516; ECDH-ES or ECDH-ES+A256KW, A256GCM,
``cty: "JWT"``) whose plaintext is a compact JWS (RFC 7515; ES256 or EdDSA) with
an explicit ``typ`` per message kind (RFC 8725 §3.11). Time and randomness are
injected; every verification failure is ``hatchway.errors.InvalidMessage``.

The safe surface is ``seal`` / ``open_message`` plus keys, suites, message kinds
and the replay window. ``hatchway.msgsec._jose`` holds the hazardous primitives.
"""

from hatchway.msgsec.algorithms import DEFAULT_SUITE, EncAlg, KeyAlg, SignAlg, Suite
from hatchway.msgsec.keys import (
    DecryptionKey,
    EncryptionKey,
    SigningKey,
    VerifyingKey,
    generate_decryption_key,
    generate_signing_key,
    jwk_set,
    thumbprint,
)
from hatchway.msgsec.messages import RULES, Direction, Message, MessageType, Presence, Rule
from hatchway.msgsec.replay import JtiCache, ReplayWindow
from hatchway.msgsec.seal import OpenPolicy, SenderInfo, open_message, seal

__all__ = [
    "DEFAULT_SUITE",
    "RULES",
    "DecryptionKey",
    "Direction",
    "EncAlg",
    "EncryptionKey",
    "JtiCache",
    "KeyAlg",
    "Message",
    "MessageType",
    "OpenPolicy",
    "Presence",
    "ReplayWindow",
    "Rule",
    "SenderInfo",
    "SignAlg",
    "SigningKey",
    "Suite",
    "VerifyingKey",
    "generate_decryption_key",
    "generate_signing_key",
    "jwk_set",
    "open_message",
    "seal",
    "thumbprint",
]
