"""MQTT transport: batches in on `gl/v1/+/up`, receipts out on `gl/v1/{device}/ack`.

Theory of operation
-------------------
One aiomqtt client per node, clean session, QoS 1 both ways.  Against a real broker
(Mosquitto, a cluster) it speaks MQTT 5 and subscribes with the shared subscription
`$share/gl-aggregators/gl/v1/+/up` (MQTT 5 §4.8.2), so the broker hands each batch to
exactly one node of the group.  The embedded broker (amqtt) speaks MQTT 3.1.1 only: it
refuses an MQTT 5 CONNECT ("Unsupported protocol version") and treats `$share/...` as a
plain filter that matches nothing.  With it the node connects with 3.1.1 and subscribes
to `gl/v1/+/up` directly; the embedded broker serves a single node, so nothing is lost.

Every incoming message becomes a task that awaits `Ingress.submit` and, while the node is
overloaded, waits the node's retry-after and submits again.  The PUBACK is sent only when
the node has answered (paho's manual acknowledgement), and with MQTT 5 the CONNECT sets
Receive Maximum = INFLIGHT_MAX: the broker then never has more than that many
unacknowledged messages out to this node, and the backlog stays in the broker, where
other nodes of the shared group can take it.  A message the shell has taken is held
until the node has answered it; those tasks do not depend on the connection, so a broker
outage does not drop an answer (only the PUBACK of the old connection, and a clean
session's broker forgets such a message: the device re-sends for lack of a receipt).

Receipts from the `ReceiptHub` go into a bounded outbox; the publisher takes the oldest,
publishes it with QoS 1 and removes it only once the broker has acknowledged (PUBACK),
so a receipt whose publish failed is published again after reconnecting.

When the connection fails or drops, the client reconnects with exponential back-off and
full jitter (seeded random, 0.1 s doubling up to 5 s), re-subscribing each time.  paho
and aiomqtt errors stay inside this module.

Limits
------
    INFLIGHT_MAX          256    messages taken but not yet answered by the node: MQTT 5
                                 Receive Maximum, and the reader's own bound (3.1.1).
    INCOMING_QUEUE_MAX_V311 4096 aiomqtt's buffer with the embedded broker, which has no
                                 Receive Maximum (3.1.1); beyond it aiomqtt discards the
                                 message unacknowledged and the device re-sends.  With
                                 MQTT 5 the broker bounds it to INFLIGHT_MAX.
    OUTBOX_MAX            4096   receipts waiting for the broker; beyond it the oldest is
                                 dropped (the device can GET it over CoAP or re-send).
    BACKOFF_S_MIN/MAX     0.1/5  reconnect delays.
    EMBEDDED_CONNECT_S    5      start() waits this long for the subscription on the
                                 embedded broker (it is local: milliseconds in practice).
    BROKER_DRAIN_S        2      shutdown waits this long for the embedded broker's
                                 connections to close before stopping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import dataclass

import aiomqtt
from amqtt.broker import Broker
from amqtt.errors import BrokerError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .coap import TransportError
from .ingress import INFLIGHT_MQTT_MAX, Ingress, ReceiptHub
from .metrics import NetMetrics
from .ports import TRANSPORT_MQTT, CommitReceipt

INCOMING_QUEUE_MAX_V311 = 4096
INFLIGHT_MAX = INFLIGHT_MQTT_MAX
OUTBOX_MAX = 4096
BACKOFF_S_MIN = 0.1
BACKOFF_S_MAX = 5.0
KEEPALIVE_S = 30
SHUTDOWN_RECANCEL_S = 0.5
BROKER_DRAIN_S = 2.0
EMBEDDED_CONNECT_S = 5.0
UP_FILTER = "gl/v1/+/up"
SHARED_GROUP = "gl-aggregators"

log = logging.getLogger("gridledger.net")


def ack_topic(device_id: str) -> str:
    return f"gl/v1/{device_id}/ack"


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    mqtt5: bool = True                 # False for the embedded broker (amqtt: 3.1.1 only)
    shared_group: str | None = SHARED_GROUP

    @property
    def up_filter(self) -> str:
        if self.mqtt5 and self.shared_group:
            return f"$share/{self.shared_group}/{UP_FILTER}"
        return UP_FILTER


class _ClosingBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker, closing every client stream itself.

    amqtt 0.12 leaves a connection's stream open on some paths (a refused CONNECT, a
    client leaving during shutdown); those streams would outlive the event loop.
    """

    def __init__(self, config: dict[str, object]) -> None:
        super().__init__(config)
        self.streams: set[asyncio.StreamWriter] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        self.streams.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self.streams.discard(writer)
            if not writer.is_closing():
                writer.close()

    def close_streams(self) -> None:
        for writer in list(self.streams):
            writer.close()
        self.streams.clear()


class EmbeddedBroker:
    """amqtt on loopback, for a node started without a broker URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._broker: _ClosingBroker | None = None

    async def start(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous auth: no $SYS chatter, no packet logging.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {
                "allow_anonymous": True}},
        }
        broker = _ClosingBroker(config)
        try:
            await broker.start()
        except BrokerError as exc:  # amqtt wraps the bind error; say what to do instead
            reason = exc.__cause__ or exc
            raise TransportError(
                f"embedded MQTT broker cannot listen on {self.host}:{self.port} ({reason}); "
                f"is a broker already running there? Then use it with --mqtt-url "
                f"mqtt://{self.host}:{self.port}, or move this one with --embedded-mqtt"
            ) from None
        self._broker = broker
        server = self._broker._servers["default"].instance  # amqtt has no public accessor
        sockets = getattr(server, "sockets", None) or ()
        if self.port == 0 and sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("mqtt.embedded_broker", extra={"fields": {"host": self.host, "port": self.port}})

    async def shutdown(self) -> None:
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        # amqtt's shutdown cleans up sessions but not connections still being set up or
        # torn down, whose streams would then outlive the loop: let them finish first.
        server = broker._servers.get("default")
        deadline = asyncio.get_running_loop().time() + BROKER_DRAIN_S
        while server is not None and server.conn_count > 0:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        await broker.shutdown()
        broker.close_streams()
        await asyncio.sleep(0)  # let the transports finish closing inside the loop


class MqttTransport:
    def __init__(
        self,
        settings: MqttSettings,
        ingress: Ingress,
        hub: ReceiptHub,
        metrics: NetMetrics,
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self._ingress = ingress
        self._metrics = metrics
        self._rng = rng
        self._outbox: deque[CommitReceipt] = deque()
        self._outbox_ready = asyncio.Event()
        self._slots = asyncio.Semaphore(INFLIGHT_MAX)
        self._handlers: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self.connections = 0
        self.dropped_receipts = 0
        hub.subscribe(self._on_receipt)

    async def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._runner, *self._handlers) if t is not None]
        # Python 3.11's asyncio.wait_for (inside aiomqtt) can swallow a cancellation
        # that races with its result, so cancel until the tasks are really done.
        while tasks:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=SHUTDOWN_RECANCEL_S)
            tasks = [t for t in tasks if not t.done()]
        self._runner = None

    def _on_receipt(self, item: CommitReceipt) -> None:
        if len(self._outbox) >= OUTBOX_MAX:
            self._outbox.popleft()
            self.dropped_receipts += 1
        self._outbox.append(item)
        self._metrics.of(self._metrics.queue_depth, "mqtt_outbox").set(len(self._outbox))
        self._outbox_ready.set()

    # -- connection ----------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        common = {
            "identifier": s.client_id,
            "keepalive": KEEPALIVE_S,
            "logger": logging.getLogger("gridledger.net.mqtt"),
        }
        if s.mqtt5:
            connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect.ReceiveMaximum = INFLIGHT_MAX  # MQTT 5 §3.1.2.11.3: broker-side flow control
            client = aiomqtt.Client(
                s.host, s.port, protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
                properties=connect, **common)  # type: ignore[arg-type]
        else:
            client = aiomqtt.Client(
                s.host, s.port, protocol=aiomqtt.ProtocolVersion.V311, clean_session=True,
                max_queued_incoming_messages=INCOMING_QUEUE_MAX_V311,
                **common)  # type: ignore[arg-type]
        # PUBACK only once the node has answered, so unanswered messages count against
        # the Receive Maximum and stay with the broker (aiomqtt does not expose this).
        client._client.manual_ack_set(True)
        return client

    async def _run(self) -> None:
        delay_s = BACKOFF_S_MIN
        while not self._stopping:
            try:
                async with self._client() as client:
                    await client.subscribe(self.settings.up_filter, qos=1)
                    if self._stopping:
                        return
                    self.connections += 1
                    self.connected.set()
                    self._metrics.mqtt_connected.set(1)
                    log.info("mqtt.connected", extra={"fields": {
                        "host": self.settings.host, "port": self.settings.port,
                        "filter": self.settings.up_filter}})
                    delay_s = BACKOFF_S_MIN
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                log.warning("mqtt.disconnected", extra={"fields": {
                    "error": str(exc), "retry_in_s": round(delay_s, 3)}})
            finally:
                self.connected.clear()
                self._metrics.mqtt_connected.set(0)
            await asyncio.sleep(self._rng.uniform(0, delay_s))
            delay_s = min(delay_s * 2, BACKOFF_S_MAX)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Read and publish until either side fails; the failure ends the connection."""
        reader = asyncio.ensure_future(self._read(client))
        writer = asyncio.ensure_future(self._write(client))
        try:
            done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in (reader, writer):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await asyncio.gather(reader, writer)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b""  # aiomqtt gives bytes for MQTT payloads; be safe anyway
            await self._slots.acquire()
            handling = self._handle(client, bytes(payload), message.mid, message.qos)
            task = asyncio.get_running_loop().create_task(handling)
            self._handlers.add(task)
            task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._slots.release()

    async def _handle(self, client: aiomqtt.Client, payload: bytes, mid: int, qos: int) -> None:
        """Submit until the node answers accepted or rejected (overload: wait, again),
        then acknowledge to the broker on the connection the message came on."""
        admission = await self._ingress.submit(payload, TRANSPORT_MQTT, True)
        while admission.outcome == "overloaded":
            await asyncio.sleep(admission.retry_after_s)
            admission = await self._ingress.submit(payload, TRANSPORT_MQTT, True, again=True)
        if qos > 0:
            # On a connection that has gone, this is a no-op: the broker of a clean
            # session forgets the message and the device re-sends for lack of a receipt.
            client._client.ack(mid, qos)

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                item = self._outbox[0]
                await client.publish(ack_topic(item.device_id), item.receipt, qos=1)
                if self._outbox and self._outbox[0] is item:
                    self._outbox.popleft()
                self._metrics.of(self._metrics.receipts_out, TRANSPORT_MQTT).inc()
                self._metrics.of(self._metrics.queue_depth, "mqtt_outbox").set(len(self._outbox))
            self._outbox_ready.clear()
            await self._outbox_ready.wait()
