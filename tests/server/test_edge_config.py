"""The read deadlines and connection cap are configurable, validated, and reach uvicorn."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.config import Settings, settings_from_env
from hatchway.errors import ConfigurationError
from hatchway.server.context import ServerContext
from hatchway.server.edge.protocol import GuardedH11Protocol
from hatchway.server.run import _configs


def test_defaults_are_sane() -> None:
    s = settings_from_env({})
    assert (s.header_timeout, s.body_timeout, s.max_connections) == (10, 30, 1000)


def test_environment_sets_them() -> None:
    s = settings_from_env(
        {
            "HATCHWAY_HEADER_TIMEOUT": "2",
            "HATCHWAY_BODY_TIMEOUT": "5",
            "HATCHWAY_MAX_CONNECTIONS": "64",
        }
    )
    assert (s.header_timeout, s.body_timeout, s.max_connections) == (2, 5, 64)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HATCHWAY_HEADER_TIMEOUT", "0"),
        ("HATCHWAY_HEADER_TIMEOUT", "301"),
        ("HATCHWAY_BODY_TIMEOUT", "0"),
        ("HATCHWAY_BODY_TIMEOUT", "601"),
        ("HATCHWAY_MAX_CONNECTIONS", "0"),
        ("HATCHWAY_MAX_CONNECTIONS", "100001"),
        ("HATCHWAY_HEADER_TIMEOUT", "ten"),
    ],
)
def test_out_of_range_values_fail_loudly(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError):
        settings_from_env({name: value})


def test_both_listeners_get_the_guarded_h11_protocol(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", header_timeout=3, body_timeout=7, max_connections=9
    )
    ctx = ServerContext.create(settings)
    try:
        for config in _configs(ctx):
            protocol = config.http
            assert isinstance(protocol, type) and issubclass(protocol, GuardedH11Protocol)
            assert protocol.limits.header_timeout == 3
            assert protocol.limits.body_timeout == 7
            assert protocol.limits.max_connections == 9
            assert config.timeout_keep_alive == 5
            assert config.h11_max_incomplete_event_size == 16 * 1024
    finally:
        ctx.close()
