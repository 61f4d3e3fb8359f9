"""Signature verification off the event loop: collect for a few ms, verify on both cores.

Theory of operation
-------------------
`check(message, registrar key, now, revoked)` runs `edge.portable.verify.verify_message`
with OpenSSL (`edge.crypto.verify`): COSE structure, batch, certificate chain to the
registrar key, validity, revocation, batch signature, meters.  It never raises: the
result is a small picklable `Checked` (ok, device, seq, code, reason).

`BatchingVerifier.verify(message)` queues the message and returns when its check is
done.  The first message of a window starts a timer of `window_ms`; when it fires, or
when `batch_max` messages wait, the window is split into one chunk per worker and the
chunks go to a `ProcessPoolExecutor` (forkserver, so the workers do not inherit the
event loop's threads).  One round trip to a worker then carries many checks, which is
what makes the pool pay: a single ES256 check is ~0.1 ms, a round trip about as much.
`InlineVerifier` checks in the caller's thread, for tests and as the baseline.
If a worker dies, the messages of its chunk are answered `net.node` and the pool is
replaced, so one crash does not disable verification.

Limits
------
    WINDOW_MS           2     latency a message may wait for company; well under the
                              CoAP ACK timeout (2 s) and invisible next to a block time.
    BATCH_MAX           128   messages per window; a full window is ~13 ms of work per core.
    WORKERS             2     the machines we target have two cores (DESIGN "Defaults").

`python -m aggregator.net.verifier` measures single-process against pool rates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge import crypto
from edge.portable import verify as verify_mod
from edge.portable.errors import GridLedgerError

from .ports import CODE_NODE

R = TypeVar("R")
WINDOW_MS = 2
BATCH_MAX = 128
WORKERS = 2

log = logging.getLogger("gridledger.net")


@dataclass(frozen=True)
class Checked:
    """The verdict on one message; `code` is empty when it verified."""

    ok: bool
    device_id: str = ""
    seq: int = -1
    code: str = ""
    reason: str = ""


def check(
    message: bytes, registrar_public_key: bytes, now_s: int, revoked: frozenset[str]
) -> Checked:
    """Verify one message completely; every failure becomes a code, never an exception."""
    try:
        verified = verify_mod.verify_message(
            message, registrar_public_key, now_s, crypto.verify, revoked=set(revoked)
        )
    except GridLedgerError as exc:
        return Checked(False, code=exc.code, reason=exc.message)
    except Exception as exc:  # a bug in a decoder: say so, do not crash the node
        return Checked(False, code=CODE_NODE, reason=type(exc).__name__)
    batch = verified.batch
    return Checked(True, batch.device_id, batch.seq)


def check_many(
    messages: Sequence[bytes], registrar_public_key: bytes, now_s: int, revoked: frozenset[str]
) -> list[Checked]:
    """A worker's share of a window (module level, so the pool can pickle it)."""
    return [check(m, registrar_public_key, now_s, revoked) for m in messages]


def _warm_up() -> int:
    return 0


def _load(work: object) -> None:
    """A worker's initializer: `work` arrives pickled by name, so unpickling it has
    already imported its module (for the precheck pool, the whole ledger, ~0.1 s)."""


class InlineVerifier:
    """Checks in the caller's thread: the single-process baseline."""

    def __init__(
        self,
        registrar_public_key: bytes,
        clock: Callable[[], float] = time.time,
        revoked: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self._key = registrar_public_key
        self._clock = clock
        self._revoked = revoked

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def verify(self, message: bytes) -> Checked:
        return check(message, self._key, int(self._clock()), self._revoked())


Work = Callable[[Sequence[bytes], bytes, int, frozenset[str]], list[R]]


class BatchingPool(Generic[R]):
    """Collects messages for `window_ms` and runs `work` on them in a pool of `workers`.

    `work(messages, registrar key, now_s, revoked)` must be a module-level function (the
    pool pickles it) returning one result per message; `failed(reason)` stands in for the
    results of a chunk the pool could not run.
    """

    def __init__(
        self,
        work: Work[R],
        failed: Callable[[str], R],
        registrar_public_key: bytes,
        clock: Callable[[], float] = time.time,
        revoked: Callable[[], frozenset[str]] = frozenset,
        workers: int = WORKERS,
        window_ms: float = WINDOW_MS,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self._work = work
        self._failed = failed
        self._key = registrar_public_key
        self._clock = clock
        self._revoked = revoked
        self._workers = workers
        self._window_s = window_ms / 1000
        self._batch_max = batch_max
        self._pending: list[tuple[bytes, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.windows = 0
        self.checked = 0

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        return concurrent.futures.ProcessPoolExecutor(
            self._workers, mp_context=context, initializer=_load, initargs=(self._work,))

    async def start(self) -> None:
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        # Start every worker now, not on the first message; each imports `work`'s
        # module as it starts (`_load`), even one the warm-up calls do not reach.
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _warm_up) for _ in range(self._workers))
        )

    async def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    async def run(self, message: bytes) -> R:
        if self._pool is None:
            raise RuntimeError("BatchingPool.run before start()")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        if len(self._pending) >= self._batch_max:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        window, self._pending = self._pending, []
        if not window:
            return
        self.windows += 1
        size = -(-len(window) // self._workers)
        for start in range(0, len(window), size):
            task = asyncio.get_running_loop().create_task(self._run(window[start:start + size]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, chunk: list[tuple[bytes, asyncio.Future[R]]]) -> None:
        messages = [message for message, _ in chunk]
        now_s = int(self._clock())
        loop = asyncio.get_running_loop()
        try:
            assert self._pool is not None
            results = await loop.run_in_executor(
                self._pool, self._work, messages, self._key, now_s, self._revoked()
            )
        except Exception as exc:  # the pool broke (a worker died): fail these, not the node
            log.warning("pool.chunk_failed", extra={"fields": {"error": repr(exc)}})
            if isinstance(exc, concurrent.futures.process.BrokenProcessPool) and self._pool:
                log.error("verifier.pool_broken", extra={"fields": {"error": str(exc)}})
                broken, self._pool = self._pool, self._new_pool()
                broken.shutdown(wait=False)
            for _, future in chunk:
                if not future.done():
                    future.set_result(self._failed(type(exc).__name__))
            return
        self.checked += len(results)
        for (_, future), result in zip(chunk, results, strict=True):
            if not future.done():
                future.set_result(result)


def _failed_check(reason: str) -> Checked:
    return Checked(False, code=CODE_NODE, reason=reason)


class BatchingVerifier(BatchingPool[Checked]):
    """A `BatchingPool` of full checks (`check_many`)."""

    def __init__(
        self,
        registrar_public_key: bytes,
        clock: Callable[[], float] = time.time,
        revoked: Callable[[], frozenset[str]] = frozenset,
        workers: int = WORKERS,
        window_ms: float = WINDOW_MS,
        batch_max: int = BATCH_MAX,
    ) -> None:
        super().__init__(check_many, _failed_check, registrar_public_key, clock, revoked,
                         workers, window_ms, batch_max)

    async def verify(self, message: bytes) -> Checked:
        return await self.run(message)


# -- measurement -------------------------------------------------------------------------


def _sample_messages(count: int, now_s: int) -> tuple[bytes, list[bytes]]:
    """`count` distinct signed batches from 16 devices of a throw-away registrar."""
    from edge.portable import batch as batch_mod
    from edge.portable import cwt

    registrar = crypto.SigningKey.generate()
    devices = []
    for index in range(16):
        key = crypto.SigningKey.generate()
        claims = cwt.DeviceCertificate(
            "bench", f"gw-{index:04d}", key.public_key(), now_s - 60, now_s + 86400, []
        )
        devices.append((key, cwt.issue(claims, registrar.public_key(), registrar.sign)))
    messages = []
    for seq in range(count):
        key, cert = devices[seq % len(devices)]
        records = [batch_mod.Record("1-0:1.8.0", 1_000_000 + seq, "J")]
        group = batch_mod.MeterGroup("M-1", now_s - 1, records)
        item = batch_mod.Batch(f"gw-{seq % len(devices):04d}", seq, now_s, True, [group])
        messages.append(batch_mod.sign(item, key.sign, cert))
    return registrar.public_key(), messages


async def _rate(verifier: InlineVerifier | BatchingVerifier, messages: list[bytes]) -> float:
    await verifier.start()
    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(verifier.verify(m) for m in messages))
        elapsed = time.perf_counter() - started
    finally:
        await verifier.shutdown()
    if not all(r.ok for r in results):
        raise RuntimeError("a sample message did not verify")
    return len(messages) / elapsed


def measure(count: int = 4000) -> dict[str, float]:
    """Messages verified per second: inline in one process, and through the pool."""
    now_s = int(time.time())
    key, messages = _sample_messages(count, now_s)
    started = time.perf_counter()
    check_many(messages, key, now_s, frozenset())
    plain_per_s = count / (time.perf_counter() - started)
    return {
        "messages": count,
        "plain_loop_per_s": plain_per_s,
        "inline_per_s": asyncio.run(_rate(InlineVerifier(key), messages)),
        "pool_per_s": asyncio.run(_rate(BatchingVerifier(key), messages)),
    }


if __name__ == "__main__":
    import json

    print(json.dumps({k: round(v) for k, v in measure().items()}))
