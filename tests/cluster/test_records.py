"""Class II/III records on a BFT cluster: four engines with the real application and
SQLite stores agree on the records, their state root and the verification rule; the
cluster node's registry door admits the new kinds and still refuses batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aggregator import rules
from aggregator.consensus.engine import BftEngine
from aggregator.engine import ACCEPTED
from aggregator.net.engine_node import CODE_NOT_REGISTRY
from tests.aggregator.helpers import T0, World
from tests.aggregator.test_records import customer_tx, doc_tx
from tests.cluster.lone import lone_validator
from tests.consensus.test_engine import IDS, Net


def _engines(net: Net) -> list[BftEngine]:
    return [e for e in net.engines.values() if e is not None]


def test_records_and_the_rule_agree_on_every_validator(tmp_path: Path) -> None:
    world = World()
    net = Net(tmp_path, world, 0)
    try:
        assert net.submit("node-1", doc_tx(world)) == ACCEPTED
        assert net.submit("node-3", customer_tx(world)) == ACCEPTED
        net.run_until(lambda: all(len(e.app.state.records) == 2 for e in _engines(net)))
        assert net.submit("node-0", world.batch_tx("dev-a", 1)) == ACCEPTED
        net.run_until(lambda: all(e.app.state.batches == 1 for e in _engines(net)))
        roots = {e.app.state.root() for e in _engines(net)}
        assert len(roots) == 1
        assert all(e.app.state.violations == 1 for e in _engines(net))
        engine = net.engines["node-2"]
        assert engine is not None
        device = engine.app.state.devices["dev-a"]
        assert dict(device.violations) == {rules.VERIFICATION: 1}
        net.crash("node-2")
        net.boot("node-2")  # reopens the store: records come back and verify
        rebooted = net.engines["node-2"]
        assert rebooted is not None and rebooted.app.state.root() in roots
        assert rebooted.app.state.periods == {"M1": ((T0 - 400 * 86400, T0 - 86400),)}
    finally:
        for node_id in IDS:
            if net.engines[node_id] is not None:
                net.crash(node_id)


def test_cluster_registry_door_takes_records_not_batches(tmp_path: Path) -> None:
    lone = lone_validator(tmp_path)
    world, store = lone.world, lone.store

    async def scenario() -> None:
        node = lone.node()
        await node.start()
        try:
            assert node.submit_registry(doc_tx(world)).outcome == "accepted"
            assert node.submit_registry(customer_tx(world)).outcome == "accepted"
            refused = node.submit_registry(world.batch_tx("dev-a", 1))
            assert refused.code == CODE_NOT_REGISTRY
            forged = bytearray(doc_tx(world, digest=bytes(32)))
            forged[-1] ^= 1
            assert node.submit_registry(bytes(forged)).code == "tx.signature"
        finally:
            await node.shutdown()
            store.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))
