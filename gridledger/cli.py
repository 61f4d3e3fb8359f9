"""The `gridledger` command.

Each top-level folder contributes one subcommand group through a `register(subparsers)`
function in its own `cli` module; this module only assembles them and turns the
project's errors into one-line messages with a stable code and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edge.portable.errors import GridLedgerError

# (module, group name, one-line help) in the order `gridledger --help` lists them.
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("gridledger.demo", "demo", "run the whole system end to end on loopback"),
    ("certs.cli", "certs", "registrar keys and device certificates"),
    ("edge.cli", "edge", "gateway tools: scan and read meters, sign, inspect"),
    ("simulator.cli", "sim", "simulated meters and fleets"),
    ("aggregator.cli", "aggregator", "aggregator node: genesis, ledger"),
    ("aggregator.cluster.cli", "cluster", "a BFT cluster of nodes on loopback: up, status, down"),
    ("aggregator.query.cli", "accounts", "accounts of the query API: add, list, remove"),
    ("aggregator.query.customers_cli", "customers",
     "class II customer records: set (digest on chain), show"),
    ("aggregator.query.verify_cli", "verify", "check a reading's receipt offline against genesis"),
)

EXIT_INPUT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridledger",
        description="Trustworthy smart-meter data: read, sign, forward, verify, commit.",
        epilog="Run `gridledger GROUP --help` for the commands of a group.",
    )
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for module_name, name, help_text in GROUPS:
        module = importlib.import_module(module_name)
        module.register(sub, name, help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except GridLedgerError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as exc:
        print(f"error [io]: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        return 130
    return result
