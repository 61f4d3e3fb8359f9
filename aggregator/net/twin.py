"""An in-memory node behind the `ports.Node` interface, for tests and demos of the shell.

It verifies for real (`verifier.InlineVerifier` or `verifier.BatchingVerifier`: COSE,
certificate chain to a registrar key, revocation, meters), keeps a bounded mempool
deduplicated on (device, seq), "commits" the whole mempool every `block_interval_s` (or
when `commit()` is called) at the next height, and signs real receipts
(`edge.portable.receipt`) with its node key.  No rules, no storage, no consensus: the
ledger core is `aggregator.app`.

Codes it gives besides the verifier's: `rule.replay` (seq already committed),
`mempool.duplicate` (seq already waiting), and overload when the mempool is full.

Limits
------
    MEMPOOL_MAX          1024    batches waiting for a block
    RECEIPTS_QUEUE_MAX   4096    receipts not yet taken by the shell; commit waits beyond
    COMMITTED_SEQS_MAX   4096    seqs remembered per device for replay checks
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from edge import crypto
from edge.portable import receipt

from .ports import Admission, CommitReceipt
from .verifier import Checked, InlineVerifier

MEMPOOL_MAX = 1024
RECEIPTS_QUEUE_MAX = 4096
COMMITTED_SEQS_MAX = 4096


class Verifier(Protocol):
    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def verify(self, message: bytes) -> Checked: ...


class TwinNode:
    def __init__(
        self,
        registrar_public_key: bytes,
        node_key: crypto.SigningKey,
        node_id: str = "node-0",
        verifier: Verifier | None = None,
        mempool_max: int = MEMPOOL_MAX,
        block_interval_s: float | None = 0.05,
        retry_after_s: int = 1,
        revoked: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self._verifier = verifier or InlineVerifier(registrar_public_key, revoked=revoked)
        self._node_key = node_key
        self.node_id = node_id
        self._mempool: dict[tuple[str, int], bytes] = {}
        self._mempool_max = mempool_max
        self._committed: dict[str, set[int]] = {}
        self._block_interval_s = block_interval_s
        self._retry_after_s = retry_after_s
        self._out: asyncio.Queue[CommitReceipt] = asyncio.Queue(RECEIPTS_QUEUE_MAX)
        self._ticker: asyncio.Task[None] | None = None
        self.height = 0
        self.batches_committed = 0
        self.submitted: list[bytes] = []
        self.rejects: dict[str, int] = {}

    async def start(self) -> None:
        await self._verifier.start()
        if self._block_interval_s is not None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        await self._verifier.shutdown()

    async def _tick(self) -> None:
        assert self._block_interval_s is not None
        while True:
            await asyncio.sleep(self._block_interval_s)
            if self._mempool:
                await self.commit()

    # -- ports.Node ----------------------------------------------------------------------

    async def submit(self, message: bytes, transport: str) -> Admission:
        checked = await self._verifier.verify(message)
        if not checked.ok:
            return self._reject(Admission.rejected(checked.code, checked.reason))
        key = (checked.device_id, checked.seq)
        if checked.seq in self._committed.get(checked.device_id, ()):
            return self._reject(Admission.rejected("rule.replay", "seq already committed", *key))
        if key in self._mempool:
            return self._reject(Admission.rejected("mempool.duplicate", "seq is waiting", *key))
        if len(self._mempool) >= self._mempool_max:
            return Admission.overloaded(self._retry_after_s)
        self._mempool[key] = message
        self.submitted.append(message)
        return Admission.accepted(*key)

    async def receipts(self) -> AsyncIterator[CommitReceipt]:
        while True:
            yield await self._out.get()

    def status(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "height": self.height,
            "batches_committed": self.batches_committed,
            "mempool_size": len(self._mempool),
            "rejects_by_code": dict(self.rejects),
        }

    # -- the "ledger" --------------------------------------------------------------------

    def _reject(self, admission: Admission) -> Admission:
        self.rejects[admission.code] = self.rejects.get(admission.code, 0) + 1
        return admission

    async def commit(self) -> int:
        """Commit the whole mempool at the next height and emit one receipt per device."""
        block, self._mempool = self._mempool, {}
        self.height += 1
        by_device: dict[str, list[receipt.Entry]] = {}
        for device_id, seq in sorted(block):
            by_device.setdefault(device_id, []).append(receipt.committed(seq, self.height))
            seqs = self._committed.setdefault(device_id, set())
            seqs.add(seq)
            if len(seqs) > COMMITTED_SEQS_MAX:
                seqs.discard(min(seqs))
        self.batches_committed += len(block)
        for device_id, entries in by_device.items():
            for start in range(0, len(entries), receipt.MAX_ENTRIES):
                chunk = entries[start:start + receipt.MAX_ENTRIES]
                data = receipt.sign(self.node_id, device_id, chunk, self._node_key.sign)
                await self._out.put(CommitReceipt(device_id, data))
        return self.height


