"""`gridledger sim ...`: simulated meters.

`sim meter` serves one profile: Modbus TCP (`--tcp HOST:PORT`, port 0 picks a free one),
or a pseudo-terminal (`--pty`) carrying Modbus RTU for Modbus profiles and P1 telegrams
for DSMR profiles.  The first line of stdout is where to connect: HOST:PORT or the pty
path.  It runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

from edge.portable.errors import LocalProtocolError
from gridledger.output import SubParsers, command_group
from hardware import profiles
from simulator.model import FAULT_MODES, Fleet
from simulator.servers import ModbusRtuPtySimulator, ModbusTcpSimulator, P1PtyEmitter

Server = ModbusTcpSimulator | ModbusRtuPtySimulator | P1PtyEmitter


def parse_units(text: str) -> list[int]:
    """"1-4" or "3" or "1,5,7-9" -> unit ids."""
    units: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            units.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise LocalProtocolError(f"units {text!r}: use N, N-M or a comma list") from None
    if not units or any(not 1 <= u <= 247 for u in units):
        raise LocalProtocolError(f"units {text!r}: ids must be within 1..247")
    return units


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise LocalProtocolError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def parse_fault(text: str) -> tuple[int, str]:
    unit, sep, mode = text.partition(":")
    if not sep or not unit.isdigit() or mode not in FAULT_MODES:
        raise LocalProtocolError(f"fault {text!r}: use UNIT:MODE, MODE one of "
                                 + ", ".join(FAULT_MODES))
    return int(unit), mode


def register(sub: SubParsers, name: str, help_text: str) -> None:
    commands = command_group(sub, name, help_text)
    add_meter_command(commands)
    from simulator.fleet.cli import add_fleet_command

    add_fleet_command(commands)


def add_meter_command(commands: SubParsers) -> None:
    p = commands.add_parser("meter", help="serve simulated meters of one profile",
                            description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", required=True, help="meter profile (file stem in hardware/meters)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP")
    where.add_argument("--pty", action="store_true", help="Modbus RTU or P1 on a pty")
    p.add_argument("--units", default="1", help="unit ids, e.g. 1-8 (default 1)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--fault", action="append", default=[], metavar="UNIT:MODE",
                   help="inject a fault: " + ", ".join(FAULT_MODES) + " (repeatable)")
    p.add_argument("--exception-code", type=int, default=4, help="for the exception fault")
    p.add_argument("--delay-s", type=float, default=0.5, help="for the slow fault")
    p.add_argument("--interval-s", type=float, default=None,
                   help="P1 telegram interval (default: the profile's)")
    p.set_defaults(func=run_meter)


def build(args: argparse.Namespace) -> Server:
    profile = profiles.load(args.profile)
    fleet = Fleet(profile, parse_units(args.units), args.seed, time.time())
    for text in args.fault:
        unit, mode = parse_fault(text)
        fleet.set_fault(unit, mode, exception_code=args.exception_code, delay_s=args.delay_s)
    if args.tcp:
        if profile.protocol != "modbus":
            raise LocalProtocolError(f"{profile.name} is a P1 meter: use --pty")
        host, port = parse_host_port(args.tcp)
        return ModbusTcpSimulator(fleet, host, port)
    if profile.protocol == "dsmr":
        return P1PtyEmitter(fleet.meter(min(fleet.meters)), args.interval_s)
    return ModbusRtuPtySimulator(fleet)


async def serve(server: Server) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if isinstance(server, ModbusTcpSimulator):
        print(f"{server.host}:{server.port}", flush=True)
    else:
        print(server.path, flush=True)
    try:
        await stop.wait()
    finally:
        await server.shutdown()


def run_meter(args: argparse.Namespace) -> int:
    server = build(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(server))
    sys.stdout.flush()
    return 0
