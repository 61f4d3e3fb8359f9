"""Between the transports and the node: bounded admission in, receipts out.

Theory of operation
-------------------
`Ingress.submit(message, transport)` is the one way a message reaches the node.  It
counts the message, refuses what is too large, bounds how many messages of each
transport are in flight to the node at once, and turns an exception out of the node
into a `net.node` rejection (a bug, logged) so no transport ever sees one.

The in-flight bound is the shell's queue: CoAP cannot wait (the device's CON
retransmits after 2 s), so a full CoAP ingress answers at once with `net.busy` and the
device's back-off takes over; MQTT waits for a slot instead, which stops the shell
reading from the broker and leaves the backlog in the broker's queue for this
subscription, where a QoS 1 message is safe.

`ReceiptHub` drains `Node.receipts()`: it keeps the latest receipt per device (for CoAP
GET and Observe) and hands each to its subscribers (the CoAP observers, the MQTT outbox).

Limits
------
    INFLIGHT_COAP_MAX    256     concurrent CoAP requests at the node; at ~0.4 ms of
                                 verification each this is ~0.1 s of work, far inside the
                                 CoAP exchange lifetime.
    INFLIGHT_MQTT_MAX    256     the same for MQTT; also what lets a verification window
                                 fill (verifier.BATCH_MAX = 128).
    ACK_DEVICES_MAX      100000  devices whose latest receipt is kept for CoAP GET
                                 (least recently updated dropped first; ~300 B each,
                                 ~30 MB at most); a device that misses one asks again by
                                 re-sending its batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from .metrics import NetMetrics
from .ports import (
    CODE_BUSY,
    CODE_NODE,
    CODE_TOO_LARGE,
    MESSAGE_BYTES_MAX,
    Admission,
    CommitReceipt,
    Node,
)

INFLIGHT_COAP_MAX = 256
INFLIGHT_MQTT_MAX = 256
ACK_DEVICES_MAX = 100_000
BUSY_RETRY_AFTER_S = 1

log = logging.getLogger("gridledger.net")


class Ingress:
    """Counts, bounds and hands messages to the node."""

    def __init__(self, node: Node, metrics: NetMetrics, inflight_max: dict[str, int]) -> None:
        self._node = node
        self._metrics = metrics
        self._inflight_max = dict(inflight_max)
        self._inflight = dict.fromkeys(inflight_max, 0)
        self._slots = {t: asyncio.Semaphore(n) for t, n in inflight_max.items()}

    def inflight(self, transport: str) -> int:
        return self._inflight[transport]

    async def submit(
        self, message: bytes, transport: str, wait: bool, again: bool = False
    ) -> Admission:
        """Hand `message` to the node; with `wait`, queue for a slot instead of refusing.

        `again` marks a retry after overload, so the message is not counted twice in.
        """
        if not again:
            self._metrics.of(self._metrics.messages_in, transport).inc()
        if len(message) > MESSAGE_BYTES_MAX:
            return self._count(transport, Admission.rejected(
                CODE_TOO_LARGE, f"{len(message)} > {MESSAGE_BYTES_MAX} bytes"))
        slots = self._slots[transport]
        if not wait and slots.locked():
            busy = Admission("overloaded", code=CODE_BUSY, reason="ingress full",
                             retry_after_s=BUSY_RETRY_AFTER_S)
            return self._count(transport, busy)
        async with slots:
            self._enter(transport, 1)
            try:
                admission = await self._node.submit(message, transport)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("node.submit raised", extra={"fields": {"transport": transport}})
                admission = Admission.rejected(CODE_NODE, type(exc).__name__)
            finally:
                self._enter(transport, -1)
        return self._count(transport, admission)

    def refuse(self, transport: str, code: str, reason: str) -> Admission:
        """Count and reject a message the transport turned away before the node."""
        self._metrics.of(self._metrics.messages_in, transport).inc()
        return self._count(transport, Admission.rejected(code, reason))

    def _enter(self, transport: str, delta: int) -> None:
        self._inflight[transport] += delta
        depth = self._metrics.of(self._metrics.queue_depth, "ingress_" + transport)
        depth.set(self._inflight[transport])

    def _count(self, transport: str, admission: Admission) -> Admission:
        self._metrics.of(self._metrics.admissions, transport, admission.outcome).inc()
        if admission.outcome == "rejected":
            self._metrics.reject(transport, admission.code)
            log.debug("rejected", extra={"fields": {
                "transport": transport, "code": admission.code, "device": admission.device_id,
                "seq": admission.seq, "reason": admission.reason}})
        return admission


class ReceiptHub:
    """Latest receipt per device, and fan-out of every new one to subscribers."""

    def __init__(self, devices_max: int = ACK_DEVICES_MAX) -> None:
        self._latest: OrderedDict[str, bytes] = OrderedDict()
        self._devices_max = devices_max
        self._subscribers: list[Callable[[CommitReceipt], None]] = []
        self.received = 0

    def subscribe(self, callback: Callable[[CommitReceipt], None]) -> None:
        self._subscribers.append(callback)

    def latest(self, device_id: str) -> bytes | None:
        return self._latest.get(device_id)

    def publish(self, item: CommitReceipt) -> None:
        self.received += 1
        self._latest[item.device_id] = item.receipt
        self._latest.move_to_end(item.device_id)
        while len(self._latest) > self._devices_max:
            self._latest.popitem(last=False)
        for callback in self._subscribers:
            callback(item)

    async def pump(self, node: Node) -> None:
        """Run until cancelled: move the node's receipts to the subscribers."""
        async for item in node.receipts():
            self.publish(item)
