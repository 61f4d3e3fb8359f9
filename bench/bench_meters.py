"""Polling throughput of one gateway agent against N simulated Modbus TCP meters.

The simulated meters (one TCP server each, so one connection per meter as with real TCP
meters) run in a child process; this process runs the agent's poller as fast as it can
for `--duration-s` per N and reports requests/s, meter polls/s, readings/s (one reading
= one OBIS value) and the agent's CPU time per reading.

    python bench/bench_meters.py [--meters 1,32,256] [--duration-s 5] [--profile sdm120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.meters.bus import tcp_bus  # noqa: E402
from edge.meters.poller import ModbusMeter, Poller  # noqa: E402
from hardware.profiles import load  # noqa: E402

CHILD = """
import asyncio, json, sys, time
from hardware.profiles import load
from simulator.model import Fleet
from simulator.servers import ModbusTcpSimulator

async def main(n, profile):
    servers = []
    for k in range(n):
        s = ModbusTcpSimulator(Fleet(load(profile), [1], k, time.time()), "127.0.0.1", 0)
        await s.start()
        servers.append(s)
    print(json.dumps([s.port for s in servers]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in servers:
        await s.shutdown()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


async def poll_for(ports: list[int], profile_name: str, duration_s: float) -> dict[str, float]:
    profile = load(profile_name)
    meters = [ModbusMeter(f"m{k}", profile, 1, tcp_bus("127.0.0.1", port, 2.0))
              for k, port in enumerate(ports)]
    poller = Poller(meters)
    await poller.poll_once()  # connect and warm up
    requests0 = sum(m.bus.requests for m in meters)
    polls = readings = failures = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    while time.monotonic() - wall0 < duration_s:
        for r in await poller.poll_once():
            polls += 1
            readings += len(r.values)
            failures += not r.ok
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    requests = sum(m.bus.requests for m in meters) - requests0
    poller.close()
    return {"meters": len(ports), "requests_per_s": requests / wall_s,
            "polls_per_s": polls / wall_s, "readings_per_s": readings / wall_s,
            "cpu_us_per_reading": 1e6 * cpu_s / max(1, readings),
            "cpu_share": cpu_s / wall_s, "failed_polls": failures}


def run_one(n: int, profile: str, duration_s: float) -> dict[str, float]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(n), profile], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert child.stdout is not None and child.stdin is not None
        ports = json.loads(child.stdout.readline())
        return asyncio.run(poll_for(ports, profile, duration_s))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", default="1,32,256")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--profile", default="sdm120")
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    print(f"profile {args.profile}, {args.duration_s} s per run, python {sys.version.split()[0]},"
          f" {os.cpu_count()} CPUs")
    print(f"{'meters':>6} {'requests/s':>11} {'polls/s':>9} {'readings/s':>11} "
          f"{'CPU us/reading':>15} {'agent CPU':>9} {'failed':>6}")
    for n in (int(x) for x in args.meters.split(",")):
        r = run_one(n, args.profile, args.duration_s)
        print(f"{n:>6} {r['requests_per_s']:>11.0f} {r['polls_per_s']:>9.0f} "
              f"{r['readings_per_s']:>11.0f} {r['cpu_us_per_reading']:>15.1f} "
              f"{100 * r['cpu_share']:>8.0f}% {r['failed_polls']:>6.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
