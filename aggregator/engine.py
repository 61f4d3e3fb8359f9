"""Consensus engines behind one sans-I/O interface, and `solo`, the single-node engine.

Theory of operation
-------------------
An engine is a state machine fed by the node's asyncio shell.  It owns the mempool and
decides when a block is made; it never reads a clock, a socket or global randomness:

    step(event, now_s) -> [Action]     the one entry point (CometBFT consensus/state.go's
                                       receive loop; TigerBeetle's replica)
    next_deadline() -> float | None    when the shell must call step(Timeout(), now_s)

Events: TxIn(tx, token) — a transaction from MQTT or CoAP, `token` chosen by the shell to
match the answer; Timeout().  A BFT engine adds peer messages (proposals, votes) as more
event kinds behind the same two calls.  Actions, in the order to perform them:

    Answer(token, Submission)    the admission verdict for TxIn `token`: accepted, a
                                 duplicate of a pending tx, rejected with a code (and a
                                 signed receipt for rule.replay), or
                                 full (back-pressure: CoAP 5.03 + Max-Age = retry_after_s;
                                 MQTT simply leaves the device to retry).
    Committed(block, results)    a block is durable in the store (written before the
                                 action is returned), with per-tx results.
    Receipt(device_id, data)     a signed receipt (`edge.portable.receipt`) to publish on
                                 gl/v1/{device}/ack and serve over CoAP.

Receipts report commits, and only those rejections decided after the device's signature
verified (rule.replay): a forged batch must not make a node sign "rejected" for a seq the
genuine device still holds.  The sender of any other rejection learns its code from the
Answer (CoAP diagnostic payload).

`now_s` is Unix time as a float; block time is its integer part, never below the previous
block's.  A block is due when the mempool holds txs_max txs or bytes_max bytes (Fabric's
MaxMessageCount / PreferredMaxBytes: next_deadline() is then already past), or timeout_s
after the oldest pending tx arrived (BatchTimeout); there are no empty blocks.  The solo
engine also offers `submit` (admission only, cheap, never writes) and `handle_timeout`
(cuts every due block) as direct calls, and `handle_timeout_steps`, the same cut as a
generator that pauses (a bare `yield`) while a block executes, before its roots, before
it is stored and while its receipts are signed, so a shell can admit in between
(`app.run_steps` drives one without pausing).
Cutting a block signs its commit with the node key and writes block, results and state
to the injected store in one transaction.

Limits (defaults from the genesis block limits; see EngineLimits)
------
    txs_max, bytes_max     per block, from genesis (2000 txs, 4 MiB).
    timeout_s              block timeout, from genesis (0.2 s).
    mempool_txs_max        4 × txs_max: two blocks in flight plus a burst; beyond it the
                           answer is "full" rather than unbounded queueing.
    mempool_bytes_max      4 × bytes_max, for the same reason.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from edge.portable import cose
from edge.portable import receipt as receipt_mod
from edge.portable.errors import LocalProtocolError

from . import block as block_mod
from . import fastcbor
from . import tx as tx_mod
from .app import (
    OK,
    Application,
    FinalizeRequest,
    FinalizeResult,
    Prechecked,
    Steps,
    TxResult,
    run_steps,
)
from .hotpath import frozen_init
from .rules import DUPLICATE, REPLAY

__all__ = [
    "ACCEPTED",
    "DUPLICATE_PENDING",
    "FULL",
    "REJECTED",
    "Action",
    "Answer",
    "BlockStore",
    "Committed",
    "Counters",
    "Engine",
    "EngineLimits",
    "Event",
    "MemoryBlockStore",
    "NodeSigner",
    "Receipt",
    "SoloEngine",
    "Submission",
    "Timeout",
    "TxIn",
]

ACCEPTED = "accepted"
DUPLICATE_PENDING = "duplicate"
REJECTED = "rejected"
FULL = "full"
MEMPOOL_FULL = "mempool.full"
# Rejections a receipt may report: only those decided after the device's signature
# verified.  Anyone can send a forged batch naming a device and seq; a signed "rejected"
# receipt for it would make the genuine device drop its real batch of that seq.
RECEIPTED_REJECTIONS = frozenset({REPLAY})
RECEIPT_SLICE = 512  # receipts signed between pauses of a cut: ~20 ms of ES256

SignFn = Callable[[bytes], bytes]


# -- events and actions ----------------------------------------------------------------


@dataclass(frozen=True)
class TxIn:
    tx: bytes
    token: object = None


@dataclass(frozen=True)
class Timeout:
    pass


Event = TxIn | Timeout


@frozen_init
@dataclass(frozen=True)
class Submission:
    """The admission verdict for one transaction."""

    status: str
    code: str = OK
    tx_hash: bytes = b""
    device_id: str = ""
    seq: int = -1
    retry_after_s: float = 0.0
    receipt: bytes | None = None


@dataclass(frozen=True)
class Answer:
    token: object
    submission: Submission


@dataclass(frozen=True)
class Committed:
    block: block_mod.Block
    results: tuple[TxResult, ...]
    app_hash: bytes


@frozen_init
@dataclass(frozen=True)
class Receipt:
    device_id: str
    data: bytes


Action = Answer | Committed | Receipt


class Engine(Protocol):
    """What the node shell drives; solo now, Tendermint-style BFT behind the same calls."""

    def step(self, event: Event, now_s: float) -> list[Action]: ...

    def next_deadline(self) -> float | None: ...


class BlockStore(Protocol):
    """Where an engine makes blocks durable (`aggregator.store.Store` or the memory twin)."""

    def save_block(
        self,
        block: block_mod.Block,
        result: FinalizeResult,
        seen_commit: block_mod.Commit,
        app_commit: Callable[[], bytes],
    ) -> bytes: ...

    def last_block(self) -> block_mod.Block | None: ...

    def seen_commit(self, height: int) -> block_mod.Commit | None: ...

    def batch_height(self, device_id: str, seq: int, batch_hash: bytes) -> int | None:
        """Height of the block that committed exactly this signed batch, if any."""
        ...


class MemoryBlockStore:
    """BlockStore in memory, for tests and simulations."""

    def __init__(self) -> None:
        self.blocks: list[block_mod.Block] = []
        self.commits: dict[int, block_mod.Commit] = {}

    def save_block(
        self,
        block: block_mod.Block,
        result: FinalizeResult,
        seen_commit: block_mod.Commit,
        app_commit: Callable[[], bytes],
    ) -> bytes:
        app_hash = app_commit()
        self.blocks.append(block)
        self.commits[block.height] = seen_commit
        return app_hash

    def last_block(self) -> block_mod.Block | None:
        return self.blocks[-1] if self.blocks else None

    def seen_commit(self, height: int) -> block_mod.Commit | None:
        return self.commits.get(height)

    def batch_height(self, device_id: str, seq: int, batch_hash: bytes) -> int | None:
        for stored in self.blocks:
            for raw in stored.txs:
                decoded = tx_mod.decode(raw)
                if decoded.kind == tx_mod.BATCH and _sha256(decoded.body) == batch_hash:
                    return stored.height
        return None


@dataclass(frozen=True)
class NodeSigner:
    """A node's identity and its key: `sign` for blocks, votes and the cluster's
    handshakes (deterministic, RFC 6979), `sign_receipt` for commit receipts, which may
    be signed with a random nonce: a receipt is verified, never compared byte for byte,
    and it is the one signature a node makes per committed batch (OpenSSL's random
    nonce is ~20 % cheaper than deriving one).  Without `sign_receipt`, `sign` signs
    receipts too."""

    node_id: str
    sign: SignFn
    sign_receipt: SignFn | None = None


@dataclass(frozen=True)
class EngineLimits:
    txs_max: int = 2000
    bytes_max: int = 4 * 1024 * 1024
    timeout_s: float = 0.2
    mempool_txs_max: int = 8000
    mempool_bytes_max: int = 16 * 1024 * 1024

    @classmethod
    def from_block_limits(cls, txs_max: int, bytes_max: int, timeout_ms: int) -> EngineLimits:
        return cls(txs_max, bytes_max, timeout_ms / 1000, 4 * txs_max, 4 * bytes_max)

    def check(self) -> None:
        if not 0 < self.txs_max <= block_mod.BLOCK_TXS_MAX:
            raise LocalProtocolError(f"txs_max must be 1..{block_mod.BLOCK_TXS_MAX}")
        if not 0 < self.bytes_max <= block_mod.BLOCK_BYTES_MAX // 2:
            raise LocalProtocolError(f"bytes_max must be 1..{block_mod.BLOCK_BYTES_MAX // 2}")
        if self.timeout_s <= 0 or self.mempool_txs_max < self.txs_max:
            raise LocalProtocolError("timeout must be positive and the mempool hold a block")


@dataclass
class Counters:
    """What the node's status page and metrics show about admission and execution."""

    admitted: int = 0
    rejects_by_code: dict[str, int] = field(default_factory=dict)
    block_rejects_by_code: dict[str, int] = field(default_factory=dict)

    def checked(self, code: str) -> None:
        if code == OK:
            self.admitted += 1
        else:
            self.rejects_by_code[code] = self.rejects_by_code.get(code, 0) + 1

    def executed(self, results: Iterable[TxResult]) -> None:
        for result in results:
            if not result.committed:
                found = self.block_rejects_by_code.get(result.code, 0)
                self.block_rejects_by_code[result.code] = found + 1


# -- the mempool -----------------------------------------------------------------------


class Mempool:
    """Admitted txs in arrival order, bounded in count and bytes, deduplicated by tx hash
    and by (device, seq) so a batch re-sent over the other transport is held once."""

    def __init__(self, txs_max: int, bytes_max: int) -> None:
        self.txs_max = txs_max
        self.bytes_max = bytes_max
        self._txs: OrderedDict[bytes, tuple[bytes, tuple[str, int] | None, float]] = (
            OrderedDict()
        )
        self._keys: set[tuple[str, int]] = set()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._txs)

    def holds(self, tx_hash: bytes, key: tuple[str, int] | None) -> bool:
        return tx_hash in self._txs or (key is not None and key in self._keys)

    def fits(self, size_bytes: int) -> bool:
        return len(self._txs) < self.txs_max and self.size_bytes + size_bytes <= self.bytes_max

    def add(self, tx_hash: bytes, raw: bytes, key: tuple[str, int] | None, now_s: float) -> None:
        self._txs[tx_hash] = (raw, key, now_s)
        if key is not None:
            self._keys.add(key)
        self.size_bytes += len(raw)

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        for tx_hash in tx_hashes:
            entry = self._txs.pop(tx_hash, None)
            if entry is not None:
                self.size_bytes -= len(entry[0])
                if entry[1] is not None:
                    self._keys.discard(entry[1])

    def txs(self) -> list[bytes]:
        return [raw for raw, _, _ in self._txs.values()]

    def oldest_s(self) -> float | None:
        for _, _, arrived_s in self._txs.values():
            return arrived_s
        return None


# -- solo ------------------------------------------------------------------------------


class SoloEngine:
    """One validator: admit, cut, execute, store, sign, receipt."""

    def __init__(
        self,
        app: Application,
        store: BlockStore,
        signer: NodeSigner,
        genesis_hash: bytes,
        genesis_time_s: int,
        limits: EngineLimits | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.signer = signer
        self.limits = limits or EngineLimits()
        self.limits.check()
        self.mempool = Mempool(self.limits.mempool_txs_max, self.limits.mempool_bytes_max)
        last = store.last_block()
        if (last.height if last else 0) != app.state.height:
            raise LocalProtocolError("store and application are at different heights")
        self._last_hash = last.hash() if last else genesis_hash
        self._last_time_s = last.header.time_s if last else genesis_time_s
        self._last_commit = store.seen_commit(last.height) if last else None
        self.counters = Counters()
        self._kid = signer.node_id.encode()
        self._protected = cose.protected_header(self._kid)
        self._sign_receipt_fn = signer.sign_receipt or signer.sign

    def status(self) -> dict[str, object]:
        """A JSON-able summary for the node's HTTP status page."""
        state = self.app.state
        return {
            "chain_id": self.app.config.chain_id,
            "height": state.height,
            "last_block_hash": self._last_hash.hex(),
            "batches_committed": state.batches,
            "readings_committed": state.readings,
            "violations": state.violations,
            "devices": len(state.devices),
            "mempool_txs": len(self.mempool),
            "mempool_bytes": self.mempool.size_bytes,
            "rejects_by_code": dict(sorted(self.counters.rejects_by_code.items())),
            "block_rejects_by_code": dict(sorted(self.counters.block_rejects_by_code.items())),
        }

    # -- the engine interface ---------------------------------------------------------

    def step(self, event: Event, now_s: float) -> list[Action]:
        if isinstance(event, TxIn):
            return [Answer(event.token, self.submit(event.tx, now_s)), *self.handle_timeout(now_s)]
        return self.handle_timeout(now_s)

    def next_deadline(self) -> float | None:
        """When a block is due: at once when one is full, else timeout_s after the
        oldest pending tx; None with an empty mempool."""
        oldest = self.mempool.oldest_s()
        if oldest is None:
            return None
        if self._block_full():
            return oldest
        return oldest + self.limits.timeout_s

    def handle_timeout(self, now_s: float) -> list[Action]:
        """Cut every block that is due at `now_s`."""
        return run_steps(self.handle_timeout_steps(now_s))

    def handle_timeout_steps(self, now_s: float) -> Steps[list[Action]]:
        """`handle_timeout`, pausing (a bare `yield`) while a block executes and while
        its receipts are signed, so the shell can admit in between (`submit` reads only
        committed state and adds to the mempool behind the block being cut).  The block
        is stored in one step with no pause inside, so abandoning the generator loses
        nothing: the txs stay in the mempool for the next cut."""
        actions: list[Action] = []
        while True:
            deadline = self.next_deadline()
            if deadline is None or now_s < deadline:
                return actions
            cut = yield from self.cut_steps(now_s)
            if not cut:
                return actions
            actions.extend(cut)

    def _block_full(self) -> bool:
        mempool, limits = self.mempool, self.limits
        return len(mempool) >= limits.txs_max or mempool.size_bytes >= limits.bytes_max

    # -- admission --------------------------------------------------------------------

    def submit(
        self, raw: bytes, now_s: float, prechecked: Prechecked | None = None
    ) -> Submission:
        """Admit one tx (check_tx and the mempool); never writes: blocks are cut by
        handle_timeout when next_deadline() says one is due."""
        if len(raw) > self.limits.bytes_max:  # could never be put in a block
            self.counters.checked(tx_mod.TxLimitError.code)
            return Submission(REJECTED, tx_mod.TxLimitError.code)
        if not self.mempool.fits(len(raw)):
            return Submission(FULL, MEMPOOL_FULL, retry_after_s=self.limits.timeout_s)
        check = self.app.check_tx(raw, int(now_s), prechecked)
        key = (check.device_id, check.seq) if check.device_id else None
        base = Submission(ACCEPTED, check.code, check.tx_hash, check.device_id, check.seq)
        if check.code == REPLAY:
            height = self._committed_height(raw, check.device_id, check.seq)
            if height is not None:  # counted as what it is: a duplicate, not a replay
                self.counters.checked(DUPLICATE)
                return self._resend_of_committed(base, height)
        self.counters.checked(check.code)
        if check.code == DUPLICATE:
            return self._duplicate_of_committed(base)
        if not check.ok:
            receipt = self._rejected_receipt(check.device_id, check.seq, check.code)
            return replace(base, status=REJECTED, receipt=receipt)
        if self.mempool.holds(check.tx_hash, key):
            return replace(base, status=DUPLICATE_PENDING)
        self.mempool.add(check.tx_hash, raw, key, now_s)
        return base

    def submit_message(
        self, message: bytes, now_s: float, prechecked: Prechecked | None = None
    ) -> Submission:
        """`submit` for a device's COSE_Sign1 as a transport received it; `prechecked`
        is `app.precheck(message, ...)` when a worker pool did it."""
        try:
            raw = tx_mod.encode_batch(message)
        except tx_mod.TxLimitError as exc:
            self.counters.checked(exc.code)
            return Submission(REJECTED, exc.code)
        return self.submit(raw, now_s, prechecked)

    def _duplicate_of_committed(self, base: Submission) -> Submission:
        """The device lost the receipt of its last batch: sign it again."""
        device = self.app.state.devices[base.device_id]
        return self._resend_of_committed(base, device.last_height)

    def _committed_height(self, raw: bytes, device_id: str, seq: int) -> int | None:
        """An older batch sent again (its receipt was lost) is not a replay: the device
        re-sends the exact bytes it stored, so the batch hash finds the block."""
        return self.store.batch_height(device_id, seq, _sha256(tx_mod.decode(raw).body))

    def _resend_of_committed(self, base: Submission, height: int) -> Submission:
        """A committed batch sent again: accept it as a duplicate with a fresh receipt."""
        entry = receipt_mod.committed(base.seq, height)
        data = self._sign_receipt(base.device_id, [entry])
        return Submission(ACCEPTED, DUPLICATE, base.tx_hash, base.device_id, base.seq,
                          receipt=data)

    def _rejected_receipt(self, device_id: str, seq: int, code: str) -> bytes | None:
        if not device_id or seq < 0 or code not in RECEIPTED_REJECTIONS:
            return None
        entry = receipt_mod.rejected(seq, code)
        return self._sign_receipt(device_id, [entry])

    # -- blocks -----------------------------------------------------------------------

    def cut_block(self, now_s: float) -> list[Action]:
        """Make, execute, store and sign one block from the mempool's oldest txs."""
        return run_steps(self.cut_steps(now_s))

    def cut_steps(self, now_s: float) -> Steps[list[Action]]:
        """`cut_block`, pausing while the block executes and its receipts are signed."""
        limits = self.limits
        txs = self.app.prepare_proposal(self.mempool.txs(), limits.txs_max, limits.bytes_max)
        if not txs:
            return []
        height = self.app.state.height + 1
        time_s = max(int(now_s), self._last_time_s)
        result = yield from self.app.finalize_steps(
            FinalizeRequest(height, time_s, tuple(txs), self.signer.node_id))
        yield  # storing the block is one step of its own: no pause inside it
        block = self._build(result)
        chain_id = self.app.config.chain_id
        seen = block_mod.sign_commit(chain_id, height, block.hash(),
                                     [(self.signer.node_id, self.signer.sign)])
        app_hash = self.store.save_block(block, result, seen, self.app.commit)
        self.mempool.remove(r.tx_hash for r in result.results)
        self.counters.executed(result.results)
        self._last_hash, self._last_time_s, self._last_commit = block.hash(), time_s, seen
        yield  # the block is durable; its receipts are signed in slices
        receipts = yield from self._receipt_steps(result)
        return [Committed(block, result.results, app_hash), *receipts]

    def _build(self, result: FinalizeResult) -> block_mod.Block:
        request, state = result.request, result.state
        header = block_mod.Header(
            chain_id=self.app.config.chain_id,
            height=request.height,
            time_s=request.time_s,
            prev_hash=self._last_hash,
            txs_root=block_mod.txs_root(request.txs),
            log_root=state.log_root,
            log_size=state.log_size,
            state_root=result.state_root,
            violations=result.violations,
            proposer=request.proposer,
        )
        return block_mod.Block(header, request.txs, self._last_commit)

    def _receipts(self, result: FinalizeResult) -> list[Action]:
        return run_steps(self._receipt_steps(result))

    def _receipt_steps(self, result: FinalizeResult) -> Steps[list[Action]]:
        """One signed receipt per device in the block (more past MAX_ENTRIES), pausing
        every RECEIPT_SLICE signatures."""
        by_device: dict[str, list[receipt_mod.Entry]] = {}
        height = result.request.height
        for tx_result in result.results:
            if not tx_result.device_id or tx_result.seq < 0:
                continue
            if tx_result.committed:
                entry = receipt_mod.committed(tx_result.seq, height)
            elif tx_result.code == DUPLICATE:
                last_height = result.state.devices[tx_result.device_id].last_height
                entry = receipt_mod.committed(tx_result.seq, last_height)
            elif tx_result.code in RECEIPTED_REJECTIONS:
                entry = receipt_mod.rejected(tx_result.seq, tx_result.code)
            else:
                continue
            by_device.setdefault(tx_result.device_id, []).append(entry)
        receipts: list[Action] = []
        for device_id, entries in by_device.items():
            for i in range(0, len(entries), _PER_RECEIPT):
                if receipts and len(receipts) % RECEIPT_SLICE == 0:
                    yield
                receipts.append(Receipt(device_id, self._sign_receipt(
                    device_id, entries[i : i + _PER_RECEIPT])))
        return receipts

    def _sign_receipt(self, device_id: str, entries: list[receipt_mod.Entry]) -> bytes:
        """`receipt.sign`, at C speed, with the receipt key: a block signs one receipt
        per device in it, and a re-sent or rejected batch gets one of its own."""
        payload = fastcbor.receipt_payload(device_id, entries)
        return fastcbor.sign1(payload, self._kid, self._sign_receipt_fn, self._protected)


_PER_RECEIPT = receipt_mod.MAX_ENTRIES


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
