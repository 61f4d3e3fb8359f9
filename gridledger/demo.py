"""`gridledger demo`: the whole system on loopback (gridledger.system_demo), or one
reading through identity and the wire format (`--identity-only`, gridledger.identity_demo).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from gridledger.output import SubParsers


def register(sub: SubParsers, name: str, help_text: str) -> None:
    p = sub.add_parser(
        name, help=help_text,
        description="Run a node, simulated meters and two edge agents (MQTT and CoAP) on "
        "loopback, inject faults, show a live view, and end with a reconciliation. Exit "
        "status 0 only when every genuine batch was committed exactly once and every "
        "injected fault was caught.",
        epilog="example: gridledger demo --meters 6 --duration 60",
    )
    p.add_argument("--meters", type=int, default=4,
                   help="simulated SDM630 meters on Modbus TCP, 2..30 (default 4)")
    p.add_argument("--duration", type=float, default=30.0,
                   help="seconds to run before reconciling, at least 12 (default 30)")
    p.add_argument("--dir", type=Path, help="keep keys, ledger and logs here")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated meters")
    p.add_argument("--nodes", type=int, default=1,
                   help="validators: 1 is a solo node (default); 4 a BFT cluster, 4..16")
    p.add_argument("--identity-only", action="store_true",
                   help="only walk one reading through signing and verification, offline")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if not 2 <= args.meters <= 30 or args.duration < 12 or not \
            (args.nodes == 1 or 4 <= args.nodes <= 16):
        print("error [demo.usage]: --meters must be 2..30, --duration at least 12 s and "
              "--nodes 1 or 4..16", file=sys.stderr)
        return 2
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return _run(args, args.dir)
    with tempfile.TemporaryDirectory(prefix="gridledger-demo-") as tmp:
        return _run(args, Path(tmp))


def _run(args: argparse.Namespace, directory: Path) -> int:
    # Imported here: the system demo loads the node's network stack (FastAPI, aiocoap,
    # amqtt), which every other `gridledger` command would otherwise pay for at start.
    if args.identity_only:
        from gridledger import identity_demo

        return identity_demo.run(directory, args.seed)
    from gridledger.system_demo import Demo

    return asyncio.run(Demo(directory, args.meters, args.duration, args.seed,
                            args.nodes).run())
