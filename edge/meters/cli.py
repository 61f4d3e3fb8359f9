"""`gridledger edge scan` and `gridledger edge read`: the field technician's meter tools.

scan: which unit ids answer on a bus, and which profile each one looks like (the profile
whose `identify` quantities read back non-zero and within limits).  A unit that does not
answer the first probe costs one timeout and is skipped.

read: a live table (OBIS, name, value, unit, age) refreshed in place; `--once --json`
prints one JSON object keyed by OBIS code and exits (non-zero with an error code when the
meter did not answer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from edge.meters.bus import ModbusBus, rtu_bus, tcp_bus
from edge.meters.p1 import P1Reader
from edge.meters.plan import decode_block, plan_reads
from edge.meters.poller import ModbusMeter
from edge.meters.result import MeterReading, Value
from edge.portable import modbus
from edge.portable.errors import LocalProtocolError, RemoteProtocolError
from hardware import profiles
from simulator.cli import parse_host_port, parse_units

CLEAR = "\x1b[H\x1b[2J"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scan = commands.add_parser("scan", help="find answering Modbus unit ids and guess models",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_where(scan)
    scan.add_argument("--units", default="1-247", help="unit ids to try (default 1-247)")
    scan.add_argument("--timeout-s", type=float, default=0.2, help="per request (default 0.2)")
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.set_defaults(func=run_scan)
    read = commands.add_parser("read", help="read one meter live through its profile",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    read.add_argument("--profile", required=True, help="meter profile, e.g. sdm120, dsmr5")
    _add_where(read)
    read.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    read.add_argument("--once", action="store_true", help="read once and exit")
    read.add_argument("--json", action="store_true", help="print JSON keyed by OBIS code")
    read.add_argument("--interval-s", type=float, default=1.0, help="refresh (default 1)")
    read.add_argument("--timeout-s", type=float, default=1.0, help="per request (default 1)")
    read.set_defaults(func=run_read)


def _add_where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEV", help="serial device (RS-485 or P1)")
    where.add_argument("--host", metavar="HOST:PORT", help="Modbus TCP meter or gateway")
    parser.add_argument("--baud", type=int, default=None, help="override the baud rate")
    parser.add_argument("--framing", default=None, help="override framing, e.g. 8N1, 8E1")


def _quiet_pymodbus() -> None:
    # pymodbus logs every failed request itself; our status codes already say it.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _bus(args: argparse.Namespace, serial: profiles.SerialSettings) -> ModbusBus:
    if args.host:
        host, port = parse_host_port(args.host)
        return tcp_bus(host, port, args.timeout_s)
    return rtu_bus(args.port, serial.override(args.baud, args.framing), args.timeout_s)


# -- scan ------------------------------------------------------------------------------


def run_scan(args: argparse.Namespace) -> int:
    _quiet_pymodbus()
    units = parse_units(args.units)
    candidates = [p for p in map(profiles.load, profiles.names()) if p.protocol == "modbus"]
    serial = profiles.SerialSettings(9600, 8, "N", 1)
    found = asyncio.run(_scan_main(args, serial, units, candidates))
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for row in found:
            print(f"unit {row['unit']:3d}  answers  guess: {row['guess'] or 'unknown'}"
                  f"  ({row['detail']})")
        print(f"{len(found)} of {len(units)} unit ids answered")
    return 0


async def _scan_main(args: argparse.Namespace, serial: profiles.SerialSettings,
                     units: list[int], candidates: list[profiles.Profile]) -> list[dict[str, Any]]:
    return await scan(_bus(args, serial), units, candidates)  # pymodbus needs a loop


async def scan(bus: ModbusBus, units: list[int],
               candidates: list[profiles.Profile]) -> list[dict[str, Any]]:
    found = []
    try:
        for unit in units:
            row = await _probe(bus, unit, candidates)
            if row is not None:
                found.append(row)
    finally:
        bus.close()
    return found


async def _probe(bus: ModbusBus, unit: int,
                 candidates: list[profiles.Profile]) -> dict[str, Any] | None:
    scores: dict[str, tuple[float, int]] = {}
    answered = False
    for profile in candidates:
        score, replied = await _identify(bus, unit, profile)
        answered = answered or replied
        if not answered:
            return None  # silent on the first probe: nobody there
        # the share of identify checks passed first, then how many: a three-phase meter
        # passes all of a single-phase profile's checks too
        scores[profile.name] = (score / max(1, len(profile.identify)), score)
    best = max(scores.values(), default=(0.0, 0))
    guesses = sorted(n for n, s in scores.items() if s == best and best[1] > 0)
    detail = ", ".join(f"{n} {s[1]}/{len(p.identify)}"
                       for (n, s), p in zip(sorted(scores.items()),
                                            sorted(candidates, key=lambda p: p.name),
                                            strict=True))
    return {"unit": unit, "guess": "/".join(guesses), "detail": detail}


async def _identify(bus: ModbusBus, unit: int, profile: profiles.Profile) -> tuple[int, bool]:
    """(identify quantities that look right, whether the unit answered at all)."""
    quantities = tuple(profile.quantity(o) for o in profile.identify)
    score, replied = 0, False
    for block in plan_reads(quantities, profile.max_gap_registers,
                            profile.max_registers_per_request):
        try:
            registers = await bus.read(unit, block.function, block.address, block.count)
        except modbus.ModbusExceptionError:
            replied = True
            continue
        except RemoteProtocolError:
            continue
        replied = True
        values = decode_block(block, registers)
        score += sum(1 for q in block.quantities if values[q.obis] and q.plausible(values[q.obis]))
    return score, replied


# -- read ------------------------------------------------------------------------------


def run_read(args: argparse.Namespace) -> int:
    _quiet_pymodbus()
    profile = profiles.load(args.profile)
    if profile.protocol == "dsmr":
        if not args.port:
            raise LocalProtocolError("a P1 meter is read on a serial --port")
        reader = P1Reader(args.profile, profile, args.port,
                          profile.serial.override(args.baud, args.framing))
        timeout_s = max(args.timeout_s, 2.5 * profile.dsmr_interval_s)

        async def next_p1() -> MeterReading:
            return await asyncio.to_thread(reader.read, timeout_s)
        try:
            return asyncio.run(_loop(args, profile, next_p1))
        finally:
            reader.close()
    return asyncio.run(_read_modbus(args, profile))


async def _read_modbus(args: argparse.Namespace, profile: profiles.Profile) -> int:
    meter = ModbusMeter(f"unit{args.unit}", profile, args.unit, _bus(args, profile.serial))
    try:
        return await _loop(args, profile, meter.poll)
    finally:
        meter.bus.close()


async def _loop(args: argparse.Namespace, profile: profiles.Profile, next_reading: Any) -> int:
    last: dict[str, tuple[Value, float]] = {}
    while True:
        reading: MeterReading = await next_reading()
        if args.once:
            return _print_once(args, profile, reading)
        for obis, value in reading.values.items():
            last[obis] = (value, reading.read_at_s)
        _print_live(profile, reading, last)
        await asyncio.sleep(args.interval_s)


def _print_once(args: argparse.Namespace, profile: profiles.Profile,
                reading: MeterReading) -> int:
    if not reading.ok:
        raise RemoteProtocolError(reading.error or reading.status, code="meter." + reading.status)
    if args.json:
        out = {obis: {"name": profile.quantity(obis).name, "v": x.v, "u": x.u,
                      "t": reading.read_at_s}
               for obis, x in sorted(reading.values.items())}
        print(json.dumps(out, indent=2))
    else:
        now_s = time.time()
        print(table(profile, {o: (x, reading.read_at_s) for o, x in reading.values.items()},
                    now_s))
    return 0


def _print_live(profile: profiles.Profile, reading: MeterReading,
                last: dict[str, tuple[Value, float]]) -> None:
    head = CLEAR if sys.stdout.isatty() else ""
    status = reading.status if reading.ok else f"{reading.status}: {reading.error}"
    print(f"{head}{profile.model} ({profile.name})  status {status}")
    print(table(profile, last, time.time()), flush=True)


def table(profile: profiles.Profile, values: dict[str, tuple[Value, float]],
          now_s: float) -> str:
    rows = [f"{'OBIS':<12} {'name':<40} {'value':>16} {'unit':<4} {'age':>6}"]
    for q in profile.quantities:
        if q.obis not in values:
            continue
        value, at_s = values[q.obis]
        rows.append(f"{q.obis:<12} {q.name[:40]:<40} {value.v:>16.3f} {value.u:<4} "
                    f"{now_s - at_s:>5.1f}s")
    return "\n".join(rows)
