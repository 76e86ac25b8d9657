"""The device's MQTT transport: the same sealed tokens, over a broker (docs/mqtt.md).

``Device(state, transport=MqttTransport("mqtt://broker:1883"))``: each request is
published QoS 1 to the device's uplink topic with random MQTT 5 correlation data, and
the reply is the downlink message that carries the same correlation data back. A
downlink message without correlation data is a server push (a command), kept for
:meth:`Device.receive`. The broker only routes: correlation data is a hint, and the
SDK still checks that the opened reply answers the request's ``jti``.

The SDK is synchronous, so the aiomqtt client runs on its own event loop in one
background thread, which also reconnects with back-off. With ``persistent=True`` (the
default) the client id is the device id and the session outlives the connection
(``clean_start`` false, a session expiry), so commands pushed while the device was
offline arrive from the broker as soon as it reconnects. One-shot tools (``device
send``) pass ``persistent=False``: they must not take those commands away from the
device's listener.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import secrets
import ssl
import threading
from collections.abc import Mapping

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hatchway.device.transport import MAX_REPLY_SIZE, TransportError
from hatchway.mqtt.broker import TCP_NODELAY, BrokerUrl, broker_tls
from hatchway.mqtt.topics import Topics

log = logging.getLogger("hatchway.device.mqtt")

DEFAULT_SESSION_EXPIRY = 7 * 24 * 3600
MAX_PUSHES = 1024


class MqttTransport:
    """Request/reply and server pushes over MQTT 5 (QoS 1)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        persistent: bool = True,
        session_expiry: int = DEFAULT_SESSION_EXPIRY,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        max_reply: int = MAX_REPLY_SIZE,
    ) -> None:
        self._url = url
        self.persistent = persistent
        self.session_expiry = session_expiry if persistent else 0
        self.timeout = timeout
        self._tls_context = tls_context
        # For mqtts:// brokers with a private CA (the environment serves the CLI).
        self._ca_file = ca_file or os.environ.get("HATCHWAY_MQTT_CA_FILE") or None
        self._max_reply = max_reply
        self._pending: dict[bytes, concurrent.futures.Future[bytes]] = {}
        self._lock = threading.Lock()
        self._pushes: queue.Queue[bytes] = queue.Queue(MAX_PUSHES)
        self._connected = threading.Event()
        self._refused: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aiomqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.device_id = ""
        self.uplink = self.downlink = ""
        self.broker: BrokerUrl | None = None

    # -- set-up ---------------------------------------------------------------------------
    def bind(self, device_id: str, endpoints: Mapping[str, str]) -> None:
        """Called by ``Device``: whose topics, and the broker enrolment named."""
        url = self._url or endpoints.get("mqtt_broker")
        if not url:
            raise TransportError("no MQTT broker: pass one, or enrol with a server that has one")
        self.broker = BrokerUrl.parse(url)
        self.device_id = device_id
        topics = Topics()
        self.uplink = endpoints.get("mqtt_uplink") or topics.uplink(device_id)
        self.downlink = endpoints.get("mqtt_downlink") or topics.downlink(device_id)

    def connect(self) -> None:
        """Start the background client and wait until it is subscribed."""
        if self.broker is None:
            raise TransportError("MqttTransport is not bound to a device yet")
        if self._thread is None:
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._thread_main, args=(ready,), name="hatchway-device-mqtt", daemon=True
            )
            self._thread.start()
            ready.wait()
        if not self._connected.wait(self.timeout):
            raise TransportError(self._refused or f"could not connect to {self.broker}")

    # -- the Transport interface ------------------------------------------------------------
    def __call__(self, url: str, token: bytes) -> bytes:
        """Publish ``token`` to our uplink and wait for the reply (``url`` is unused)."""
        self.connect()
        correlation = secrets.token_bytes(16)
        waiter: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        with self._lock:
            self._pending[correlation] = waiter
        try:
            assert self._loop is not None  # noqa: S101 - set by connect()
            sent = asyncio.run_coroutine_threadsafe(self._publish(token, correlation), self._loop)
            try:
                sent.result(self.timeout)
                return waiter.result(self.timeout)
            except (TimeoutError, concurrent.futures.TimeoutError):
                # Safe to retry: the retransmission keeps the mid.
                raise TransportError(f"no reply on {self.downlink} in {self.timeout}s") from None
            except aiomqtt.MqttError as exc:
                raise TransportError(f"could not publish to {self.uplink}: {exc}") from None
        finally:
            with self._lock:
                self._pending.pop(correlation, None)

    def receive(self, timeout: float | None = None) -> bytes | None:
        """The next message the server pushed (sealed), or None after ``timeout``."""
        self.connect()
        try:
            return self._pushes.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None or self._loop is None:
            return
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(self.timeout + 5)

    # -- the background loop ----------------------------------------------------------------
    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._run(self._stop))
        finally:
            loop.close()

    def _make_client(self) -> aiomqtt.Client:
        b = self.broker
        assert b is not None  # noqa: S101 - checked by connect()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry
        client_id = (
            self.device_id if self.persistent else f"{self.device_id}.{secrets.token_hex(4)}"
        )
        tls = self._tls_context or (broker_tls(self._ca_file) if b.tls else None)
        return aiomqtt.Client(
            b.host,
            b.port,
            username=b.username or self.device_id,
            password=b.password or os.environ.get("HATCHWAY_MQTT_PASSWORD") or None,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not self.persistent,
            properties=props,
            tls_context=tls,
            keepalive=30,
            timeout=self.timeout,
            socket_options=TCP_NODELAY,
        )

    async def _run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                client = self._make_client()
                async with client:
                    granted = await client.subscribe(self.downlink, qos=1)
                    code = granted[0] if isinstance(granted[0], int) else granted[0].value
                    if code >= 0x80:
                        self._refused = f"the broker refused the subscription to {self.downlink}"
                        log.warning("%s (reason code %d)", self._refused, code)
                        return
                    self._client = client
                    self._connected.set()
                    delay = 0.1
                    reader = asyncio.create_task(self._read(client))
                    stopper = asyncio.create_task(stop.wait())
                    await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await reader
            except aiomqtt.MqttError as exc:
                log.info("mqtt: %s (%s); reconnecting in %.1fs", self.broker, exc, delay)
            finally:
                self._connected.clear()
                self._client = None
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, 5.0)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes) or len(payload) > self._max_reply:
                log.warning("mqtt: dropped an oversized or non-binary downlink message")
                continue
            correlation = getattr(message.properties, "CorrelationData", None)
            if correlation:
                with self._lock:
                    waiter = self._pending.get(bytes(correlation))
                if waiter is not None and not waiter.done():
                    waiter.set_result(payload)
                # Otherwise: a reply to a request that gave up or to another client of
                # this device (a one-shot `device send`): not ours to open.
                continue
            try:
                self._pushes.put_nowait(payload)
            except queue.Full:
                log.warning("mqtt: push queue full; dropped one (the device can poll)")

    async def _publish(self, token: bytes, correlation: bytes) -> None:
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("not connected")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/jose"
        props.CorrelationData = correlation
        props.ResponseTopic = self.downlink
        await client.publish(self.uplink, token, qos=1, properties=props, timeout=self.timeout)
