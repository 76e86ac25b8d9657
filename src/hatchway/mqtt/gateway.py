"""The server's MQTT adapter: uplinks in, replies and pushed commands out (docs/mqtt.md).

Thin, like the plain-HTTP route: the sealed token from a device's uplink topic goes to
``MessageService.handle`` together with the device id the topic names, and the sealed
reply goes to that device's downlink with the request's MQTT 5 correlation data. The
broker is not trusted: a message signed by another device than its topic names, a
forgery or a replay is refused by the messaging flow, logged, and answered with
nothing, so the device sees nothing odd.

At-least-once in, exactly-once processing: every uplink is acknowledged to the broker
(PUBACK) only after ``handle`` returned, so a replica that dies mid-message has it
redelivered (to its persistent session). A redelivered publish has the same bytes:
the replay window would refuse it, so a short cache of recent replies, keyed by the
topic and the token's hash, answers it with the *same* sealed reply and stores nothing. A redelivery
that misses the cache (another replica, or a restart) is refused as a replay and still
stored once; the device's SDK then retransmits with the same ``mid`` and a fresh
``seq``, which the store acknowledges as a duplicate.

Pushes: a queued command is sealed, claimed in the store (queued -> delivered, only one
replica wins), then published QoS 1 to the device's downlink; a device with a
persistent session gets it from the broker when it reconnects. A revoked device's
de-registration notice is pushed the same way, once (``push_notices``). The push loop
wakes on the notification bus (``hatchway device command`` publishes there) and sweeps the queue
on a timer, which is what reaches it when the bus is in-process (SQLite: the operator's
CLI runs in another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import socket
import time
from collections import OrderedDict

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hatchway.bus import Bus, InProcessBus
from hatchway.errors import InvalidMessage
from hatchway.mqtt.broker import broker_tls
from hatchway.mqtt.topics import Topics
from hatchway.server.context import ServerContext

log = logging.getLogger("hatchway.mqtt")
access = logging.getLogger("hatchway.access")

#: Bus channel that wakes every replica's push loop; the payload is a device id.
PUSH_CHANNEL = "hatchway.mqtt.push"
#: Queue sweep when nothing can wake us (in-process bus) and as a safety net otherwise.
SWEEP_LOCAL = 1.0
SWEEP_SHARED = 30.0
RECONNECT_INITIAL = 0.2
RECONNECT_MAX = 30.0
REPLY_CACHE_SIZE = 4096
#: Correlation data is echoed into the reply; anything longer is not (the SDK uses 16).
MAX_CORRELATION = 64
PUSH_BATCH = 100


def default_client_id(https_port: int) -> str:
    return f"hatchway-{socket.gethostname()[:64]}-{https_port}"


def publish_properties(correlation: bytes | None, *, expiry: int | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/jose"
    if correlation:
        props.CorrelationData = correlation
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    return props


class _Reconnect(Exception):
    """Drop the connection on purpose, so the broker redelivers what is unacknowledged."""


class ReplyCache:
    """hash(topic, token) -> (sealed reply, expiry): answers a redelivery identically."""

    def __init__(self, size: int = REPLY_CACHE_SIZE) -> None:
        self._items: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._size = size

    def get(self, key: bytes, now: float) -> bytes | None:
        item = self._items.get(key)
        if item is None or item[1] <= now:
            return None
        return item[0]

    def put(self, key: bytes, reply: bytes, expires: float) -> None:
        self._items[key] = (reply, expires)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class MqttGateway:
    """One MQTT client per replica: a shared subscription in, publishes out."""

    def __init__(self, ctx: ServerContext) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.broker = s.mqtt_broker
        self.topics = Topics(s.mqtt_topic_prefix)
        self.subscription = self.topics.shared_subscription(s.mqtt_share_group)
        self.client_id = s.mqtt_client_id or default_client_id(s.https_port)
        self.sweep_interval = SWEEP_LOCAL if isinstance(ctx.bus, InProcessBus) else SWEEP_SHARED
        self.connected = asyncio.Event()
        self.replies = ReplyCache()
        self._task: asyncio.Task[None] | None = None
        self._replying: set[asyncio.Task[None]] = set()
        self._store_ok = True
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hatchway-mqtt")

    async def stop(self, grace: float = 5.0) -> None:
        """Let the uplink in hand finish and its reply go out, then disconnect. Whatever
        is cut short is unacknowledged, so the broker redelivers it (to this session
        after a restart): nothing is lost, and the replay check keeps it single."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
                if self._replying:
                    await asyncio.wait(set(self._replying))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("mqtt stopped")

    def _client(self) -> aiomqtt.Client:
        b = self.broker
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # How long the broker keeps this session (and its unacknowledged uplinks)
        # while the replica restarts: HATCHWAY_MQTT_SESSION_EXPIRY.
        connect.SessionExpiryInterval = self.ctx.settings.mqtt_session_expiry
        return aiomqtt.Client(
            b.host,
            b.port,
            username=b.username,
            password=b.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            # A persistent session: uplinks this replica had not acknowledged when it
            # went away are redelivered to it when it comes back.
            clean_start=False,
            properties=connect,
            tls_context=broker_tls(self.ctx.settings.mqtt_ca_file) if b.tls else None,
            keepalive=30,
        )

    async def _run(self) -> None:
        delay = RECONNECT_INITIAL
        while True:
            try:
                client = self._client()
                # Acknowledge each uplink only once it has been handled (see above).
                client._client.manual_ack_set(True)  # aiomqtt exposes no manual ack
                async with client:
                    if self._store_ok:
                        delay = RECONNECT_INITIAL
                    await self._serve(client)
            except (aiomqtt.MqttError, _Reconnect) as exc:
                if isinstance(exc, _Reconnect):
                    # Keep backing off until a message is handled again: reconnecting
                    # at once would only have the broker redeliver into the same failure.
                    self._store_ok = False
                log.warning(
                    "mqtt: connection to %s lost or refused (%s); retry in %.1fs",
                    self.broker,
                    exc,
                    delay,
                )
            finally:
                self.connected.clear()
            # Jitter spreads replicas that lost the broker at the same moment.
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, RECONNECT_MAX)

    async def _serve(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe(self.subscription, qos=1)
        codes = [code if isinstance(code, int) else int(code.value) for code in granted]
        if not codes or any(code >= 0x80 for code in codes):
            raise aiomqtt.MqttError(f"subscription to {self.subscription} refused: {codes}")
        self.connected.set()
        log.info(
            "mqtt connected",
            extra={
                "broker": str(self.broker),
                "client_id": self.client_id,
                "subscription": self.subscription,
            },
        )
        pusher = asyncio.create_task(self._push_loop(client), name="hatchway-mqtt-push")
        try:
            async for message in client.messages:
                self._idle.clear()
                try:
                    await self._on_message(client, message)
                finally:
                    self._idle.set()
                if pusher.done():
                    pusher.result()  # a publish failed: reconnect
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pusher

    # -- uplinks --------------------------------------------------------------------------
    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        started = time.perf_counter()
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        correlation = getattr(message.properties, "CorrelationData", None)
        if correlation is not None and len(correlation) > MAX_CORRELATION:
            correlation = None
        device_id = self.topics.device_of_uplink(topic)
        status, reply = "refused", None
        try:
            if device_id is None or len(payload) > self.ctx.settings.max_message_size:
                log.warning("mqtt: refused a publish on %r (%d bytes)", topic, len(payload))
            else:
                # Keyed by topic too: a device's token copied onto another device's
                # uplink is not a redelivery and must reach the flow, which refuses it.
                key = hashlib.sha256(topic.encode() + b"\0" + payload).digest()
                now = time.monotonic()
                reply = self.replies.get(key, now)
                if reply is not None:
                    status = "redelivery"
                    log.info("mqtt: redelivered publish on %s answered again", topic)
                else:
                    try:
                        reply = await asyncio.to_thread(
                            self.ctx.messages.handle, payload, sender=device_id
                        )
                    except InvalidMessage:
                        reply = None  # logged by the flow; the device is told nothing
                    else:
                        status = "ok"
                        self._store_ok = True
                        ttl = self.ctx.settings.message_ttl
                        self.replies.put(key, reply, now + ttl)
            if reply is not None and device_id is not None:
                self._reply_later(client, self.topics.downlink(device_id), reply, correlation)
        except aiomqtt.MqttError:
            raise  # not acknowledged: the broker redelivers it after we reconnect
        except Exception:
            # The store failed (database down...). Leave it unacknowledged, like a 5xx
            # over HTTP, and drop the connection: unacknowledged uplinks would otherwise
            # sit in this session's in-flight window until it filled. After the back-off
            # the broker redelivers them to the reconnected session.
            log.exception("mqtt: message on %s failed", topic)
            status = "error"
        if status != "error" and message.qos > 0:
            client._client.ack(message.mid, message.qos)
        access.info(
            "mqtt message",
            extra={
                "listener": "mqtt",
                "topic": topic,
                "device_id": device_id,
                "status": status,
                "bytes_in": len(payload),
                "bytes_out": len(reply) if reply else 0,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        if status == "error":
            raise _Reconnect("a message could not be handled; it will be redelivered")

    def _reply_later(
        self, client: aiomqtt.Client, topic: str, reply: bytes, correlation: bytes | None
    ) -> None:
        """Publish without holding up the next uplink: it is handled and stored already.
        A reply lost with the connection costs the device one retransmission (same
        mid, acknowledged as a duplicate), never a second copy of the message."""
        task = asyncio.create_task(
            client.publish(topic, reply, qos=1, properties=publish_properties(correlation))
        )
        self._replying.add(task)
        task.add_done_callback(self._replied)

    def _replied(self, task: asyncio.Task[None]) -> None:
        self._replying.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("mqtt: a reply was not published: %s", task.exception())

    # -- pushes ---------------------------------------------------------------------------
    async def _push_loop(self, client: aiomqtt.Client) -> None:
        with self.ctx.bus.subscribe(PUSH_CHANNEL) as wake:
            while True:
                try:
                    await self.push_queued(client)
                    await self.push_notices(client)
                except aiomqtt.MqttError:
                    raise  # the connection is gone; _serve reconnects
                except Exception:
                    # The store failed: try again at the next wake-up or sweep.
                    log.exception("mqtt: pushing queued commands failed")
                await wake.get(timeout=self.sweep_interval)

    async def push_queued(self, client: aiomqtt.Client) -> int:
        """Push every queued command of an enrolled device; returns how many."""
        store, pushed = self.ctx.store, 0
        while True:
            queued = await asyncio.to_thread(store.queued_commands, limit=PUSH_BATCH)
            claimed = 0
            for command in queued:
                sealed = await asyncio.to_thread(self.ctx.messages.push_command, command)
                if sealed is None:
                    continue  # another replica claimed it first
                claimed += 1
                await client.publish(
                    self.topics.downlink(command.device_id),
                    sealed,
                    qos=1,
                    properties=publish_properties(None),
                )
                access.info(
                    "mqtt push",
                    extra={
                        "listener": "mqtt",
                        "topic": self.topics.downlink(command.device_id),
                        "device_id": command.device_id,
                        "cid": command.command_id,
                        "status": "pushed",
                        "bytes_out": len(sealed),
                    },
                )
            pushed += claimed
            if len(queued) < PUSH_BATCH or not claimed:
                return pushed

    async def push_notices(self, client: aiomqtt.Client) -> int:
        """Push the de-registration notice of every revoked device not told yet.

        Claimed in the store first, so one replica pushes each notice once. The push is
        a courtesy that reaches a listening device (or its persistent session) at once;
        a device that misses it is told on its next message instead.
        """
        now = self.ctx.messages.clock()
        pending = await asyncio.to_thread(self.ctx.store.notices_to_push, now=now)
        pushed = 0
        for device_id in pending:
            sealed = await asyncio.to_thread(self.ctx.messages.push_notice, device_id)
            if sealed is None:
                continue
            topic = self.topics.downlink(device_id)
            await client.publish(topic, sealed, qos=1, properties=publish_properties(None))
            pushed += 1
            access.info(
                "mqtt push",
                extra={
                    "listener": "mqtt",
                    "topic": topic,
                    "device_id": device_id,
                    "status": "revoked",
                    "bytes_out": len(sealed),
                },
            )
        return pushed


def wake_pushers(bus: Bus, device_id: str) -> None:
    """Tell every replica's push loop that ``device_id`` has a new command."""
    bus.publish(PUSH_CHANNEL, device_id)
