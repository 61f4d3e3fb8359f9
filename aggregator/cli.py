"""`gridledger aggregator ...`: set up and inspect an aggregator node."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gridledger.output import SubParsers, command_group, iso_utc, key_value_lines

from . import node as node_mod

if TYPE_CHECKING:  # the network shell pulls in aiocoap, aiomqtt and FastAPI: load on `run` only
    from aggregator.net.server import NetConfig


def register(sub: SubParsers, name: str, help_text: str) -> None:
    commands = command_group(sub, name, help_text)
    _add_init(commands)
    _add_run(commands)
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


def _add_run(commands: SubParsers) -> None:
    p = commands.add_parser(
        "run",
        help="run a node: CoAP, MQTT and HTTP in front of its ledger",
        description="Run an aggregator node on its data directory: CoAP ingest "
        "(POST /gl/v1/up), MQTT ingest (gl/v1/+/up) with receipts on gl/v1/{device}/ack, "
        "HTTP status, the query API (OpenAPI at /openapi.json; accounts from "
        "`gridledger accounts`) and Prometheus metrics. Without --mqtt-url an embedded MQTT 3.1.1 "
        "broker is started on --embedded-mqtt. A data directory without a node is "
        "initialised first (with a new registrar in DATA/ca unless --ca-dir is given). "
        "SIGTERM or Ctrl-C stops it cleanly.",
        epilog="example: gridledger aggregator run --data-dir data "
        "--mqtt-url mqtt://127.0.0.1:1883",
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="node directory (default ./data)")
    p.add_argument("--ca-dir", type=Path,
                   help="registrar directory, used when the data directory is new")
    p.add_argument("--coap", default="127.0.0.1:5683", metavar="HOST:PORT",
                   help="CoAP listen address (default 127.0.0.1:5683)")
    p.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="HTTP listen address (default 127.0.0.1:8080)")
    p.add_argument("--mqtt-url", help="broker to use, mqtt://host[:port] (default: embedded)")
    p.add_argument("--embedded-mqtt", default="127.0.0.1:1883", metavar="HOST:PORT",
                   help="where the embedded broker listens (default 127.0.0.1:1883)")
    p.add_argument("--customer-keys", type=Path, metavar="FILE",
                   help="class II key file (keep it outside the data directory); "
                   "without it the node serves no customer fields")
    p.add_argument("--no-pool", action="store_true",
                   help="verify signatures on the event loop instead of two worker processes")
    p.add_argument("--peer-listen", metavar="HOST:PORT",
                   help="BFT chains: listen for validators here instead of the genesis "
                   "peer address (a node behind a proxy)")
    p.set_defaults(func=cmd_run)


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


def cmd_run(args: argparse.Namespace) -> int:
    from aggregator.net import server as server_mod

    if not (args.data_dir / node_mod.GENESIS_FILE).exists():
        _initialise(args.data_dir, args.ca_dir)
    coap = server_mod.host_port(args.coap)
    http = server_mod.host_port(args.http)
    embedded = server_mod.host_port(args.embedded_mqtt)
    if args.mqtt_url is not None:
        server_mod.parse_mqtt_url(args.mqtt_url)
    server_mod.configure_json_logging()
    config = server_mod.NetConfig(
        coap_host=coap[0], coap_port=coap[1], http_host=http[0], http_port=http[1],
        mqtt_url=args.mqtt_url, embedded_mqtt_host=embedded[0], embedded_mqtt_port=embedded[1])
    opened = node_mod.open_node(args.data_dir)
    try:
        asyncio.run(_serve(opened, config, pool=not args.no_pool, data_dir=args.data_dir,
                           customer_keys=args.customer_keys, peer_listen=args.peer_listen))
    finally:
        opened.close()
    return 0


def _initialise(data_dir: Path, ca_dir: Path | None) -> None:
    from certs.registrar import KEY_FILE, PUB_FILE, Registrar

    if ca_dir is None:
        ca_dir = data_dir / "ca"
        if not (ca_dir / KEY_FILE).exists() and not (ca_dir / PUB_FILE).exists():
            Registrar.init(ca_dir, "local-registrar")
            print(f"new registrar in {ca_dir}")
    genesis = node_mod.init(data_dir, ca_dir, "gl-local", int(time.time()))
    print(f"new node {genesis.validators[0].node_id} of chain {genesis.chain_id} "
          f"in {data_dir}")


async def _serve(opened: node_mod.Node, config: NetConfig, pool: bool, data_dir: Path,
                 customer_keys: Path | None = None, peer_listen: str | None = None) -> None:
    from aggregator.cluster.node import ClusterNode
    from aggregator.cluster.runtime import cluster_node
    from aggregator.net.engine_node import EngineNode
    from aggregator.net.server import NodeServer
    from aggregator.query.api import QueryApi
    node: EngineNode | ClusterNode
    if len(opened.genesis.validators) > 1:  # a BFT chain: the engine among validators
        node = cluster_node(opened, peer_listen)
    elif pool:
        node = EngineNode.with_pool(opened.engine, opened.genesis.registrar_public_key)
    else:
        node = EngineNode(opened.engine)
    query = QueryApi.for_node(opened, data_dir, node.submit_registry, customer_keys)
    node_mod.tune_collector()
    await node.start()
    try:
        await NodeServer(node, config, query.mount).run_until_signalled()
    finally:
        await node.shutdown()
        query.close()


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
