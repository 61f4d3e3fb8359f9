"""`gridledger sim fleet`: many virtual gateways in one process against real nodes.

Identities: `--ca-dir CA` issues a fresh certificate and key for every gateway in one
batch operation (`Registrar.issue_many`; nothing is written but one line per device in
CA/issued.jsonl), with device ids PREFIX000001..; `--bundle FILE` uses a bundle made by
`gridledger certs issue --count N`.  Devices enroll on first sight by presenting their
certificate.  Receipts are verified under the node keys of `--genesis`.

The exit status is 0 when the reconciliation is clean, 1 when it is not, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from certs.cli import bundle_device_ids, bundle_meter_ids
from certs.registrar import Identity, Registrar, read_bundle
from edge.portable.errors import GridLedgerError
from gridledger import genesis as genesis_mod
from gridledger.machine import cpu_model
from gridledger.output import SubParsers
from simulator.fleet import faults as faults_mod
from simulator.fleet.runner import Fleet, FleetConfig, FleetOutput

DEVICES_MAX = 1_000_000


def add_fleet_command(commands: SubParsers) -> None:
    p = commands.add_parser(
        "fleet", help="run many virtual gateways against real nodes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults SPEC: " + faults_mod.__doc__.split("SPEC syntax", 1)[1].split(
            "Errors:", 1)[0].replace("-----------", "") if faults_mod.__doc__ else None)
    p.add_argument("--devices", type=int, default=10, metavar="N", help="gateways (default 10)")
    p.add_argument("--meters-per-device", type=int, default=1, metavar="M",
                   help="meters per gateway with --ca-dir (default 1)")
    p.add_argument("--interval", type=float, default=60.0, metavar="S",
                   help="model seconds between a gateway's readings (default 60)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="model seconds per wall second (default 1)")
    p.add_argument("--duration", type=float, metavar="D",
                   help="wall seconds to read for, then drain (default: until Ctrl-C)")
    p.add_argument("--mqtt", action="append", default=[], metavar="URL",
                   help="broker, mqtt://HOST[:PORT] (repeatable: gateways spread round robin; "
                   "every broker's receipts are taken)")
    p.add_argument("--coap", action="append", default=[], metavar="URL",
                   help="node, coap://HOST[:PORT] (repeatable: gateways spread round robin)")
    p.add_argument("--faults", default="", metavar="SPEC", help="faults to inject (below)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--ca-dir", type=Path, metavar="CA", help="registrar to issue identities")
    who.add_argument("--bundle", type=Path, help="identity bundle from certs issue --count")
    p.add_argument("--prefix", help="device id prefix with --ca-dir (default fleet-<time>-)")
    p.add_argument("--genesis", required=True, type=Path,
                   help="the chain's genesis.json (node keys that sign receipts)")
    p.add_argument("--replay", type=Path, metavar="FILE",
                   help="CSV of recorded readings instead of load shapes (see docs/load.md)")
    p.add_argument("--window", type=int, default=1,
                   help="batches in flight per gateway (default 1: in seq order)")
    p.add_argument("--drain", type=float, default=60.0, metavar="S",
                   help="longest wait for outstanding receipts at the end (default 60)")
    p.add_argument("--mqtt-connections", type=int, default=4,
                   help="MQTT connections the gateways share (default 4)")
    p.add_argument("--report", action="store_true",
                   help="also print the simulator's own CPU cost and the fleet size one "
                   "core could drive at this interval")
    p.set_defaults(func=run_fleet)


def identities(args: argparse.Namespace) -> list[Identity]:
    if not 0 < args.devices <= DEVICES_MAX:
        raise GridLedgerError(f"--devices must be 1..{DEVICES_MAX}", "sim.usage")
    if args.bundle is not None:
        found = read_bundle(args.bundle)
        if len(found) < args.devices:
            raise GridLedgerError(f"{args.bundle} holds {len(found)} identities, "
                                  f"--devices asks for {args.devices}", "sim.usage")
        return found[:args.devices]
    registrar = Registrar.open(args.ca_dir)
    prefix = args.prefix or f"fleet-{int(time.time()):x}-"
    device_ids = bundle_device_ids(prefix, args.devices)
    meters = args.meters_per_device
    issued = registrar.issue_many(device_ids, int(time.time()) - 60,
                                  lambda d: bundle_meter_ids(d, meters))
    out = []
    for item in issued:
        assert item.device_key is not None
        out.append(Identity(item.claims.device_id, item.device_key, item.certificate,
                            tuple(item.claims.meters)))
    return out


def config_of(args: argparse.Namespace) -> FleetConfig:
    if not args.interval > 0 or not args.speed > 0:
        raise GridLedgerError("--interval and --speed must be positive", "sim.usage")
    if args.duration is not None and not args.duration > 0:
        raise GridLedgerError("--duration must be positive", "sim.usage")
    if not 0 < args.mqtt_connections <= 64:
        raise GridLedgerError("--mqtt-connections must be 1..64", "sim.usage")
    return FleetConfig(
        interval_s=args.interval, speed=args.speed, duration_s=args.duration,
        mqtt_urls=list(args.mqtt), coap_urls=list(args.coap), faults=args.faults, seed=args.seed,
        window=args.window, drain_s=args.drain, replay=args.replay,
        mqtt_connections=args.mqtt_connections)


def run_fleet(args: argparse.Namespace) -> int:
    config = config_of(args)
    node_keys = genesis_mod.load(args.genesis).node_keys()
    started = time.perf_counter()
    found = identities(args)
    issued_s = time.perf_counter() - started
    print(f"fleet: {len(found)} gateways, {sum(len(i.meters) for i in found)} meters, "
          f"identities ready in {issued_s:.1f} s, seed {args.seed}", flush=True)
    return asyncio.run(_run(found, node_keys, config, args.report))


async def _run(found: list[Identity], node_keys: dict[str, bytes], config: FleetConfig,
               report: bool) -> int:
    fleet = Fleet(found, node_keys, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.stop.set)
    counts = fleet.plan.counts()
    if counts:
        print("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
    cpu_before_s, wall_before_s = fleet.cpu_s(), time.perf_counter()
    out = FleetOutput(config.progress_s, sys.stdout.isatty())
    result = await fleet.run(out)
    for line in result.lines():
        print(line)
    unfired = fleet.unfired_faults()
    if unfired:
        print("  faults that never fired (no commit to act on in time): "
              + ", ".join(f"{k} {v}" for k, v in sorted(unfired.items())))
    if result.problems:
        print(f"  replay this run with --seed {config.seed}")
    if report:
        print_report(fleet, fleet.cpu_s() - cpu_before_s, time.perf_counter() - wall_before_s)
    return 0 if result.clean else 1


def print_report(fleet: Fleet, cpu_s: float, wall_s: float) -> None:
    stats = fleet.stats
    batches = stats.sent + stats.resent
    per_batch_ms = 1000.0 * cpu_s / batches if batches else float("nan")
    wall_interval_s = fleet.config.interval_s / fleet.config.speed
    per_core = int(wall_interval_s / (per_batch_ms / 1000.0)) if batches else 0
    cpu = cpu_model()
    print(f"report: {batches} batches in {wall_s:.1f} s wall, {batches / wall_s:.1f}/s; "
          f"simulator CPU {cpu_s:.1f} s ({100 * cpu_s / wall_s:.0f} % of one core), "
          f"{per_batch_ms:.2f} ms CPU a batch (sign, send, verify its receipt)")
    print(f"report: one core drives about {per_core} gateways at one batch every "
          f"{wall_interval_s:g} s wall; machine {os.cpu_count()} cores, {cpu}")
