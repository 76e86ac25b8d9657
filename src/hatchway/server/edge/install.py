"""Put the edge in front of one FastAPI app (the listener's error shape throughout)."""

from __future__ import annotations

from fastapi import FastAPI

from hatchway.server.edge.deadline import BodyDeadline
from hatchway.server.edge.errors import ErrorShape, install_error_handlers
from hatchway.server.edge.framing import FramingGuard


def install_edge(app: FastAPI, shape: ErrorShape, *, body_timeout: float) -> None:
    """Error handlers, the body deadline and the framing check, for one listener."""
    install_error_handlers(app, shape)
    # Added last, so it runs first: nothing else looks at an ambiguous request.
    app.add_middleware(BodyDeadline, seconds=body_timeout)
    app.add_middleware(FramingGuard, shape=shape)
