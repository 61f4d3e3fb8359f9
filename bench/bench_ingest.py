"""Whole-node ingest: verified-and-committed readings/s against this machine's verify rate.

Theory of operation
-------------------
A registrar (`certs.registrar.Registrar`) in a temporary directory certifies `--devices`
simulated gateways, one meter each; each gateway signs `--batches` batches (seq 1, 2, ...)
with its kcwt certificate, and they are pushed in rounds: every device's seq 1, then
every device's seq 2, and so on, as a fleet reporting on a schedule would.  The default,
three batches a device, makes the run long enough that the first block's fill and the
last block's BatchTimeout do not dominate it, and takes every device through both its
first batch (enrolled on first sight) and later ones (found in the registry).  Nothing
is cached between runs.  Then, in one run on the same messages:

    limit     `edge.portable.verify.verify_message` with `edge.crypto.verify` (COSE parse,
              certificate ES256, batch ES256) in one process and in two processes, both
              before and after the node runs.  The best of the four is the limit:
              admission cannot beat it, and a shared host that slows down during the
              run does not flatter the ratio.
    direct    a real node directory (`aggregator.node.init` / `open_node`, the collector
              set as `aggregator run` sets it) behind `EngineNode.with_pool` (prechecks
              on two worker processes), fed through `EngineNode.submit` with
              `--inflight` submissions at a time (default 1024: 10,000 devices
              uploading at once do not queue politely; the mempool holds 8,000): the
              ledger without a transport.
    coap      the same behind `NodeServer`, fed over CoAP on loopback by `--inflight`
              aiocoap client endpoints (default 64), one request each at a time, in a
              process of their own (the devices are not the node; on two cores they
              still share the CPU with it, and each endpoint costs them CPU).

    shell     with the CoAP path: the same devices post one round of batches to
              `NodeServer` around `AcceptingNode`, which accepts each at once and does
              nothing else: what the CoAP shell (aiocoap, the ingress, the answer) costs
              a request on its own.

For the node runs: committed readings/s (one reading per meter per batch, from the
node's status `readings_committed`, sampled every SAMPLE_S, from the first submission to
the sample that shows the last reading; this burst figure includes filling the pipeline
once, the first block's commit latency), the sustained rate (the readings committed
after the first block, over the time from the first block's commit to the last), commit
latency p50/p99 (a batch's first arrival
at `node.submit` to the first commit receipt naming its seq out of `node.receipts()`;
the receipts are read after the run, so reading them costs the node nothing), and bytes
on disk a reading (ledger.sqlite and its WAL over the readings committed).

Where the CPU went (psutil, over the same spans): for the limit's best run, the CPU
seconds spent per message; for each node run, per batch, the node process's own CPU
(event loop, engine, SQLite, receipts, transport) and its worker processes' (the
prechecks), with the CoAP devices' process apart (it reports its own CPU), and how many
of the machine's cores were busy.  The ratio is, give or take the pipeline's fill and
drain, the limit's CPU per message over the path's per batch, times the path's busy
cores over the limit's; the line "accounted ratio" prints that product, so a change
can be judged by which term it moved.

The goal (committed >= 0.6 of the limit) is judged on the direct path: it is the node's
own pipeline, which every transport hands batches to.  The CoAP path is reported beside
it with the most it could reach on this machine, the limit's CPU a message over the
direct path's CPU a batch plus the shell's a request: a bound even with the devices on
other machines, as the shell measured alone publishes no receipts.

A single run varies by a few hundredths on a shared host; `--runs N` repeats the whole
measurement (fresh keys, the limit before and after, the node) N times, prints each
run's ratio and their median, and judges the goal on the median.

    python bench/bench_ingest.py [--devices 10000] [--batches 3] [--transport coap|direct]
                                 [--inflight N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import aiocoap
import psutil
from cryptography.hazmat.backends.openssl import backend as openssl_backend

from aggregator import node as node_mod
from aggregator.net.engine_node import EngineNode
from aggregator.net.ports import Admission, CommitReceipt
from aggregator.net.server import NetConfig, NodeServer
from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cose
from edge.portable import receipt as receipt_mod
from edge.portable.verify import verify_message
from gridledger.machine import summary

METER = "M1"
CHAIN_ID = "gl-bench-ingest"
CHUNK = 256            # messages per pool task in the limit measurement
SAMPLE_S = 0.01        # status sampling period
RUN_TIMEOUT_S = 120.0  # a node run that has not committed everything by then is reported
GOAL = 0.6
INFLIGHT = {"direct": 1024, "coap": 64}  # per transport, unless --inflight says
BATCHES = 3            # a device's batches in a run, unless --batches says
ENERGY_STEP_J = 3_600_000  # what a meter's energy register grows by between batches


@dataclass(frozen=True)
class Signed:
    device_id: str
    seq: int
    message: bytes


def sign_batches(ca_dir: Path, devices: int, now_s: int, batches: int = 1
                 ) -> tuple[bytes, list[Signed]]:
    """`batches` signed batches of each of `devices` new devices, in rounds of seq."""
    registrar = Registrar.init(ca_dir)
    rounds: list[list[Signed]] = [[] for _ in range(batches)]
    for n in range(devices):
        device_id = f"gw-{n:05d}"
        issued = registrar.issue(device_id, now_s - 60, meters=(METER,))
        assert issued.device_key is not None
        for seq in range(1, batches + 1):
            sent_s = now_s - batches + seq
            records = [batch_mod.Record("1-0:1.8.0", 1_000_000 + n + seq * ENERGY_STEP_J, "J"),
                       batch_mod.Record("1-0:1.7.0", 512.5, "W")]
            group = batch_mod.MeterGroup(METER, sent_s - 1, records)
            item = batch_mod.Batch(device_id, seq, sent_s, True, [group])
            message = batch_mod.sign(item, issued.device_key.sign, issued.certificate)
            rounds[seq - 1].append(Signed(device_id, seq, message))
    return registrar.public_key, [s for round_ in rounds for s in round_]


# -- CPU accounting -------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds of this process, of its descendants (the workers) but a load generator
    kept apart, and of the whole machine (busy time over all cores), with the wall clock:
    totals so far from `cpu_sample`, and what one span cost as `after - before`."""

    own_s: float
    workers_s: float
    machine_s: float
    wall_s: float

    def __sub__(self, before: CpuUse) -> CpuUse:
        return CpuUse(self.own_s - before.own_s, self.workers_s - before.workers_s,
                      self.machine_s - before.machine_s, self.wall_s - before.wall_s)

    @property
    def cores_busy(self) -> float:
        return self.machine_s / self.wall_s if self.wall_s > 0 else 0.0

    def each_us(self, count: int) -> tuple[float, float]:
        """(own, workers) µs of CPU for each of `count` items done over the span."""
        return self.own_s / count * 1e6, self.workers_s / count * 1e6


def _process_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:  # gone since it was listed
        return 0.0
    return float(times.user + times.system)


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest time is already inside user time on Linux: leave it out of the total
    total = sum(getattr(times, f) for f in times._fields if not f.startswith("guest"))
    return float(total - idle)


def cpu_sample(apart: frozenset[int] = frozenset()) -> CpuUse:
    """The totals so far; `apart` (a load generator that may exit before the span ends)
    is left out of the descendants."""
    me = psutil.Process()
    children = me.children(recursive=True)
    return CpuUse(
        own_s=_process_s(me),
        workers_s=sum(_process_s(c) for c in children if c.pid not in apart),
        machine_s=_machine_busy_s(),
        wall_s=time.perf_counter(),
    )


# -- the limit ----------------------------------------------------------------------------


def _verify_chunk(args: tuple[list[bytes], bytes, int]) -> int:
    messages, registrar_key, now_s = args
    for message in messages:
        verify_message(message, registrar_key, now_s, crypto.verify)
    return len(messages)


@dataclass(frozen=True)
class Rate:
    """Messages verified a second, and what the span cost."""

    per_s: float
    cpu: CpuUse


def verify_rate(messages: list[bytes], registrar_key: bytes, now_s: int, workers: int) -> Rate:
    chunks = [(messages[i:i + CHUNK], registrar_key, now_s)
              for i in range(0, len(messages), CHUNK)]
    if workers == 1:
        _verify_chunk(chunks[0])  # warm up
        return _timed(lambda: sum(map(_verify_chunk, chunks)))
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(_verify_chunk, chunks[:workers]))  # start and warm the workers
        return _timed(lambda: sum(pool.map(_verify_chunk, chunks)))


def _timed(verify_all: Callable[[], int]) -> Rate:
    before = cpu_sample()
    done = verify_all()
    cpu = cpu_sample() - before
    return Rate(done / cpu.wall_s, cpu)


# -- the node -----------------------------------------------------------------------------


class TimedNode:
    """The node port around an EngineNode, noting when each batch first arrived and when
    each receipt came out; `latencies_s` matches them up after the run."""

    def __init__(self, inner: EngineNode, batch_of: dict[bytes, tuple[str, int]]) -> None:
        self.inner = inner
        self.batch_of = batch_of
        self.sent_s: dict[tuple[str, int], float] = {}
        self.received: list[tuple[float, bytes]] = []

    async def submit(self, message: bytes, transport: str) -> Admission:
        key = self.batch_of.get(message)
        if key is not None:  # a retry after overload keeps its first time
            self.sent_s.setdefault(key, time.perf_counter())
        return await self.inner.submit(message, transport)

    async def receipts(self) -> AsyncIterator[CommitReceipt]:
        async for item in self.inner.receipts():
            self.received.append((time.perf_counter(), item.receipt))
            yield item

    def latencies_s(self) -> list[float]:
        """Each batch's first arrival to the first receipt naming its seq as committed."""
        found: list[float] = []
        for at_s, data in self.received:
            device_id, entries = receipt_mod.parse_payload(cose.parse(data).payload)
            for entry in entries:
                sent = self.sent_s.pop((device_id, entry.seq), None)
                if sent is not None and entry.status == receipt_mod.COMMITTED:
                    found.append(at_s - sent)
        return found

    def status(self) -> dict[str, object]:
        return self.inner.status()


@dataclass(frozen=True)
class Watched:
    """What the status samples showed: readings committed by the end, the CPU spent until
    then (its wall time is when the end came), and when the first block was seen
    committed with how many readings."""

    readings: int
    cpu: CpuUse
    first_s: float = 0.0
    first_readings: int = 0

    @property
    def elapsed_s(self) -> float:
        return self.cpu.wall_s


@dataclass
class Result:
    transport: str
    watched: Watched
    latencies_s: list[float]
    disk_bytes: int
    refused: int
    devices_cpu_s: float = 0.0
    """CPU the CoAP devices' process spent sending (it reports it itself)."""

    @property
    def readings(self) -> int:
        return self.watched.readings

    @property
    def rate(self) -> float:
        w = self.watched
        return w.readings / w.elapsed_s if w.elapsed_s > 0 else 0.0

    @property
    def sustained_rate(self) -> float:
        w = self.watched
        span_s = w.elapsed_s - w.first_s
        return (w.readings - w.first_readings) / span_s if span_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        values = sorted(self.latencies_s)
        if not values:
            return float("nan")
        if q == 0.5:
            return statistics.median(values) * 1000
        return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def _watch(node: TimedNode, total: int, apart: frozenset[int]) -> Watched:
    """Sample status until `total` readings are committed (or the run times out); the
    CPU spent meanwhile, leaving out the processes `apart` (the devices)."""
    before = cpu_sample(apart)
    start_s = before.wall_s
    readings = 0
    first: tuple[float, int] | None = None
    while time.perf_counter() - start_s < RUN_TIMEOUT_S:
        readings = int(node.status()["readings_committed"])  # type: ignore[call-overload]
        if readings and first is None:
            first = (time.perf_counter() - start_s, readings)
        if readings >= total:
            break
        await asyncio.sleep(SAMPLE_S)
    cpu = cpu_sample(apart) - before
    return Watched(readings, cpu, *(first or (0.0, 0)))


async def _drain(node: TimedNode) -> None:
    async for _ in node.receipts():
        pass


async def _feed_direct(node: TimedNode, signed: list[Signed], inflight: int) -> int:
    queue = iter(signed)
    refused = 0

    async def worker() -> None:
        nonlocal refused
        for item in queue:
            while True:
                answer = await node.submit(item.message, "direct")
                if answer.outcome != "overloaded":
                    break
                await asyncio.sleep(answer.retry_after_s)
            refused += answer.outcome != "accepted"

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return refused


async def post_until_answered(client: aiocoap.Context, uri: str, message: bytes
                              ) -> aiocoap.Message:
    """POST a batch as a device does: after 5.03 wait its Max-Age and send it again."""
    while True:
        request = aiocoap.Message(code=aiocoap.POST, payload=message, uri=uri)
        request.opt.content_format = 18
        answer = await client.request(request).response
        if answer.code != aiocoap.SERVICE_UNAVAILABLE:
            return answer
        await asyncio.sleep(answer.opt.max_age or 1)


async def _post_all(port: int, messages: list[bytes], inflight: int, ready: Connection
                    ) -> tuple[int, float]:
    """`inflight` client endpoints, one request each at a time: aiocoap keeps CoAP's
    NSTART = 1 (RFC 7252 §4.7) per endpoint, so one endpoint would send one at a time.
    Returns the batches refused and the CPU seconds spent from "go" to the last answer."""
    queue = iter(messages)
    refused = 0
    uri = f"coap://127.0.0.1:{port}/gl/v1/up"

    async def worker(client: aiocoap.Context) -> None:
        nonlocal refused
        for message in queue:
            answer = await post_until_answered(client, uri, message)
            refused += answer.code != aiocoap.CHANGED

    clients = [await aiocoap.Context.create_client_context(transports=["udp6"])
               for _ in range(inflight)]
    ready.send("ready")
    await asyncio.to_thread(ready.recv)  # "go"
    cpu_s = time.process_time()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
        cpu_s = time.process_time() - cpu_s
    finally:
        for client in clients:
            await client.shutdown()
    return refused, cpu_s


def coap_devices(port: int, messages: list[bytes], inflight: int, pipe: Connection) -> None:
    """The devices, in a process of their own so their CoAP work is not the node's loop's."""
    pipe.send(asyncio.run(_post_all(port, messages, inflight, pipe)))


async def _feed_coap(port: int, signed: list[Signed], inflight: int,
                     start: Callable[[frozenset[int]], None]) -> tuple[int, float]:
    """Run the devices' process; (batches refused, its CPU seconds sending)."""
    here, there = multiprocessing.get_context("spawn").Pipe()
    devices = multiprocessing.get_context("spawn").Process(
        target=coap_devices, args=(port, [s.message for s in signed], inflight, there))
    devices.start()
    try:
        assert await asyncio.to_thread(here.recv) == "ready"
        assert devices.pid is not None
        start(frozenset({devices.pid}))
        here.send("go")
        refused, cpu_s = await asyncio.to_thread(here.recv)
    finally:
        devices.join(10)
    return int(refused), float(cpu_s)


class AcceptingNode:
    """A node that accepts every batch at once and does nothing else: behind `NodeServer`
    it shows what the CoAP shell (aiocoap, the ingress, the answer) costs on its own."""

    def __init__(self, batch_of: dict[bytes, tuple[str, int]]) -> None:
        self.batch_of = batch_of

    async def submit(self, message: bytes, transport: str) -> Admission:
        return Admission.accepted(*self.batch_of.get(message, ("", -1)))

    async def receipts(self) -> AsyncIterator[CommitReceipt]:
        await asyncio.Event().wait()  # commits nothing, so no receipt ever comes
        return
        yield  # makes this an async generator

    def status(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True)
class ShellCost:
    """CPU a request of the CoAP shell alone: the server process's and the devices'."""

    server_us: float
    devices_us: float


async def shell_run(signed: list[Signed], inflight: int) -> ShellCost:
    """The devices post one round (each device's first batch) to `AcceptingNode`."""
    first_round = [s for s in signed if s.seq == 1]
    node = AcceptingNode({s.message: (s.device_id, s.seq) for s in first_round})
    server = NodeServer(node, NetConfig(node_id="bench-shell", coap_port=0, http_port=0,
                                        embedded_mqtt_port=0, seed=1))
    await server.start()
    spans: list[tuple[frozenset[int], CpuUse]] = []
    try:
        _, devices_cpu_s = await _feed_coap(
            server.ports["coap"], first_round, inflight,
            lambda apart: spans.append((apart, cpu_sample(apart))))
        [(apart, before)] = spans
        cpu = cpu_sample(apart) - before
    finally:
        await server.shutdown()
    requests = len(first_round)
    return ShellCost(cpu.each_us(requests)[0], devices_cpu_s / requests * 1e6)


async def node_run(transport: str, ca_dir: Path, data_dir: Path, signed: list[Signed],
                   inflight: int) -> Result:
    node_mod.init(data_dir, ca_dir, CHAIN_ID, int(time.time()) - 10)
    opened = node_mod.open_node(data_dir)
    node_mod.tune_collector()  # as `aggregator run` does
    inner = EngineNode.with_pool(opened.engine, opened.genesis.registrar_public_key)
    node = TimedNode(inner, {s.message: (s.device_id, s.seq) for s in signed})
    await inner.start()
    server = None
    drain = None
    try:
        if transport == "coap":
            server = NodeServer(node, NetConfig(node_id=opened.node_id, coap_port=0,
                                                http_port=0, embedded_mqtt_port=0, seed=1))
            await server.start()
        else:
            drain = asyncio.get_running_loop().create_task(_drain(node))
        watches: list[asyncio.Task[Watched]] = []

        def start(apart: frozenset[int]) -> None:
            watches.append(asyncio.get_running_loop().create_task(
                _watch(node, len(signed), apart)))

        if server is not None:
            refused, devices_cpu_s = await _feed_coap(server.ports["coap"], signed, inflight,
                                                      start)
        else:
            start(frozenset())
            refused, devices_cpu_s = await _feed_direct(node, signed, inflight), 0.0
        watched = await watches[0]
        await asyncio.sleep(0.2)  # let the last receipts out
    finally:
        if drain is not None:  # a receipt drain that failed says so here
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        if server is not None:
            await server.shutdown()
        await inner.shutdown()
        opened.store.close()
    disk = sum(p.stat().st_size for p in data_dir.glob("ledger.sqlite*"))
    return Result(transport, watched, node.latencies_s(), disk, refused, devices_cpu_s)


# -- the report ---------------------------------------------------------------------------


def machine() -> str:
    return f"{summary()}, {openssl_backend.openssl_version_text()}"


def print_cpu(limit: Rate, limit_us: float, results: Sequence[Result]) -> None:
    """CPU per batch for the limit's best run (`limit_us` a message) and each node run,
    and the ratio they account for (module docstring)."""
    cores = os.cpu_count() or 1
    print(f"\nCPU per batch, µs (cores busy, of {cores}):")
    print(f"  {'limit: verify_message':42} {limit_us:6.0f}  ({limit.cpu.cores_busy:.2f})")
    for r in results:
        cpu = r.watched.cpu
        if not r.readings:
            continue
        batches = r.readings  # one meter a device: a batch is a reading
        node_us, workers_us = cpu.each_us(batches)
        devices_us = r.devices_cpu_s / batches * 1e6
        apart = f"; devices {devices_us:.0f} apart" if r.devices_cpu_s else ""
        print(f"  {r.transport + ': node process + workers':42} {node_us + workers_us:6.0f}  "
              f"({cpu.cores_busy:.2f})  = {node_us:.0f} + {workers_us:.0f}{apart}")
        if node_us + workers_us <= 0 or limit.cpu.cores_busy <= 0:
            print(f"  {'':42} accounted ratio: run too short for the CPU clock's ticks")
            continue
        accounted = limit_us / (node_us + workers_us) * cpu.cores_busy / limit.cpu.cores_busy
        print(f"  {'':42} accounted ratio {accounted:.2f} = {limit_us:.0f}/"
              f"{node_us + workers_us:.0f} × {cpu.cores_busy:.2f}/{limit.cpu.cores_busy:.2f}")


def print_shell(limit_us: float, results: Sequence[Result], shell: ShellCost) -> float | None:
    """The CoAP shell's own cost a request and, beside the direct path's CPU a batch,
    the most CoAP could reach of the limit if the devices ran elsewhere: a bound, since
    the shell measured alone publishes no receipts."""
    print(f"  {'coap shell alone: node process':42} {shell.server_us:6.0f}  "
          f"(a node that accepts at once); devices {shell.devices_us:.0f} apart")
    direct = next((r for r in results if r.transport == "direct" and r.readings), None)
    if direct is None or limit_us <= 0:
        return None
    direct_us = sum(direct.watched.cpu.each_us(direct.readings))
    best = limit_us / (direct_us + shell.server_us)
    print(f"  {'':42} coap at best {best:.2f} = {limit_us:.0f}/"
          f"({direct_us:.0f} + {shell.server_us:.0f}), devices elsewhere")
    return best


@dataclass(frozen=True)
class RunReport:
    """One run's ratios (committed over the limit of the same run) by transport."""

    ratios: dict[str, float]
    sustained: dict[str, float]
    coap_best: float | None = None
    """The most CoAP could reach of the limit, from its shell's cost (`print_shell`)."""


def one_run(devices: int, batches: int, transports: Sequence[str],
            inflight: dict[str, int]) -> RunReport:
    """Sign, measure the limit, run the node on each transport, measure the limit again,
    and print the table."""
    with tempfile.TemporaryDirectory(prefix="gl-bench-ingest-") as tmp:
        now_s = int(time.time())
        start = time.perf_counter()
        registrar_key, signed = sign_batches(Path(tmp) / "ca", devices, now_s, batches)
        print(f"signed {len(signed)} batches of {devices} devices in "
              f"{time.perf_counter() - start:.1f} s")
        messages = [s.message for s in signed]
        before = [verify_rate(messages, registrar_key, now_s, w) for w in (1, 2)]
        results = [asyncio.run(node_run(t, Path(tmp) / "ca", Path(tmp) / f"node-{t}",
                                        signed, inflight[t])) for t in transports]
        shell = (asyncio.run(shell_run(signed, inflight["coap"]))
                 if "coap" in transports else None)
        after = [verify_rate(messages, registrar_key, now_s, w) for w in (1, 2)]
    best = max(*before, *after, key=lambda r: r.per_s)
    limit = best.per_s
    print()
    print(f"{'measure':44} {'readings/s':>10} {'of limit':>8}  notes")
    for workers, rate_before, rate_after in zip((1, 2), before, after, strict=True):
        label = f"verify_message, {workers} process{'es' if workers > 1 else ''}"
        top = max(rate_before.per_s, rate_after.per_s)
        print(f"{label:44} {top:10.0f} {top / limit:8.2f}  "
              f"{rate_before.per_s:.0f} before the node runs, {rate_after.per_s:.0f} after")
    for r in results:
        name = f"committed, {r.transport} ({inflight[r.transport]} in flight)"
        note = (f"sustained {r.sustained_rate:.0f}/s ({r.sustained_rate / limit:.2f}); "
                f"p50 {r.percentile_ms(0.5):.0f} ms, p99 {r.percentile_ms(0.99):.0f} ms, "
                f"{r.disk_bytes / max(r.readings, 1):.0f} B/reading on disk")
        if r.readings < len(signed) or r.refused:
            note += f"; INCOMPLETE {r.readings}/{len(signed)}, {r.refused} refused"
        print(f"{name:44} {r.rate:10.0f} {r.rate / limit:8.2f}  {note}")
    limit_us = sum(best.cpu.each_us(len(messages)))
    print_cpu(best, limit_us, results)
    coap_best = None if shell is None else print_shell(limit_us, results, shell)
    return RunReport({r.transport: r.rate / limit for r in results},
                     {r.transport: r.sustained_rate / limit for r in results}, coap_best)


def print_verdict(reports: Sequence[RunReport], medians: dict[str, float]) -> None:
    """Judge the goal on the node's pipeline (the direct path) and say where CoAP stands
    against what its shell allows (docs/aggregator.md, "Which path the goal judges")."""
    runs = f"median over {len(reports)} runs" if len(reports) > 1 else "one run"
    if "direct" not in medians:
        print(f"\ngoal: committed >= {GOAL} of the limit, judged on the node's pipeline "
              "(the direct path), which this run left out")
    else:
        ratio = medians["direct"]
        sustained = statistics.median(r.sustained["direct"] for r in reports)
        print(f"\ngoal: committed >= {GOAL} of the limit, judged on the node's pipeline "
              f"(the direct path); {runs} {ratio:.2f} "
              f"({'met' if ratio >= GOAL else 'not met'}; sustained {sustained:.2f})")
    if "coap" in medians:
        bests = [r.coap_best for r in reports if r.coap_best is not None]
        bound = f"; its shell alone allows at most {statistics.median(bests):.2f}" if bests else ""
        print(f"  coap     {medians['coap']:.2f} of the limit{bound}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--batches", type=int, default=BATCHES,
                        help=f"batches each device signs and sends (default {BATCHES})")
    parser.add_argument("--transport", choices=("coap", "direct"), default=None,
                        help="default: both")
    parser.add_argument("--inflight", type=int, default=None,
                        help="submissions outstanding at once (default: direct "
                             f"{INFLIGHT['direct']}, coap {INFLIGHT['coap']})")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the whole measurement (fresh keys, limit and node "
                             "each time) and judge the goal on the median ratio "
                             "(default 1)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    transports = [args.transport] if args.transport else ["direct", "coap"]
    inflight = {t: args.inflight or INFLIGHT[t] for t in transports}
    print(f"machine: {machine()}")
    reports = []
    for run in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"\n== run {run} of {args.runs}")
        reports.append(one_run(args.devices, args.batches, transports, inflight))
    medians = {t: statistics.median(r.ratios[t] for r in reports) for t in transports}
    if args.runs > 1:
        print(f"\nover {args.runs} runs (committed / the limit of the same run):")
        for t in transports:
            ratios = " ".join(f"{r.ratios[t]:.2f}" for r in reports)
            print(f"  {t:8} {ratios}  median {medians[t]:.2f}")
    print_verdict(reports, medians)
    return 0


if __name__ == "__main__":
    sys.exit(main())
