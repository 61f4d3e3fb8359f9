"""`ports.Node` for a validator of a BFT chain: the BFT engine, its links and its timers.

Theory of operation
-------------------
The asyncio shell around `aggregator.consensus.engine.BftEngine`, beside
`aggregator.net.engine_node.EngineNode` (which does the same for solo).  The engine is
owned by the event loop; three things call it, each synchronously, each performing the
returned actions in order:

    submit(message)        CoAP / MQTT ingest: `engine.submit_message`, then the gossip
                           Sends it queued (`take_outgoing`)
    on_peer(id, message)   a frame from an authenticated link: `engine.step(FromPeer)`
    the timer task         sleeps until `engine.next_deadline()` or a wake-up, then
                           `engine.handle_timeout(now)`

Actions: Send -> `Links.send` (bounded queue per peer); Receipt -> the receipts queue
(as EngineNode); Committed -> a log line and commit-latency figures; Refused -> counted
and logged with the peer id.  The WAL append and the block's SQLite transaction happen
inside the engine's step, so a vote is on disk before its Send reaches the links, and a
block is durable before its receipts are queued.

Signature checks run on the loop (check_tx); the solo node's precheck pool is not used
here: on a shared machine four validators already fill the cores.

Fail-stop.  The engine raises for no remote input, so an exception out of it is a local
fault (a full disk, a bug) after which its core and its store may disagree.  The node then
stops taking part: it logs `engine.failed`, answers ingest with `cluster.node` and shows
`"failed": true` in its status, rather than sign anything from an unknown state.  A
restart recovers from the ledger, the WAL and its peers.

Limits
------
    RECEIPTS_QUEUE_MAX   4096   as EngineNode: beyond it the newest receipt is dropped
                                and logged; the device re-sends and gets it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aggregator.consensus.engine import (
    BftAction,
    BftEngine,
    FromPeer,
    PeerMessage,
    Refused,
    Send,
)
from aggregator.engine import Committed, Receipt
from aggregator.net.engine_node import (
    ReceiptOutbox,
    admission_for,
    registry_refusal,
    stored_block,
)
from aggregator.net.ports import Admission, CommitReceipt

from .links import Links

CODE_FAILED = "cluster.node"
RECANCEL_S = 0.5

log = logging.getLogger("gridledger.cluster")


class ClusterNode:
    def __init__(self, engine: BftEngine, links_factory: Callable[[ClusterNode], Links],
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock
        self.links = links_factory(self)
        self._outbox = ReceiptOutbox()
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self.blocks_committed = 0
        self.failed = False

    async def start(self) -> None:
        await self.links.start()
        self._guarded(lambda: self.engine.start(self._clock()))
        self._timer = asyncio.get_running_loop().create_task(self._timers())

    async def shutdown(self) -> None:
        while self._timer is not None and not self._timer.done():
            self._timer.cancel()
            await asyncio.wait([self._timer], timeout=RECANCEL_S)
        self._timer = None
        await self.links.shutdown()

    # -- ports.Node ---------------------------------------------------------------------

    async def submit(self, message: bytes, transport: str) -> Admission:
        if self.failed:
            return Admission.rejected(CODE_FAILED, "this node stopped; send to another")
        try:
            sub = self.engine.submit_message(message, self._clock())
        except Exception:
            self._fail()
            return Admission.rejected(CODE_FAILED, "this node stopped; send to another")
        if sub.receipt is not None:
            self._emit(CommitReceipt(sub.device_id, sub.receipt))
        self._guarded(self.engine.take_outgoing)
        self._wake.set()
        return admission_for(sub)

    async def receipts(self) -> AsyncIterator[CommitReceipt]:
        async for item in self._outbox.stream():
            yield item

    @property
    def dropped_receipts(self) -> int:
        return self._outbox.dropped

    def status(self) -> dict[str, object]:
        shown = self.engine.status()
        shown["node_id"] = self.engine.signer.node_id
        shown["peers"] = self.links.status()
        shown["failed"] = self.failed
        return shown

    def submit_registry(self, tx: bytes) -> Admission:
        refusal = registry_refusal(tx)
        if refusal is not None:
            return refusal
        if self.failed:
            return Admission.rejected(CODE_FAILED, "this node stopped; send to another")
        sub = self.engine.submit(tx, self._clock())
        self._guarded(self.engine.take_outgoing)
        self._wake.set()
        return admission_for(sub)

    def block(self, height: int) -> dict[str, object] | None:
        return stored_block(self.engine.store, height)

    # -- peers and timers ---------------------------------------------------------------

    def on_peer(self, peer_id: str, message: PeerMessage) -> None:
        self._guarded(lambda: self.engine.step(FromPeer(peer_id, message), self._clock()))
        self._wake.set()

    async def _timers(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            wait_s = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()
            self._wake.clear()
            self._guarded(lambda: self.engine.handle_timeout(self._clock()))
            if self.failed:
                return

    def _guarded(self, call: Callable[[], list[BftAction]]) -> None:
        if self.failed:
            return
        try:
            actions = call()
        except Exception:
            self._fail()
            return
        self._perform(actions)

    def _fail(self) -> None:
        self.failed = True
        log.exception("engine.failed", extra={"fields": {"node": self.engine.signer.node_id}})

    def _perform(self, actions: list[BftAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.links.send(action.to, action.message)
            elif isinstance(action, Receipt):
                self._emit(CommitReceipt(action.device_id, action.data))
            elif isinstance(action, Committed):
                self.blocks_committed += 1
                log.debug("block.committed", extra={"fields": {
                    "height": action.block.height, "txs": len(action.results)}})
            elif isinstance(action, Refused):
                # counted by the engine (status: consensus.refused_by_code)
                detail = f"signed as {action.signer}" if action.signer else ""
                self.links.refuse(action.node_id or "?", action.code, detail, count=False)

    def _emit(self, item: CommitReceipt) -> None:
        self._outbox.put(item)
