"""`gridledger aggregator ...`: set up and inspect an aggregator node."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gridledger.output import SubParsers, iso_utc, key_value_lines

from . import node as node_mod


def register(sub: SubParsers, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_init(commands)
    _add_verify(commands)


def _add_init(commands: SubParsers) -> None:
    p = commands.add_parser(
        "init",
        help="create a node key and a genesis file",
        description="Create an aggregator data directory: a node key (PEM PKCS#8, mode 0600), "
        "a genesis file naming the registrar of --ca-dir and this node as the single "
        "validator of a solo chain, and an empty ledger.",
        epilog="example: gridledger aggregator init --data-dir data --ca-dir ca",
    )
    p.add_argument("--data-dir", required=True, type=Path, help="node directory to create")
    p.add_argument("--ca-dir", required=True, type=Path,
                   help="registrar directory (only registrar.pub is read)")
    p.add_argument("--chain-id", default="gl-local", help="chain id (default gl-local)")
    p.add_argument("--node-id", default=node_mod.DEFAULT_NODE_ID,
                   help=f"this node's id (default {node_mod.DEFAULT_NODE_ID})")
    p.set_defaults(func=cmd_init)


def _add_verify(commands: SubParsers) -> None:
    p = commands.add_parser(
        "verify",
        help="re-verify a node's stored ledger",
        description="Open a node directory and re-verify its ledger as the node does on "
        "start: hash chain, commits, transaction and readings-log roots, state root.",
    )
    p.add_argument("--data-dir", required=True, type=Path, help="node directory")
    p.set_defaults(func=cmd_verify)


def cmd_init(args: argparse.Namespace) -> int:
    genesis = node_mod.init(args.data_dir, args.ca_dir, args.chain_id, int(time.time()),
                            args.node_id)
    print(f"node {args.node_id} of chain {genesis.chain_id} created in {args.data_dir}")
    print(f"  node key     {args.data_dir / node_mod.KEY_FILE} (0600)")
    print(f"  genesis      {args.data_dir / node_mod.GENESIS_FILE} "
          f"(sha256 {genesis.hash().hex()[:16]})")
    print(f"  ledger       {args.data_dir / node_mod.LEDGER_FILE}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    node = node_mod.open_node(args.data_dir)
    try:
        last = node.store.last_block()
        state = node.app.state
        rows = [
            ("chain", node.genesis.chain_id),
            ("height", str(state.height)),
            ("last block", last.hash().hex() if last else "(none)"),
            ("block time", iso_utc(state.time_s) if last else "(none)"),
            ("devices", str(len(state.devices))),
            ("batches", str(state.batches)),
            ("readings", str(state.readings)),
            ("violations", str(state.violations)),
            ("ledger", "verified"),
        ]
    finally:
        node.store.close()
    print(key_value_lines(rows))
    return 0
