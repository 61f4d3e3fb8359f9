"""Query side figures: receipts/s and p99 on one node with a big ledger, alone and while
ingest runs at half its capacity; receipt size and verify time against log size.

Theory of operation
-------------------
1. Build.  A registrar in a temporary directory certifies `--devices` gateways with
   `--meters` meters each; every gateway signs its batches (one meter group per meter, so
   a batch adds `--meters` readings-log leaves) on two worker processes, and the main
   process commits them straight through the node's solo engine (`submit_message`, then
   `cut_block` whenever a block is full): the real application, store and Merkle log,
   no transport.  A block is also cut as the log reaches 10^3, 10^4, ... leaves; after
   the build, `--samples` random batches of each such block get a receipt bundle from
   the read side (`aggregator.query.ledger`), whose proofs are against a tree of exactly
   that size, and are verified offline (`aggregator.query.receipts`): bundle bytes,
   hashes in an inclusion proof, and the mean time of a full verification (ES256 of the
   commit, the certificate and the batch, plus inclusion) and of one inclusion check.
2. Serve.  The same node directory is opened behind `NodeServer` with the query API;
   a load generator in a process of its own runs `--clients` threads with keep-alive
   HTTP connections asking GET /v1/readings/{device}/{seq}/receipt for random committed
   batches, as an auditor, for `--duration-s`: requests/s and latency p50/p99.
3. Ingest capacity.  Fresh batches are fed to `EngineNode.submit` (prechecks on two
   worker processes, as `gridledger aggregator run` does) with 64 in flight for
   `--capacity-s`: committed batches/s.
4. Both.  A paced task submits at half that rate while the load generator runs again.

On two cores the load generator, the prechecks and the node share the CPU; the figures
are for this machine, printed with its load average.

    python bench/bench_query.py [--readings 1000000] [--meters 8] [--devices 500]
                                [--duration-s 10] [--clients 8] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from aggregator import node as node_mod
from aggregator import tx as tx_mod
from aggregator.engine import ACCEPTED, SoloEngine
from aggregator.net.engine_node import EngineNode
from aggregator.net.server import NetConfig, NodeServer
from aggregator.query.api import QueryApi
from aggregator.query.ledger import LedgerReader
from aggregator.query.receipts import (
    check_inclusion,
    leaf_data,
    trust_from_genesis,
    verify_receipt,
)
from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from gridledger.machine import summary

CHAIN_ID = "gl-bench-query"
SIGN_CHUNK = 500          # batches a signing task makes
INFLIGHT = 64             # submissions in flight when measuring ingest capacity
PACE_S = 0.01             # the paced ingest submits every 10 ms


@dataclass(frozen=True)
class Gateway:
    device_id: str
    key: bytes            # the device secret, for the signing workers
    certificate: bytes
    meters: tuple[str, ...]


def machine() -> str:
    return summary()


# -- signing -------------------------------------------------------------------------------


def _sign_chunk(job: tuple[Gateway, int, int, int]) -> list[bytes]:
    gateway, first_seq, count, now_s = job
    key = crypto.SigningKey.from_bytes(gateway.key)
    out = []
    for seq in range(first_seq, first_seq + count):
        groups = [batch_mod.MeterGroup(m, now_s - 1, [
            batch_mod.Record("1-0:1.8.0", 1_000_000 + seq * 3600 + i, "J"),
            batch_mod.Record("1-0:1.7.0", 400.5, "W")]) for i, m in enumerate(gateway.meters)]
        item = batch_mod.Batch(gateway.device_id, seq, now_s, True, groups)
        out.append(batch_mod.sign(item, key.sign))  # enrolled: no certificate in the batch
    return out


def signed_batches(pool: concurrent.futures.Executor, gateways: list[Gateway],
                   first_seq: int, per_device: int, now_s: int) -> Iterator[list[bytes]]:
    """Batches in seq order, round by round over the gateways, in chunks as they are made."""
    jobs: list[tuple[Gateway, int, int, int]] = []
    for start in range(first_seq, first_seq + per_device, SIGN_CHUNK):
        count = min(SIGN_CHUNK, first_seq + per_device - start)
        jobs.extend((g, start, count, now_s) for g in gateways)
    # A chunk is one gateway's run of seqs; the engine needs each device's seqs in order,
    # which chunk order keeps (chunks of one gateway follow each other in `jobs`).
    yield from pool.map(_sign_chunk, jobs)


def make_gateways(registrar: Registrar, devices: int, meters: int) -> list[Gateway]:
    now_s = int(time.time())
    found = []
    for d in range(devices):
        serials = tuple(f"MB{d:05d}-{m}" for m in range(meters))
        issued = registrar.issue(f"gwb-{d:05d}", now_s - 3600, meters=serials)
        assert issued.device_key is not None
        found.append(Gateway(f"gwb-{d:05d}", issued.device_key.to_bytes(), issued.certificate,
                             serials))
    return found


# -- phase 1: build, with proof figures at each power of ten ---------------------------------


def enroll(engine: SoloEngine, registrar: Registrar, gateways: list[Gateway]) -> None:
    """Registry transactions first, as a utility enrolls its fleet: batches then need no
    certificate of their own."""
    for gateway in gateways:
        tx = tx_mod.make_enrollment(gateway.certificate, {}, int(time.time()) - 60,
                                    registrar.public_key, registrar.key.sign)
        if engine.submit(tx, time.time()).status != ACCEPTED:
            raise SystemExit(f"enrollment of {gateway.device_id} refused")
        if len(engine.mempool) >= engine.limits.txs_max:
            engine.cut_block(time.time())
    engine.cut_block(time.time())


def build(engine: SoloEngine, gateways: list[Gateway], per_device: int,
          pool: concurrent.futures.Executor) -> list[tuple[int, int]]:
    """Commit every batch; a block is cut as the log reaches each power of ten, and the
    leaf range [first, size) of each such block is returned for `proof_row`."""
    checkpoints: list[tuple[int, int]] = []
    limits = engine.limits
    next_checkpoint = 1000
    started = last_print = time.monotonic()
    committed = pending = size = 0
    for chunk in signed_batches(pool, gateways, 1, per_device, int(time.time())):
        for message in chunk:
            sub = engine.submit_message(message, time.time(), None)
            if sub.status != ACCEPTED:
                raise SystemExit(f"batch refused: {sub.status} {sub.code}")
            pending += len(gateways[0].meters)
            if len(engine.mempool) >= limits.txs_max or size + pending >= next_checkpoint:
                engine.cut_block(time.time())
                first, size, pending = size, engine.app.state.log_size, 0
                if size >= next_checkpoint:
                    checkpoints.append((first, size))
                    next_checkpoint *= 10
        committed += len(chunk)
        if time.monotonic() - last_print > 10:
            last_print = time.monotonic()
            rate = committed / (last_print - started)
            print(f"  built {size:>9,} leaves, {committed:,} batches ({rate:,.0f} batches/s)",
                  flush=True)
    if engine.mempool.txs():
        engine.cut_block(time.time())
    print(f"  built {engine.app.state.log_size:,} leaves in {time.monotonic() - started:.0f} s",
          flush=True)
    return checkpoints


def proof_row(ledger: Path, first: int, size: int, samples: int) -> str:
    """Receipts of batches committed by the block that took the log to `size` leaves:
    their proofs are against a tree of exactly that size."""
    reader = LedgerReader(ledger, CHAIN_ID)
    genesis_path = ledger.parent / node_mod.GENESIS_FILE
    from gridledger import genesis as genesis_mod

    trust = trust_from_genesis(genesis_mod.load(genesis_path))
    rng = random.Random(size)
    picked = [reader.leaf_batch(rng.randrange(first, size)) for _ in range(samples)]
    bundles = [reader.bundle(d, s) for d, s in picked]
    reader.close()
    texts = [b.dumps() for b in bundles]
    started = time.perf_counter()
    for text in texts:
        verify_receipt(text, trust, crypto.verify)
    full_us = (time.perf_counter() - started) / len(texts) * 1e6
    started = time.perf_counter()
    checks = 0
    for bundle in bundles:
        header_size, root = _log_of(bundle.header)
        assert header_size == size
        batch_hash = _sha256(bundle.batch)
        for leaf in bundle.leaves:
            check_inclusion(leaf_data(bundle.device_id, bundle.seq, leaf.meter, batch_hash),
                            leaf.index, header_size, leaf.proof, root)
            checks += 1
    inclusion_us = (time.perf_counter() - started) / checks * 1e6
    hashes = statistics.mean(len(leaf.proof) for b in bundles for leaf in b.leaves)
    return (f"{size:>10,} | {statistics.mean(len(t) for t in texts):>8,.0f} "
            f"{hashes:>7.1f} {hashes * 32:>7.0f} | {full_us:>8.0f} {inclusion_us:>8.1f}")


def _log_of(header: bytes) -> tuple[int, bytes]:
    from aggregator.block import decode_header

    decoded = decode_header(header)
    return decoded.log_size, decoded.log_root


def _sha256(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()


# -- phase 2..4: serve -----------------------------------------------------------------------


def load_generator(port: int, token: str, targets: list[tuple[str, int]], clients: int,
                   duration_s: float, seed: int, pipe: Connection) -> None:
    """In its own process: `clients` threads asking for receipts until the deadline."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = time.monotonic() + duration_s

    def client(number: int) -> None:
        rng = random.Random(seed + number)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < deadline:
            device, seq = rng.choice(targets)
            started = time.perf_counter()
            conn.request("GET", f"/v1/readings/{device}/{seq}/receipt", headers=headers)
            answer = conn.getresponse()
            answer.read()
            latencies[number].append(time.perf_counter() - started)
            errors[number] += answer.status != 200

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    pipe.send(([x for row in latencies for x in row], sum(errors), elapsed))
    pipe.close()


def receipts_row(label: str, port: int, token: str, targets: list[tuple[str, int]],
                 clients: int, duration_s: float) -> str:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=False)
    process = context.Process(target=load_generator, args=(
        port, token, targets, clients, duration_s, 7, theirs))
    process.start()
    latencies, errors, elapsed = ours.recv()
    process.join()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    return (f"{label:<28} {len(latencies) / elapsed:>9,.0f} {p50:>8.1f} {p99:>8.1f} "
            f"{errors:>7}")


async def measure_ingest(node: EngineNode, batches: Iterator[bytes], seconds: float) -> float:
    """Committed batches/s with INFLIGHT submissions at a time."""
    before = int(node.status()["batches_committed"])  # type: ignore[call-overload]
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    async def worker() -> None:
        while time.monotonic() < deadline:
            message = next(batches, None)
            if message is None:
                return
            await node.submit(message, "direct")

    await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
    await wait_for_empty_mempool(node)
    done = int(node.status()["batches_committed"]) - before  # type: ignore[call-overload]
    return float(done / (time.monotonic() - started))


async def wait_for_empty_mempool(node: EngineNode, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while node.status()["mempool_txs"]:
        if time.monotonic() > deadline:
            raise SystemExit("mempool did not drain")
        await asyncio.sleep(0.05)


async def paced_ingest(node: EngineNode, batches: Iterator[bytes], rate_per_s: float,
                       stop: asyncio.Event, sent: list[int]) -> None:
    per_tick = rate_per_s * PACE_S
    owed = 0.0
    pending: set[asyncio.Task[object]] = set()
    while not stop.is_set():
        owed += per_tick
        while owed >= 1:
            message = next(batches, None)
            if message is None:
                return
            task = asyncio.ensure_future(node.submit(message, "direct"))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent[0] += 1
            owed -= 1
        await asyncio.sleep(PACE_S)
    await asyncio.gather(*pending, return_exceptions=True)


async def serve(data_dir: Path, args: argparse.Namespace, targets: list[tuple[str, int]],
                fresh: list[bytes]) -> list[str]:
    opened = node_mod.open_node(data_dir)
    node = EngineNode.with_pool(opened.engine, opened.genesis.registrar_public_key)
    api = QueryApi.for_node(opened, data_dir, node.submit_registry)
    api.queries = None  # the clients share one account: measure the node, not its limit
    principal = api.accounts.add("bench-auditor", "auditor", "bench auditor password", 0)
    token = str(api.issuer.issue(principal.principal(), int(time.time())).response()[
        "access_token"])
    config = NetConfig(node_id=opened.node_id, coap_port=0, http_port=0,
                       embedded_mqtt_port=0, seed=1)
    server = NodeServer(node, config, api.mount)
    rows: list[str] = []
    await node.start()
    try:
        await server.start()
        port = server.ports["http"]
        loop = asyncio.get_running_loop()
        rows.append(await loop.run_in_executor(None, receipts_row, "receipts, idle node",
                                               port, token, targets, args.clients,
                                               args.duration_s))
        batches = iter(fresh)
        capacity = await measure_ingest(node, batches, args.capacity_s)
        rows.append(f"{'ingest capacity':<28} {capacity:>9,.0f} batches/s "
                    f"({capacity * args.meters:,.0f} readings/s)")
        stop, sent = asyncio.Event(), [0]
        started = time.monotonic()
        before = int(node.status()["batches_committed"])  # type: ignore[call-overload]
        ingest = loop.create_task(paced_ingest(node, batches, capacity / 2, stop, sent))
        rows.append(await loop.run_in_executor(None, receipts_row,
                                               "receipts, ingest at half", port, token,
                                               targets, args.clients, args.duration_s))
        stop.set()
        await ingest
        await wait_for_empty_mempool(node)
        done = int(node.status()["batches_committed"]) - before  # type: ignore[call-overload]
        rows.append(f"{'ingest meanwhile':<28} {done / (time.monotonic() - started):>9,.0f} "
                    f"batches/s committed (target {capacity / 2:,.0f})")
    finally:
        await server.shutdown()
        await node.shutdown()
        api.close()
        opened.store.close()
    return rows


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    per_device = max(1, args.readings // (args.meters * args.devices))
    print(f"machine: {machine()}")
    print(f"ledger: {args.devices} gateways x {args.meters} meters x {per_device} batches = "
          f"{args.devices * args.meters * per_device:,} readings", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        root = Path(tmp) if args.keep is None else args.keep
        registrar = Registrar.init(root / "ca")
        data_dir = root / "node"
        node_mod.init(data_dir, registrar.directory, CHAIN_ID, int(time.time()) - 3600)
        gateways = make_gateways(registrar, args.devices, args.meters)
        opened = node_mod.open_node(data_dir)
        ledger = data_dir / node_mod.LEDGER_FILE
        enroll(opened.engine, registrar, gateways)
        with concurrent.futures.ProcessPoolExecutor(2) as pool:
            checkpoints = build(opened.engine, gateways, per_device, pool)
            fresh_per_device = min(SIGN_CHUNK, max(1, args.fresh // args.devices))
            fresh = [m for chunk in signed_batches(pool, gateways, per_device + 1,
                                                   fresh_per_device, int(time.time()))
                     for m in chunk]
        fresh = _interleave(fresh, args.devices, fresh_per_device)
        opened.store.close()
        proofs = [proof_row(ledger, first, size, args.samples) for first, size in checkpoints]
        print(f"  ledger file {ledger.stat().st_size / 1e6:,.0f} MB", flush=True)
        rng = random.Random(args.seed)
        targets = [(rng.choice(gateways).device_id, rng.randint(1, per_device))
                   for _ in range(10_000)]
        served = asyncio.run(serve(data_dir, args, targets, fresh))
    print()
    print("   leaves  | bundle B  hashes  proof B | verify us  incl us")
    print("\n".join(proofs))
    print()
    print(f"{'(clients ' + str(args.clients) + ')':<28} {'req/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'errors':>7}")
    print("\n".join(served))
    return 0


def _interleave(messages: list[bytes], devices: int, per_device: int) -> list[bytes]:
    """Chunks come gateway by gateway; send round by round so every device moves along."""
    by_device = [messages[i * per_device:(i + 1) * per_device] for i in range(devices)]
    return [row[k] for k in range(per_device) for row in by_device if k < len(row)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--meters", type=int, default=8, help="meters per gateway (batch)")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--capacity-s", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--fresh", type=int, default=60_000,
                        help="batches signed ahead for the ingest phases")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="build in this new directory and keep it")
    return parser


if __name__ == "__main__":
    sys.exit(main())
