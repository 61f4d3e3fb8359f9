"""ClusterNode fails stop: after a local fault in the engine it signs and admits nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aggregator.app import Application
from aggregator.cluster import wire
from aggregator.cluster.links import Links
from aggregator.cluster.node import CODE_FAILED, ClusterNode
from aggregator.consensus.engine import BftEngine
from aggregator.consensus.validators import ValidatorSet
from aggregator.consensus.wal import MemoryWal
from aggregator.engine import NodeSigner
from aggregator.store import Store
from edge import crypto
from tests.aggregator.helpers import CHAIN_ID, GENESIS_HASH, T0, World, key
from tests.ports import free_port


def test_a_fault_in_the_engine_stops_the_node_taking_part(tmp_path: Path) -> None:
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

    def broken(now_s: float) -> list[object]:
        raise OSError("disk full")

    async def scenario() -> None:
        node = ClusterNode(engine, lambda n: Links(me, ("127.0.0.1", free_port()), {},
                                                   n.on_peer), clock=lambda: float(T0))
        await node.start()
        try:
            engine.handle_timeout = broken  # type: ignore[method-assign,assignment]
            node._wake.set()
            for _ in range(100):
                if node.failed:
                    break
                await asyncio.sleep(0.01)
            assert node.failed and node.status()["failed"] is True
            answer = await node.submit(world.message("dev-a", 1), "coap")
            assert answer.code == CODE_FAILED
        finally:
            await node.shutdown()
            store.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))
