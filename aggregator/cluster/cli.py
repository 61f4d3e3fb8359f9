"""`gridledger cluster ...`: run a BFT cluster of node processes on loopback."""

from __future__ import annotations

import argparse
from pathlib import Path

from gridledger.output import SubParsers, command_group

from . import local


def register(sub: SubParsers, name: str, help_text: str) -> None:
    commands = command_group(sub, name, help_text)
    p = commands.add_parser(
        "up", help="create and start N validator processes on loopback",
        description="Create N node directories sharing one genesis (validators with keys "
        "and loopback addresses, Tendermint engine), start each node as its own process "
        "and write DIR/cluster.json with each node's id, pid, CoAP, HTTP and peer ports. "
        "A new registrar is made in DIR/ca unless --ca-dir names one.",
        epilog="example: gridledger cluster up --nodes 4 --dir cluster")
    p.add_argument("--nodes", type=int, default=4, help="validators (default 4)")
    p.add_argument("--dir", required=True, type=Path, help="cluster directory to create")
    p.add_argument("--ca-dir", type=Path, help="registrar directory (default: a new one)")
    p.add_argument("--chain-id", default="gl-cluster", help="chain id (default gl-cluster)")
    p.add_argument("--mqtt-url", metavar="URL",
                   help="one broker for every node, e.g. mqtt://127.0.0.1:1883 (Mosquitto): "
                   "the nodes share its subscription, so each batch reaches one of them "
                   "(default: an embedded broker a node)")
    p.set_defaults(func=cmd_up)
    p = commands.add_parser(
        "status", help="heights and last block hashes of every node, side by side",
        description="Ask every node of DIR/cluster.json for its status over HTTP.")
    p.add_argument("--dir", required=True, type=Path, help="cluster directory")
    p.set_defaults(func=cmd_status)
    p = commands.add_parser(
        "down", help="stop every node of the cluster (SIGTERM, then SIGKILL)",
        description="Stop the node processes of DIR/cluster.json; their data stays.")
    p.add_argument("--dir", required=True, type=Path, help="cluster directory")
    p.set_defaults(func=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    if (args.dir / local.CLUSTER_FILE).exists():  # a stopped cluster starts again
        cluster = local.load(args.dir)
        running = [e["node_id"] for e in cluster["nodes"] if local.alive(e.get("pid"))]
        if running:
            raise local.ClusterError(f"{', '.join(running)} of {args.dir} still running; "
                                     "`gridledger cluster down` first")
    else:
        cluster = local.create(args.dir, args.nodes, args.ca_dir, args.chain_id,
                               mqtt_url=args.mqtt_url)
    local.start(args.dir, cluster)
    try:
        local.wait_ready(cluster)
    except local.ClusterError:
        local.stop(cluster)
        raise
    print(f"cluster of {len(cluster['nodes'])} validators, chain {cluster['chain_id']}, "
          f"in {args.dir} (registrar {cluster['ca_dir']})")
    _print(local.status_rows(cluster))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _print(local.status_rows(local.load(args.dir)))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = local.load(args.dir)
    local.stop(cluster)
    print(f"stopped {len(cluster['nodes'])} nodes of {args.dir}")
    return 0


def _print(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
