"""The fleet's uplinks: MQTT (aiomqtt) and CoAP (aiocoap), the only I/O of the fleet.

MQTT: gateways share `connections` client connections (a real gateway has its own;
ten thousand TCP connections from one process would measure the simulator's socket
handling rather than the system).  Each connection publishes QoS 1 to
gl/v1/{device}/up for its gateways, one message at a time in queue order, so a
gateway's tampered copy goes out before its genuine batch.  The first connection also
subscribes to gl/v1/+/ack and hands every receipt to `on_receipt`.  MQTT 5 first, 3.1.1
when the broker refuses it (the node's embedded broker).  A lost connection is
reconnected after RECONNECT_S; what was being published is sent again by the gateway's
own resend timer.

CoAP: one client context; a gateway's sends go out one exchange at a time (POST
/gl/v1/up, Content-Format 18).  The answer code is the diagnostic's first word (or
"accepted" for 2.04).  After an accepted genuine batch the link GETs /gl/v1/ack/{device}
until the receipt names its seq, backing off from ACK_POLL_FIRST_S to ACK_POLL_MAX_S,
for at most ACK_POLL_TOTAL_S.  At most COAP_INFLIGHT_MAX exchanges are open at once,
the node's own bound on concurrent CoAP requests.

aiomqtt's and aiocoap's errors are mapped here and nowhere else: a failed exchange is
the answer "net.timeout", which leaves the batch queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Callable

import aiocoap
import aiomqtt

from edge.agent.mqtt import UNSUPPORTED_PROTOCOL_CODES, parse_url
from edge.portable import cose
from edge.portable import receipt as receipt_mod
from edge.portable.errors import GridLedgerError, LocalProtocolError
from simulator.fleet.gateway import ACCEPTED, GENUINE, Send

LOG = logging.getLogger("gridledger.fleet")
RECONNECT_S = 1.0
CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_S = 30
# paho's own default is 20 unacknowledged QoS 1 publishes; a fleet connection carries
# hundreds of gateways.
MQTT_INFLIGHT_MAX = 1000
COAP_INFLIGHT_MAX = 256
COAP_CONTENT_FORMAT = 18
ACK_POLL_FIRST_S = 0.1
ACK_POLL_MAX_S = 2.0
ACK_POLL_TOTAL_S = 30.0

AnswerFn = Callable[[Send, str], None]
ReceiptFn = Callable[[str, bytes], None]


def coap_base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "coap" or not parts.hostname:
        raise LocalProtocolError(f"{url!r}: use coap://HOST[:PORT]", "sim.usage")
    return f"coap://{parts.netloc}"


class MqttLink:
    def __init__(self, url: str, connections: int, on_receipt: ReceiptFn,
                 client_prefix: str) -> None:
        self.host, self.port = parse_url(url)
        self.on_receipt = on_receipt
        self.client_prefix = client_prefix
        self.queues: list[asyncio.Queue[Send]] = [asyncio.Queue() for _ in range(connections)]
        self.protocol = aiomqtt.ProtocolVersion.V5
        self.tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()
        self.published = 0

    def send(self, index: int, sends: list[Send]) -> None:
        queue = self.queues[index % len(self.queues)]
        for item in sends:
            queue.put_nowait(item)

    def queued(self) -> int:
        return sum(q.qsize() for q in self.queues)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run(i)) for i in range(len(self.queues))]
        await asyncio.wait_for(self.subscribed.wait(), 3 * CONNECT_TIMEOUT_S)

    async def shutdown(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task

    async def _run(self, index: int) -> None:
        while True:
            try:
                await self._session(index)
            except aiomqtt.MqttError as exc:
                code = getattr(getattr(exc, "rc", None), "value", getattr(exc, "rc", None))
                if code in UNSUPPORTED_PROTOCOL_CODES:  # a 3.1.1-only broker
                    self.protocol = aiomqtt.ProtocolVersion.V311
                    continue
                LOG.warning("mqtt connection %d lost: %s", index, exc)
                await asyncio.sleep(RECONNECT_S)

    async def _session(self, index: int) -> None:
        client = aiomqtt.Client(self.host, self.port, identifier=f"{self.client_prefix}-{index}",
                                protocol=self.protocol, keepalive=KEEPALIVE_S,
                                timeout=CONNECT_TIMEOUT_S,
                                max_inflight_messages=MQTT_INFLIGHT_MAX)
        async with client:
            receiver = None
            if index == 0:
                await client.subscribe("gl/v1/+/ack", qos=1)
                receiver = asyncio.get_running_loop().create_task(self._receive(client))
                self.subscribed.set()
            try:
                await self._publish(client, self.queues[index], receiver)
            finally:
                if receiver is not None:
                    receiver.cancel()
                    await asyncio.wait([receiver])

    async def _publish(self, client: aiomqtt.Client, queue: asyncio.Queue[Send],
                       receiver: asyncio.Task[None] | None) -> None:
        while True:
            item = await queue.get()
            if receiver is not None and receiver.done():
                receiver.result()
                raise aiomqtt.MqttError("receive loop ended")
            await client.publish(f"gl/v1/{item.device_id}/up", item.message, qos=1)
            self.published += 1

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parts = str(message.topic).split("/")
            if len(parts) == 4 and isinstance(message.payload, bytes | bytearray):
                self.on_receipt(parts[2], bytes(message.payload))


class CoapLink:
    def __init__(self, urls: list[str], on_answer: AnswerFn, on_receipt: ReceiptFn,
                 has_seq: Callable[[bytes, int], bool]) -> None:
        self.bases = [coap_base(u) for u in urls]
        self.on_answer = on_answer
        self.on_receipt = on_receipt
        self.has_seq = has_seq
        self.context: aiocoap.Context | None = None
        self.slots = asyncio.Semaphore(COAP_INFLIGHT_MAX)
        self.tasks: set[asyncio.Task[None]] = set()
        self.exchanges = 0

    async def start(self) -> None:
        self.context = await aiocoap.Context.create_client_context(transports=["udp6"])

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks))
        if self.context is not None:
            await self.context.shutdown()

    def in_progress(self) -> int:
        return len(self.tasks)

    def send(self, index: int, sends: list[Send]) -> None:
        base = self.bases[index % len(self.bases)]
        task = asyncio.get_running_loop().create_task(self._exchange_all(base, sends))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _exchange_all(self, base: str, sends: list[Send]) -> None:
        for item in sends:  # in order: a tampered copy before its genuine batch
            code = await self._post(base, item)
            self.on_answer(item, code)
            if code == ACCEPTED and item.kind == GENUINE:
                await self._poll_receipt(base, item)

    async def _post(self, base: str, item: Send) -> str:
        assert self.context is not None
        request = aiocoap.Message(code=aiocoap.POST, uri=f"{base}/gl/v1/up",
                                  payload=item.message)
        request.opt.content_format = COAP_CONTENT_FORMAT
        async with self.slots:
            try:
                response = await self.context.request(request).response
            except aiocoap.error.Error:
                return "net.timeout"
            finally:
                self.exchanges += 1
        if response.code == aiocoap.CHANGED:
            return ACCEPTED
        text = bytes(response.payload).decode("utf-8", "replace")
        return text.split(" ", 1)[0] or str(response.code)

    async def _poll_receipt(self, base: str, item: Send) -> None:
        assert self.context is not None
        wait_s, waited_s = ACK_POLL_FIRST_S, 0.0
        uri = f"{base}/gl/v1/ack/{item.device_id}"
        while waited_s < ACK_POLL_TOTAL_S:
            await asyncio.sleep(wait_s)
            waited_s += wait_s
            wait_s = min(ACK_POLL_MAX_S, wait_s * 2)
            async with self.slots:
                try:
                    response = await self.context.request(
                        aiocoap.Message(code=aiocoap.GET, uri=uri)).response
                except aiocoap.error.Error:
                    continue
                finally:
                    self.exchanges += 1
            data = bytes(response.payload)
            if response.code == aiocoap.CONTENT and data and self.has_seq(data, item.seq):
                self.on_receipt(item.device_id, data)
                return


def receipt_seqs(data: bytes) -> list[int]:
    """The seqs a receipt names, unverified (to decide whether a poll found ours)."""
    try:
        _, entries = receipt_mod.parse_payload(cose.parse(data).payload)
    except GridLedgerError:  # not a receipt: the verified path will count it
        return []
    return [e.seq for e in entries]
