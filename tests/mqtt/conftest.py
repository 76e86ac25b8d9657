"""Fixtures shared by the MQTT tests: a topic prefix of their own, and a real
``hatchway serve`` connected to the machine's Mosquitto under that prefix.

A module that needs its own broker configuration (ACLs, TLS) defines its own
``server`` fixture, which overrides this one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.server.process import ServerProcess
from tests.mqtt.brokers import mqtt_server, require_system_broker, unique_prefix, wait_mqtt


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def server(tmp_path: Path, prefix: str) -> Iterator[ServerProcess]:
    proc = mqtt_server(tmp_path / "data", url=require_system_broker(), prefix=prefix)
    proc.start()
    try:
        wait_mqtt(proc)
        yield proc
    finally:
        proc.stop()
