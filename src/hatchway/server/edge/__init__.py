"""What faces the network before a route runs: error shapes, read deadlines, connection cap.

Issue 7 part 2 items 4–6: every answer either listener gives, down to a malformed
request line, is the listener's documented JSON error; a client cannot hold a
connection open by sending slowly; and a client that leaves mid-request is an
info line, not an ERROR with a traceback.
"""

from hatchway.server.edge.deadline import BodyDeadline, BodyTimeout
from hatchway.server.edge.errors import (
    HTTPS_SHAPE,
    PLAIN_SHAPE,
    UNIFORM_ERROR,
    ErrorShape,
    install_error_handlers,
)
from hatchway.server.edge.framing import FramingGuard
from hatchway.server.edge.install import install_edge
from hatchway.server.edge.protocol import Limits, bound_tls_handshakes, guarded_protocol

__all__ = [
    "HTTPS_SHAPE",
    "PLAIN_SHAPE",
    "UNIFORM_ERROR",
    "BodyDeadline",
    "BodyTimeout",
    "ErrorShape",
    "FramingGuard",
    "Limits",
    "bound_tls_handshakes",
    "guarded_protocol",
    "install_edge",
    "install_error_handlers",
]
