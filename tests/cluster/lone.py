"""One validator of a four-validator chain, alone on a real SQLite store, and a
ClusterNode around it: for tests of the node's own doors and failure handling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aggregator.app import Application
from aggregator.cluster import wire
from aggregator.cluster.links import Links
from aggregator.cluster.node import ClusterNode
from aggregator.consensus.engine import BftEngine
from aggregator.consensus.validators import ValidatorSet
from aggregator.consensus.wal import MemoryWal
from aggregator.engine import NodeSigner
from aggregator.store import Store
from edge import crypto
from tests.aggregator.helpers import CHAIN_ID, GENESIS_HASH, T0, World, key
from tests.ports import free_port


@dataclass
class Lone:
    world: World
    store: Store
    engine: BftEngine
    me: wire.LinkIdentity

    def node(self) -> ClusterNode:
        """A ClusterNode (not started) listening on a free loopback port, with no peers."""
        return ClusterNode(self.engine, lambda n: Links(self.me, ("127.0.0.1", free_port()), {},
                                                        n.on_peer), clock=lambda: float(T0))


def lone_validator(tmp_path: Path) -> Lone:
    world = World()
    keys = {f"node-{i}": key(100 + i) for i in range(4)}
    members = {n: (k.public_key(), 1) for n, k in keys.items()}
    store = Store.open(tmp_path / "ledger.sqlite", CHAIN_ID, GENESIS_HASH, members,
                       crypto.verify)
    engine = BftEngine(Application(world.config, store.load_state(), store.nodes), store,
                       NodeSigner("node-0", keys["node-0"].sign), GENESIS_HASH, T0,
                       ValidatorSet(members), MemoryWal(), crypto.verify)
    me = wire.LinkIdentity(CHAIN_ID, GENESIS_HASH, "node-0", keys["node-0"].sign,
                           crypto.verify, {n: k.public_key() for n, k in keys.items()})
    return Lone(world, store, engine, me)
