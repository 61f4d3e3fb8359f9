"""A node process for the kill -9 test: commits blocks from a burst and prints receipts.

    python -m tests.aggregator.burst_node LEDGER COUNT

prints one line "device seq height" per committed batch, flushed after every block, so
the parent knows exactly what was receipted when it kills this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aggregator.engine import Committed, EngineLimits
from tests.aggregator.helpers import T0, World, stored_engine

LIMITS = EngineLimits(
    txs_max=40, bytes_max=1 << 20, timeout_s=1.0, mempool_txs_max=400, mempool_bytes_max=1 << 22
)
DEVICES = 8


def burst(world: World, count: int) -> list[bytes]:
    return [world.batch_tx(f"gw-{i % DEVICES}", i // DEVICES + 1) for i in range(count)]


def main() -> None:
    path, count = Path(sys.argv[1]), int(sys.argv[2])
    world = World()
    engine = stored_engine(path, world, LIMITS)
    for index, raw in enumerate(burst(world, count)):
        now = T0 + index * 0.01
        engine.submit(raw, now)
        for action in engine.handle_timeout(now):
            if isinstance(action, Committed):
                for result in action.results:
                    print(result.device_id, result.seq, action.block.height)
                sys.stdout.flush()
    print("done", flush=True)


if __name__ == "__main__":
    main()
