"""Ledger core ingest: committed readings/s against the signature-verification limit.

Pre-signed batches (each with its kcwt certificate, two meters a batch) from `--devices`
simulated gateways go through the solo engine into a SQLite ledger in a temporary
directory, with injected time.  Three figures come from the same run:

    limit     `verify_message` (COSE parse, certificate and device ES256 checks) per
              second on `--workers` processes: what admission cannot beat.
    inline    the engine doing everything on one thread.
    pool      `app.precheck` in a process pool of `--workers`, the engine on the main
              thread taking the prechecked results (the shape the node shell uses).

Readings are counted as the ledger does: one per meter per batch.  Also printed: bytes
on disk per reading and block commit latency p50/p99 (cut to durable).

    python bench/bench_ledger.py [--batches 20000] [--devices 10000] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from aggregator.app import AppConfig, Application, Prechecked, precheck
from aggregator.engine import Committed, EngineLimits, NodeSigner, SoloEngine
from aggregator.node import profile_limits
from aggregator.store import Store
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cwt
from edge.portable.batch import Batch, MeterGroup, Record
from edge.portable.verify import verify_message

T0 = 1_763_760_000
CHAIN_ID = "gl-bench"
GENESIS_HASH = bytes(32)
CHUNK = 256  # messages per pool task: one round trip carries many checks
REGISTRAR = crypto.SigningKey.from_bytes(bytes([7]) * 32)
NODE = crypto.SigningKey.from_bytes(bytes([8]) * 32)


def _messages(count: int, devices: int) -> list[bytes]:
    keys = [crypto.SigningKey.from_bytes((i + 1).to_bytes(32, "big")) for i in range(devices)]
    certs = [
        cwt.issue(cwt.DeviceCertificate("reg", f"gw-{i}", k.public_key(), T0 - 10, T0 + 86400,
                                        ["M1", "M2"]), REGISTRAR.public_key(), REGISTRAR.sign)
        for i, k in enumerate(keys)
    ]
    out = []
    for n in range(count):
        i = n % devices
        groups = [MeterGroup(m, T0, [Record("1-0:1.8.0", 1000 + n, "J"),
                                     Record("1-0:32.7.0", 230.5, "V")]) for m in ("M1", "M2")]
        batch = Batch(f"gw-{i}", n // devices + 1, T0, True, groups)
        out.append(batch_mod.sign(batch, keys[i].sign, certs[i]))
    return out


def _verify_chunk(chunk: list[bytes]) -> int:
    for message in chunk:
        verify_message(message, REGISTRAR.public_key(), T0, crypto.verify)
    return len(chunk)


def _precheck_chunk(chunk: list[bytes]) -> list[Prechecked | None]:
    return [precheck(m, REGISTRAR.public_key(), T0, crypto.verify) for m in chunk]


def _chunks(messages: list[bytes]) -> list[list[bytes]]:
    return [messages[i : i + CHUNK] for i in range(0, len(messages), CHUNK)]


def limit_rate(messages: list[bytes], workers: int) -> float:
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(_verify_chunk, _chunks(messages[: CHUNK * workers])))  # warm up
        start = time.perf_counter()
        done = sum(pool.map(_verify_chunk, _chunks(messages)))
        return done / (time.perf_counter() - start)


def _engine(directory: Path) -> SoloEngine:
    validators = {"node-0": (NODE.public_key(), 1)}
    store = Store.open(directory / "ledger.sqlite", CHAIN_ID, GENESIS_HASH, validators,
                       crypto.verify)
    config = AppConfig(CHAIN_ID, REGISTRAR.public_key(), crypto.verify, profile_limits())
    app = Application(config, store.load_state(), store.nodes)
    limits = EngineLimits.from_block_limits(2000, 4 * 1024 * 1024, 200)
    signer = NodeSigner("node-0", NODE.sign, NODE.sign_random_nonce)
    return SoloEngine(app, store, signer, GENESIS_HASH, T0, limits)


class Run:
    """One ingest run: feeds messages at injected times and records commit latencies."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.engine = _engine(directory)
        self.latencies_s: list[float] = []
        self.now_s = float(T0)

    def feed(self, message: bytes, prechecked: Prechecked | None) -> None:
        self.now_s += 0.0001
        submission = self.engine.submit_message(message, self.now_s, prechecked)
        if submission.status != "accepted":
            raise SystemExit(f"not accepted: {submission}")
        self.tick(self.now_s)

    def tick(self, now_s: float) -> None:
        start = time.perf_counter()
        actions = self.engine.handle_timeout(now_s)
        if any(isinstance(a, Committed) for a in actions):
            self.latencies_s.append(time.perf_counter() - start)

    def finish(self) -> int:
        self.tick(self.now_s + 10)
        size = sum(p.stat().st_size for p in self.directory.iterdir())
        return size


def inline(messages: list[bytes], directory: Path) -> tuple[float, Run, int]:
    run = Run(directory)
    start = time.perf_counter()
    for message in messages:
        run.feed(message, None)
    size = run.finish()
    return len(messages) / (time.perf_counter() - start), run, size


def pooled(messages: list[bytes], directory: Path, workers: int) -> tuple[float, Run, int]:
    run = Run(directory)
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(_precheck_chunk, _chunks(messages[: CHUNK * workers])))  # warm up
        start = time.perf_counter()
        chunks = _chunks(messages)
        for chunk, results in zip(chunks, pool.map(_precheck_chunk, chunks), strict=True):
            for message, prechecked in zip(chunk, results, strict=True):
                run.feed(message, prechecked)
        size = run.finish()
    return len(messages) / (time.perf_counter() - start), run, size


def _latency(run: Run) -> str:
    values = sorted(run.latencies_s)
    if not values:
        return "-"
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    messages = _messages(args.batches, args.devices)
    limit = limit_rate(messages, args.workers)
    print(f"batches={args.batches} devices={args.devices} workers={args.workers}")
    print(f"limit   {limit:8.0f} batches/s  {2 * limit:8.0f} readings/s (verify_message)")
    for name in ("inline", "pool"):
        with tempfile.TemporaryDirectory() as tmp:
            if name == "inline":
                rate, run, size = inline(messages, Path(tmp))
            else:
                rate, run, size = pooled(messages, Path(tmp), args.workers)
        print(f"{name:7} {rate:8.0f} batches/s  {2 * rate:8.0f} readings/s  "
              f"{rate / limit:.2f} of the limit; block commit {_latency(run)}; "
              f"{size / (2 * args.batches):.0f} B on disk a reading")
    return 0


if __name__ == "__main__":
    sys.exit(main())
