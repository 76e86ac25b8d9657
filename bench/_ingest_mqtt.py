"""The MQTT leg of ``bench_ingest.py``: pre-sealed QoS 1 uplinks, acks on the downlinks.

One MQTT 5 client per lane (``--connections``), each the connection of the devices
riding that lane: it subscribes to their downlinks, publishes a device's next sealed
message to that device's uplink once the previous one's sealed ack has come back
(closed loop, like a keep-alive HTTP connection), and times publish -> ack. The
correlation data pairs a reply with its request.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hatchway.mqtt.broker import TCP_NODELAY

BROKER = ("127.0.0.1", 1883)
#: Per PUBLISH, besides topic and payload: fixed header (~3), topic length (2),
#: packet id (2), properties (length 1, correlation data 3 + 16, content type on
#: replies ~19), and the 4-byte PUBACK that answers it.
_PUBLISH_OVERHEAD = 3 + 2 + 2 + 1 + 19 + 4


def server_env(prefix: str) -> dict[str, str]:
    return {
        "HATCHWAY_MQTT_URL": f"mqtt://{BROKER[0]}:{BROKER[1]}",
        "HATCHWAY_MQTT_TOPIC_PREFIX": prefix,
        "HATCHWAY_MQTT_CLIENT_ID": f"bench-{os.urandom(4).hex()}",
    }


async def mqtt_load(
    prefix: str, lanes: list[list[tuple[str, bytes]]], deadline: float, run: Any
) -> None:
    """Every lane's (device_id, token) pairs, in order, over its own MQTT connection."""

    async def lane(items: list[tuple[str, bytes]], n: int) -> None:
        waiting: dict[bytes, asyncio.Future[int]] = {}
        async with aiomqtt.Client(
            *BROKER,
            identifier=f"bench-lane-{n}-{os.urandom(3).hex()}",
            protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=TCP_NODELAY,  # as hatchway's own clients (mqtt/broker.py)
        ) as client:
            for device_id in sorted({d for d, _ in items}):
                await client.subscribe(f"{prefix}/d/{device_id}/down", qos=1)

            async def replies() -> None:
                async for message in client.messages:
                    key = getattr(message.properties, "CorrelationData", None)
                    future = waiting.pop(key, None) if key else None
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    size = len(message.topic.value) + len(payload) + _PUBLISH_OVERHEAD
                    if future is not None and not future.done():
                        future.set_result(size)

            reader = asyncio.create_task(replies())
            try:
                for device_id, token in items:
                    if time.monotonic() > deadline:
                        return
                    key = os.urandom(16)
                    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    props.CorrelationData = key
                    topic = f"{prefix}/d/{device_id}/up"
                    future = asyncio.get_running_loop().create_future()
                    waiting[key] = future
                    start = time.perf_counter()
                    await client.publish(topic, token, qos=1, properties=props)
                    try:
                        down = await asyncio.wait_for(future, 30)
                    except TimeoutError:
                        run.failures += 1
                        continue
                    run.latencies.append(time.perf_counter() - start)
                    run.wire += len(topic) + len(token) + _PUBLISH_OVERHEAD + down
            finally:
                reader.cancel()

    await asyncio.gather(*(lane(items, n) for n, items in enumerate(lanes)))
