"""The server's MQTT adapter: uplinks in, replies and pushed commands out (docs/mqtt.md).

Thin, like the plain-HTTP route: the sealed token from a device's uplink topic goes to
``MessageService.handle_async`` together with the device id the topic names, and the
sealed reply goes to that device's downlink with the request's MQTT 5 correlation data.
Up to ``UPLINK_WINDOW`` uplinks are handled at once, so that they share group-commit
batches; they are answered and acknowledged in arrival order (:mod:`.window`), which
keeps each device's replies in order too. The
broker is not trusted: a message signed by another device than its topic names, a
forgery or a replay is refused by the messaging flow, logged, and answered with
nothing, so the device sees nothing odd.

At-least-once in, exactly-once processing: every uplink is acknowledged to the broker
(PUBACK) only after its batch is durable (``handle_async`` returned), so a replica
that dies with uplinks in flight has them redelivered (to its persistent session). A
redelivered publish has the same bytes: the replay window would refuse it, so a short
cache of recent replies, keyed by the topic and the token's hash, answers it with the
*same* sealed reply and stores nothing. A redelivery that misses the cache (another
replica, or a restart) is refused as a replay and still stored once; the device's SDK
then retransmits with the same ``mid`` and a fresh ``seq``, which the store
acknowledges as a duplicate.

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
import functools
import hashlib
import logging
import random
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hatchway.bus import Bus, InProcessBus
from hatchway.errors import InvalidMessage
from hatchway.mqtt.broker import TCP_NODELAY, broker_tls
from hatchway.mqtt.topics import Topics
from hatchway.mqtt.window import AckWindow
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
#: Uplinks handled at once per replica (also the Receive Maximum the broker is told, so
#: it sends no more unacknowledged): enough to fill group-commit batches, small enough
#: that a replica killed mid-window has little for the broker to redeliver.
UPLINK_WINDOW = 64
#: When the connection ends, how long the uplinks in hand may take to finish storing
#: (and fill the reply cache) before the gateway reconnects and the broker redelivers.
DRAIN_GRACE = 5.0


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


@dataclass(slots=True)
class _Uplink:
    """One received publish, and what handling it produced."""

    message: aiomqtt.Message
    topic: str
    payload: bytes
    correlation: bytes | None
    device_id: str | None
    started: float = field(default_factory=time.perf_counter)
    status: str = "refused"
    reply: bytes | None = None


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
        self._handling: set[asyncio.Task[None]] = set()
        self._store_ok = True
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hatchway-mqtt")

    async def stop(self, grace: float = 5.0) -> None:
        """Let the uplinks in hand finish and their replies go out, then disconnect. Whatever
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
        # MQTT 5 §3.1.2.11.3: the broker keeps at most this many uplinks unacknowledged
        # with us (Mosquitto would otherwise allow its max_inflight_messages, 20).
        connect.ReceiveMaximum = UPLINK_WINDOW
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
            socket_options=TCP_NODELAY,
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
        window: AckWindow[_Uplink] = AckWindow(UPLINK_WINDOW)
        halted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pusher = asyncio.create_task(self._push_loop(client), name="hatchway-mqtt-push")
        receiver = asyncio.create_task(self._receive(client, window, halted))
        try:
            # Until the connection drops (receiver), a publish fails (pusher) or an
            # uplink could not be handled (halted).
            await asyncio.wait({pusher, receiver, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Packet ids belong to this connection: nothing is acknowledged after it.
            window.halt()
            for task in (pusher, receiver):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
            await self._drain()
        for task in (pusher, receiver):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if halted.done():
            raise _Reconnect("a message could not be handled; it will be redelivered")

    async def _drain(self) -> None:
        """Let the uplinks in hand finish storing before the broker redelivers them: a
        redelivery then meets the reply cache instead of the replay window."""
        if self._handling:
            await asyncio.wait(set(self._handling), timeout=DRAIN_GRACE)
        self._idle.set()

    # -- uplinks --------------------------------------------------------------------------
    async def _receive(
        self, client: aiomqtt.Client, window: AckWindow[_Uplink], halted: asyncio.Future[None]
    ) -> None:
        room = asyncio.Semaphore(window.size)

        def finished(uplink: _Uplink, ticket: int, task: asyncio.Task[None]) -> None:
            self._handling.discard(task)
            if window.halted:
                return  # the connection is gone or failed; the broker redelivers
            failed = task.cancelled() or uplink.status == "error"
            released = window.finish(ticket, failed=failed)
            for done in released:
                self._answer(client, done)
                room.release()
            if window.halted and not halted.done():
                halted.set_result(None)
            elif not len(window):
                self._idle.set()

        # A broker that ignores our Receive Maximum waits here: it cannot make us hold
        # more than the window.
        async for message in client.messages:
            await room.acquire()
            self._idle.clear()
            uplink = self._uplink(message)
            ticket = window.admit(uplink)
            task = asyncio.create_task(self._handle(uplink))
            self._handling.add(task)
            task.add_done_callback(functools.partial(finished, uplink, ticket))

    def _uplink(self, message: aiomqtt.Message) -> _Uplink:
        correlation = getattr(message.properties, "CorrelationData", None)
        if correlation is not None and len(correlation) > MAX_CORRELATION:
            correlation = None
        topic = message.topic.value
        return _Uplink(
            message=message,
            topic=topic,
            payload=message.payload if isinstance(message.payload, bytes) else b"",
            correlation=correlation,
            device_id=self.topics.device_of_uplink(topic),
        )

    async def _handle(self, up: _Uplink) -> None:
        """Store and answer one uplink; the outcome goes into ``up``, never raises."""
        if up.device_id is None or len(up.payload) > self.ctx.settings.max_message_size:
            log.warning("mqtt: refused a publish on %r (%d bytes)", up.topic, len(up.payload))
            return
        # Keyed by topic too: a device's token copied onto another device's uplink is
        # not a redelivery and must reach the flow, which refuses it.
        key = hashlib.sha256(up.topic.encode() + b"\0" + up.payload).digest()
        now = time.monotonic()
        up.reply = self.replies.get(key, now)
        if up.reply is not None:
            up.status = "redelivery"
            log.info("mqtt: redelivered publish on %s answered again", up.topic)
            return
        try:
            up.reply = await self.ctx.messages.handle_async(up.payload, sender=up.device_id)
        except InvalidMessage:
            pass  # logged by the flow; the device is told nothing
        except Exception:
            # The store failed (database down...). Left unacknowledged, like a 5xx over
            # HTTP, and the connection is dropped: unacknowledged uplinks would otherwise
            # sit in this session's in-flight window until it filled. After the back-off
            # the broker redelivers them to the reconnected session.
            log.exception("mqtt: message on %s failed", up.topic)
            up.status = "error"
            self._access(up)
        else:
            up.status = "ok"
            self._store_ok = True
            # Cached as soon as it is durable, even if this connection dies before the
            # ack: the redelivery is then answered, not refused as a replay.
            self.replies.put(key, up.reply, now + self.ctx.settings.message_ttl)

    def _answer(self, client: aiomqtt.Client, up: _Uplink) -> None:
        """Reply and acknowledge, in arrival order (called by the window)."""
        if up.reply is not None and up.device_id is not None:
            self._reply_later(client, self.topics.downlink(up.device_id), up.reply, up.correlation)
        if up.message.qos > 0:
            client._client.ack(up.message.mid, up.message.qos)
        self._access(up)

    def _access(self, up: _Uplink) -> None:
        access.info(
            "mqtt message",
            extra={
                "listener": "mqtt",
                "topic": up.topic,
                "device_id": up.device_id,
                "status": up.status,
                "bytes_in": len(up.payload),
                "bytes_out": len(up.reply) if up.reply else 0,
                "ms": round((time.perf_counter() - up.started) * 1000, 2),
            },
        )

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
