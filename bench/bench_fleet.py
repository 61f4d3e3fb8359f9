"""The fleet simulator's own cost: how many gateways one core can drive.

Theory of operation
-------------------
Starts what `just load-uplink` starts (a registrar, a node directory, a Mosquitto on a
free loopback port when installed, `gridledger aggregator run`), then runs
`gridledger sim fleet --report` as its own process for each `--devices` count, at
`--interval` model seconds and `--speed`, for `--duration` wall seconds.  The fleet
measures its own CPU time (getrusage) over the run: signing, publishing and verifying
each receipt.  CPU a batch is that time over the batches sent; one core can then drive

    gateways per core = interval on the wall clock / CPU a batch

(at 60 s and 3 ms a batch: 20,000 gateways).  The node shares this machine, so the
fleet's wall-clock rate says as much about the node as about the fleet; the CPU a batch
does not.  Each run must also reconcile clean.

    python bench/bench_fleet.py [--devices 500,2000] [--interval 60] [--speed 10]
                                [--duration 60]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.run import gridledger, local_node, machine

REPORT = re.compile(r"report: (\d+) batches in ([\d.]+) s wall, ([\d.]+)/s; simulator CPU "
                    r"([\d.]+) s .*?([\d.]+) ms CPU a batch")


def run_fleet(work: Path, mqtt: str, genesis: str, devices: int, args: argparse.Namespace
              ) -> tuple[str, str]:
    command = gridledger("sim", "fleet", "--devices", str(devices), "--interval",
                         str(args.interval), "--speed", str(args.speed), "--duration",
                         str(args.duration), "--mqtt", mqtt, "--ca-dir", str(work / "ca"),
                         "--genesis", genesis, "--prefix", f"bench{devices}-", "--report",
                         "--drain", str(args.drain))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    verdict = "clean" if "reconciliation CLEAN" in done.stdout else "NOT CLEAN"
    return done.stdout, verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="500,2000")
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--drain", type=float, default=120.0)
    args = parser.parse_args()
    print(machine())
    print("| gateways | offered batches/s | sent batches/s | fleet CPU a batch | "
          "gateways one core drives at the interval | reconciliation |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gl-bench-fleet-") as scratch, \
            local_node(Path(scratch), 1) as node:
        for devices in (int(d) for d in args.devices.split(",")):
            out, verdict = run_fleet(Path(scratch), node.mqtt, node.env["GL_GENESIS"],
                                     devices, args)
            found = REPORT.search(out)
            if found is None:
                print(out[-2000:])
                return 1
            per_batch_ms = float(found.group(5))
            offered = devices * args.speed / args.interval
            per_core = args.interval * 1000.0 / per_batch_ms
            print(f"| {devices} | {offered:.0f} | {float(found.group(3)):.0f} | "
                  f"{per_batch_ms:.2f} ms | {per_core:,.0f} | {verdict} |", flush=True)
            if verdict != "clean":
                problems = [line for line in out.splitlines() if "reconciliation" in line
                            or "drain" in line or line.startswith("  ")]
                print("\n".join("    " + line for line in problems[:12]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
