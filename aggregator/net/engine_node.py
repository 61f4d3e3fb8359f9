"""`ports.Node` over the ledger's consensus engine (`aggregator.engine`, e.g. SoloEngine).

Theory of operation
-------------------
The engine is a sans-I/O state machine owned by the event loop.  `submit` asks it for an
admission verdict (`engine.submit_message`, which runs check_tx and the mempool) and maps
the `Submission` to an `Admission`; a receipt that comes with the verdict (a re-sent
committed batch, a replay) goes out at once.  A block task sleeps until
`engine.next_deadline()` (or until a submission wakes it), calls
`engine.handle_timeout(now)` and publishes the `Receipt` actions it returns.

    Submission            Admission
    accepted              accepted (device, seq)
    duplicate (pending)   rejected mempool.duplicate      CoAP 4.09
    rejected              rejected with the engine's code
    full                  overloaded, retry after ceil(retry_after_s) s

The clock is injected (`clock`), as the engine wants `now` passed in.  Without a pool,
verification runs inside check_tx on the loop.  `EngineNode.with_pool` first runs
`app.precheck` (parsing and both ES256 checks, no state) through a `BatchingPool` on two
worker processes, windowed like the BatchingVerifier, and hands the result to
check_tx, which then does only what needs the state (registry, revocation, replay).
Prechecks finish in any order (chunks on two workers), so messages are admitted strictly
in arrival order through a small reorder queue: a device's seq n+1 must not reach
check_tx before seq n, or n would be refused as a replay.

The block task drives `engine.handle_timeout_steps`, which pauses every few hundred txs
while a block executes, before its roots, before it is stored and while its receipts
are signed; at each pause the loop runs,
so prechecks keep being admitted and the pool keeps being fed during a 2000-tx block
instead of idling behind it (admission reads only committed state, and the mempool
keeps the block's txs until it is stored).

`block(height)` reads a committed block, its stored tx results and its commit from the
engine's store for HTTP GET /v1/blocks/{height}.  Like every engine call it runs on the
loop (the HTTP handlers are coroutines), so it sees a block either wholly committed or
not at all: the engine stores a block in one step with no pause inside.

Limits
------
    RECEIPTS_QUEUE_MAX   4096   receipts not yet taken by the shell; beyond it the newest
                                is dropped and logged (the device re-sends and the engine
                                signs its receipt again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import cast

from aggregator import app as app_mod
from aggregator import block as block_mod
from aggregator import engine as engine_mod
from aggregator import store as store_mod
from aggregator import tx as tx_mod
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable.errors import GridLedgerError

from .ports import MESSAGE_BYTES_MAX, Admission, CommitReceipt
from .verifier import WORKERS, BatchingPool

RECEIPTS_QUEUE_MAX = 4096
CODE_DUPLICATE_PENDING = "mempool.duplicate"
CODE_NOT_REGISTRY = "registry.kind"  # a batch sent to the registry door
RECANCEL_S = 0.5

log = logging.getLogger("gridledger.net")


def admission_for(sub: engine_mod.Submission) -> Admission:
    if sub.status == engine_mod.ACCEPTED:
        return Admission.accepted(sub.device_id, sub.seq)
    if sub.status == engine_mod.DUPLICATE_PENDING:
        return Admission.rejected(CODE_DUPLICATE_PENDING, "waiting for a block",
                                  sub.device_id, sub.seq)
    if sub.status == engine_mod.FULL:
        return Admission.overloaded(math.ceil(sub.retry_after_s))
    return Admission.rejected(sub.code, "", sub.device_id, sub.seq)


def tx_json(raw: bytes) -> dict[str, object]:
    """Kind and hash of a stored transaction; for a batch also its device id and seq."""
    entry: dict[str, object] = {"hash": tx_mod.tx_hash(raw).hex(), "bytes": len(raw)}
    try:
        item = tx_mod.decode(raw)
        entry["kind"] = item.kind_name
        if item.kind == tx_mod.BATCH:
            _, found = batch_mod.open_message(item.body)
            entry["device_id"], entry["seq"] = found.device_id, found.seq
    except GridLedgerError as exc:  # committed as a rejection: show why it does not parse
        entry.setdefault("kind", "unknown")
        entry["error"] = exc.code
    return entry


_VIOLATION_KEYS = ("code", "device_id", "seq", "meter_id", "obis", "detail")
_RESULT_KEYS = ("tx_hash", "code", "device_id", "seq", "first_leaf", "leaf_count",
                "violations")


def result_json(row: object) -> dict[str, object]:
    """One stored result row (`app.TxResult.to_obj`) with hashes in hex."""
    if not isinstance(row, list) or len(row) != len(_RESULT_KEYS):
        return {"error": "store.results"}
    found = dict(zip(_RESULT_KEYS, row, strict=True))
    tx_hash = found["tx_hash"]
    found["tx_hash"] = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
    violations = found["violations"]
    found["violations"] = [
        dict(zip(_VIOLATION_KEYS, v, strict=False)) for v in violations
    ] if isinstance(violations, list) else []
    return found


def block_json(
    block: block_mod.Block, results: object, commit: block_mod.Commit | None
) -> dict[str, object]:
    """GET /v1/blocks/{height}: `Block.to_json` with each tx's kind (and device and seq
    for a batch), the results in tx order, and the block's own commit signatures."""
    shown = block.to_json()
    shown["txs"] = [tx_json(raw) for raw in block.txs]
    shown["results"] = [result_json(r) for r in results] if isinstance(results, list) else []
    shown["commit"] = None if commit is None else commit.to_json()
    return shown


def precheck_many(
    messages: Sequence[bytes], registrar_public_key: bytes, now_s: int, revoked: frozenset[str]
) -> list[app_mod.Prechecked | None]:
    """`app.precheck` of a window of messages, in a worker process (revocation is the
    application's business, from its registry, so `revoked` is not used here)."""
    return [app_mod.precheck(m, registrar_public_key, now_s, crypto.verify) for m in messages]


def _no_precheck(reason: str) -> app_mod.Prechecked | None:
    return None  # check_tx then verifies on its own


def registry_refusal(tx: bytes) -> Admission | None:
    """Why a registry door refuses `tx` (undecodable, or a batch), or None to admit it."""
    try:
        kind = tx_mod.decode(tx).kind
    except GridLedgerError as exc:  # TxError, or the CBOR errors under it
        return Admission.rejected(exc.code, exc.message)
    if kind not in tx_mod.STATEMENT_KINDS:
        return Admission.rejected(CODE_NOT_REGISTRY, "batches do not go here")
    return None


def stored_block(store: object, height: int) -> dict[str, object] | None:
    """A committed block as JSON, or None above the tip or below 1 (ports.BlockSource).
    Only the SQLite store keeps results by height; an engine on another store has none."""
    if not isinstance(store, store_mod.Store) or not 1 <= height <= store.height:
        return None
    return block_json(store.block(height), store.results(height), store.seen_commit(height))


class ReceiptOutbox:
    """Receipts signed for devices, waiting for the shell to publish them; beyond
    RECEIPTS_QUEUE_MAX the newest is dropped, counted and logged (the device re-sends and
    is answered with a fresh receipt)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[CommitReceipt] = asyncio.Queue(RECEIPTS_QUEUE_MAX)
        self.dropped = 0

    def put(self, item: CommitReceipt) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("receipt.dropped", extra={"fields": {"device": item.device_id}})

    async def stream(self) -> AsyncIterator[CommitReceipt]:
        while True:
            yield await self._queue.get()


class _Slot:
    """A message between arrival and admission (`EngineNode` with a precheck pool)."""

    def __init__(self, message: bytes, admission: asyncio.Future[Admission]) -> None:
        self.message = message
        self.admission = admission
        self.prechecked: app_mod.Prechecked | None = None
        self.ready = False
        self.abandoned = False


class EngineNode:
    def __init__(
        self,
        engine: engine_mod.SoloEngine,
        clock: Callable[[], float] = time.time,
        precheck_pool: BatchingPool[app_mod.Prechecked | None] | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._prechecks = precheck_pool
        self._order: deque[_Slot] = deque()
        self._outbox = ReceiptOutbox()
        self._wake = asyncio.Event()
        self._blocks: asyncio.Task[None] | None = None
        self.prechecked = 0

    @classmethod
    def with_pool(
        cls, engine: engine_mod.SoloEngine, registrar_public_key: bytes,
        clock: Callable[[], float] = time.time, workers: int = WORKERS,
    ) -> EngineNode:
        """An EngineNode whose signature checks run windowed in `workers` processes."""
        pool = BatchingPool(precheck_many, _no_precheck, registrar_public_key, clock,
                            workers=workers)
        return cls(engine, clock, pool)

    async def start(self) -> None:
        if self._prechecks is not None:
            await self._prechecks.start()
        self._blocks = asyncio.get_running_loop().create_task(self._cut_blocks())

    async def shutdown(self) -> None:
        while self._blocks is not None and not self._blocks.done():
            self._blocks.cancel()
            await asyncio.wait([self._blocks], timeout=RECANCEL_S)
        self._blocks = None
        if self._prechecks is not None:
            await self._prechecks.shutdown()

    # -- ports.Node ----------------------------------------------------------------------

    async def submit(self, message: bytes, transport: str) -> Admission:
        if self._prechecks is None:
            return self._admit(message, None)
        slot = _Slot(message, asyncio.get_running_loop().create_future())
        self._order.append(slot)
        try:
            if len(message) <= MESSAGE_BYTES_MAX:
                slot.prechecked = await self._prechecks.run(message)
                self.prechecked += slot.prechecked is not None
        except BaseException:
            slot.abandoned = True
            raise
        finally:
            slot.ready = True
            self._admit_in_order()
        return await slot.admission

    def _admit_in_order(self) -> None:
        """Admit finished prechecks in arrival order: the pool's chunks finish in any
        order, and a device's seq n+1 admitted before seq n would make n a replay."""
        while self._order and self._order[0].ready:
            slot = self._order.popleft()
            if slot.abandoned:
                continue
            admission = self._admit(slot.message, slot.prechecked)
            if not slot.admission.done():
                slot.admission.set_result(admission)

    def _admit(self, message: bytes, prechecked: app_mod.Prechecked | None) -> Admission:
        sub = self._engine.submit_message(message, self._clock(), prechecked)
        if sub.receipt is not None:
            self._emit(CommitReceipt(sub.device_id, sub.receipt))
        self._wake.set()
        return admission_for(sub)

    async def receipts(self) -> AsyncIterator[CommitReceipt]:
        async for item in self._outbox.stream():
            yield item

    @property
    def dropped_receipts(self) -> int:
        return self._outbox.dropped

    def status(self) -> dict[str, object]:
        return self._engine.status()

    def submit_registry(self, tx: bytes) -> Admission:
        """Admit a registry statement or a class II/III record (ports.RegistrySink);
        batches go by submit."""
        refusal = registry_refusal(tx)
        if refusal is not None:
            return refusal
        sub = self._engine.submit(tx, self._clock())
        self._wake.set()
        return admission_for(sub)

    def block(self, height: int) -> dict[str, object] | None:
        """A committed block as JSON (`stored_block`)."""
        return stored_block(self._engine.store, height)

    # -- blocks --------------------------------------------------------------------------

    async def _cut_blocks(self) -> None:
        while True:
            deadline = self._engine.next_deadline()
            wait_s = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()
            self._wake.clear()
            self._perform(await self._run_steps(self._engine.handle_timeout_steps(self._clock())))

    @staticmethod
    async def _run_steps(steps: app_mod.Steps[list[engine_mod.Action]]
                         ) -> list[engine_mod.Action]:
        """Drive the engine's pausing cut, letting the loop run at each pause: prechecks
        return and are admitted, the pool gets its next windows, transports answer."""
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return cast("list[engine_mod.Action]", done.value)
            await asyncio.sleep(0)

    def _perform(self, actions: list[engine_mod.Action]) -> None:
        for action in actions:
            if isinstance(action, engine_mod.Receipt):
                self._emit(CommitReceipt(action.device_id, action.data))
            elif isinstance(action, engine_mod.Committed):
                log.debug("block.committed", extra={"fields": {
                    "height": action.block.header.height, "txs": len(action.results)}})

    def _emit(self, item: CommitReceipt) -> None:
        self._outbox.put(item)
