"""MQTT 5 uplink: publish batches QoS 1 to gl/v1/{device}/up, take receipts from
gl/v1/{device}/ack.

The connection loop connects, subscribes to the ack topic, then tells its Sender the
link is up (everything in flight goes again, since receipts published while we were
away are lost with a clean session).  A pump sends what the Sender says is due and
sleeps until the next deadline or a wake-up (a new batch, a receipt).  Any MQTT error
ends the connection; the Sender's link backoff (exponential, jittered) says when to try
again.  aiomqtt's errors are mapped here and nowhere else.

MQTT 5 first; a broker that refuses it as an unsupported protocol version (CONNACK
0x84 in MQTT 5 terms, 0x01 in MQTT 3.1.1 terms: the aggregator's embedded broker is
3.1.1 only) gets MQTT 3.1.1 from the next attempt on, which QoS 1 publish and subscribe
need nothing more than.

Limits: one publish awaited at a time (its PUBACK), a window of `Sender.window`
batches without a receipt; keepalive 30 s, so a dead broker is noticed within 45 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable

import aiomqtt

from edge.agent.logs import event
from edge.portable.agent import Sender
from edge.portable.errors import LocalProtocolError

KEEPALIVE_S = 30
# CONNACK codes that mean "this broker does not speak MQTT 5".
UNSUPPORTED_PROTOCOL_CODES = (0x01, 0x84)
CONNECT_TIMEOUT_S = 5.0
DEFAULT_PORT = 1883


def _refuses_v5(exc: Exception) -> bool:
    """True for a connection refused because the broker does not speak MQTT 5."""
    if not isinstance(exc, aiomqtt.MqttCodeError):
        return False
    code = getattr(exc.rc, "value", exc.rc)
    return code in UNSUPPORTED_PROTOCOL_CODES


def parse_url(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise LocalProtocolError(f"{url!r}: use mqtt://HOST[:PORT]", "config.invalid")
    return parts.hostname, parts.port or DEFAULT_PORT


class MqttUplink:
    def __init__(self, url: str, device_id: str, sender: Sender,
                 get_message: Callable[[int], bytes | None],
                 on_receipt: Callable[[bytes], None], log: logging.Logger) -> None:
        self.host, self.port = parse_url(url)
        self.device_id = device_id
        self.sender = sender
        self.get_message = get_message
        self.on_receipt = on_receipt
        self.log = log
        self.up_topic = f"gl/v1/{device_id}/up"
        self.ack_topic = f"gl/v1/{device_id}/ack"
        self.last_sent_seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.protocol = aiomqtt.ProtocolVersion.V5

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        self._stopping = True  # aiomqtt may turn our cancellation into an MqttError
        self.sender.connected = False  # what the last status file says
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            await _sleep_until(self.sender.link.ready_at_s)
            try:
                await self._session()
            except Exception as exc:  # MqttError, or a bug: delivery must go on either way
                if not isinstance(exc, aiomqtt.MqttError):
                    self.log.exception("uplink_fault", extra={"fields": {"uplink": "mqtt"}})
                self._maybe_fall_back(exc)
                retry_at_s = self.sender.link_down(time.monotonic())
                event(self.log, "mqtt_down", logging.WARNING, error=str(exc),
                      retry_in_s=round(retry_at_s - time.monotonic(), 2))

    def _maybe_fall_back(self, exc: Exception) -> None:
        if self.protocol != aiomqtt.ProtocolVersion.V5 or not _refuses_v5(exc):
            return
        self.protocol = aiomqtt.ProtocolVersion.V311
        event(self.log, "mqtt_protocol_fallback", broker=f"{self.host}:{self.port}",
              protocol="3.1.1")

    async def _session(self) -> None:
        client = aiomqtt.Client(self.host, self.port, identifier=f"gl-{self.device_id}",
                                protocol=self.protocol, keepalive=KEEPALIVE_S,
                                timeout=CONNECT_TIMEOUT_S)
        async with client:
            await client.subscribe(self.ack_topic, qos=1)
            self.sender.link_up()
            event(self.log, "mqtt_up", broker=f"{self.host}:{self.port}")
            receiver = asyncio.get_running_loop().create_task(self._receive(client))
            try:
                await self._pump(client, receiver)
            finally:
                receiver.cancel()
                await asyncio.wait([receiver])  # our own cancellation still propagates

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if isinstance(message.payload, bytes | bytearray):
                self.on_receipt(bytes(message.payload))
                self._wake.set()

    async def _pump(self, client: aiomqtt.Client, receiver: asyncio.Task[None]) -> None:
        while True:
            for seq in self.sender.due(time.monotonic()):
                message = self.get_message(seq)
                if message is None:  # settled meanwhile
                    self.sender.forget(seq)
                    continue
                await client.publish(self.up_topic, message, qos=1)
                self.sender.sent(seq, time.monotonic())
                self.last_sent_seq = max(self.last_sent_seq, seq)
            if receiver.done():
                receiver.result()  # the receive loop ended: raise its MqttError
                raise aiomqtt.MqttError("receive loop ended")
            await self._wait(self.sender.next_deadline())

    async def _wait(self, deadline_s: float) -> None:
        self._wake.clear()
        timeout_s = min(1.0, max(0.0, deadline_s - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):  # no helper task, unlike wait_for
                await self._wake.wait()


async def _sleep_until(deadline_s: float) -> None:
    wait_s = deadline_s - time.monotonic()
    if wait_s > 0:
        await asyncio.sleep(wait_s)
