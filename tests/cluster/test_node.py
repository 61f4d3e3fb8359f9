"""ClusterNode fails stop: after a local fault in the engine it signs and admits nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aggregator.cluster.node import CODE_FAILED
from tests.cluster.lone import lone_validator


def test_a_fault_in_the_engine_stops_the_node_taking_part(tmp_path: Path) -> None:
    lone = lone_validator(tmp_path)
    world, store, engine = lone.world, lone.store, lone.engine

    def broken(now_s: float) -> list[object]:
        raise OSError("disk full")

    async def scenario() -> None:
        node = lone.node()
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
