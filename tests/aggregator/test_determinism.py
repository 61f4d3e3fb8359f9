"""Determinism: the same blocks give the same app hashes and block hashes on every node."""

from __future__ import annotations

import random
from pathlib import Path

from aggregator.app import FinalizeRequest
from aggregator.engine import Committed, EngineLimits, SoloEngine
from tests.aggregator.helpers import T0, World, open_store, stored_engine

LIMITS = EngineLimits(
    txs_max=7, bytes_max=1 << 20, timeout_s=1.0, mempool_txs_max=200, mempool_bytes_max=1 << 22
)
DEVICES = ("gw-1", "gw-2", "gw-3", "gw-4")


def random_traffic(world: World, rng: random.Random, count: int) -> list[tuple[float, bytes]]:
    """Arrivals with honest batches, replays, gaps, counters running back, junk, registry."""
    seqs = dict.fromkeys(DEVICES, 0)
    energy = dict.fromkeys(DEVICES, 1000)
    arrivals = []
    now = float(T0)
    for _ in range(count):
        now += rng.random() * 0.6
        device = rng.choice(DEVICES)
        roll = rng.random()
        if roll < 0.05:
            raw = world.revoke_tx(device, int(now))
        elif roll < 0.10:
            raw = world.enroll_tx(device, {"M1": "abb_b23"}, int(now))
        elif roll < 0.15:
            raw = rng.randbytes(rng.randrange(1, 60))
        else:
            seqs[device] += rng.choice((1, 1, 1, 2, 0))
            energy[device] += rng.choice((100, 100, 0, -50))
            raw = world.batch_tx(
                device,
                seqs[device],
                energy=energy[device],
                voltage=rng.choice((230.0, 231.5, 900.0)),
                sent_at=int(now) + rng.choice((0, 0, 4000)),
                kcwt=rng.random() < 0.7,
            )
        arrivals.append((now, raw))
    return arrivals


def drive(engine: SoloEngine, arrivals: list[tuple[float, bytes]]) -> list[tuple[bytes, bytes]]:
    """Feed arrivals in time order, honouring deadlines; (block hash, app hash) per block."""
    out = []
    for now, raw in [*arrivals, (arrivals[-1][0] + 10, b"")]:
        deadline = engine.next_deadline()
        actions = (
            engine.handle_timeout(deadline) if deadline is not None and deadline <= now else []
        )
        if raw:
            engine.submit(raw, now)
        actions += engine.handle_timeout(now)
        out += [(a.block.hash(), a.app_hash) for a in actions if isinstance(a, Committed)]
    return out


def test_two_nodes_reach_the_same_hashes(world: World, rng: random.Random) -> None:
    arrivals = random_traffic(world, rng, 150)
    first = drive(world.engine(limits=LIMITS), arrivals)
    second = drive(World().engine(limits=LIMITS), arrivals)
    assert len(first) > 5
    assert first == second


def test_replaying_blocks_on_a_fresh_app_gives_the_same_state(
    world: World, rng: random.Random
) -> None:
    engine = world.engine(limits=LIMITS)
    drive(engine, random_traffic(world, rng, 120))
    replica = world.app()
    for block in engine.store.blocks:  # type: ignore[attr-defined]
        assert replica.process_proposal(block, LIMITS.txs_max, LIMITS.bytes_max) == "ok"
        header = block.header
        replica.finalize_block(
            FinalizeRequest(header.height, header.time_s, block.txs, header.proposer)
        )
        assert replica.commit() == header.state_root
    assert replica.state == engine.app.state


def test_a_restarted_sqlite_node_continues_a_valid_chain(
    tmp_path: Path, world: World, rng: random.Random
) -> None:
    arrivals = random_traffic(world, rng, 100)
    path = tmp_path / "ledger.sqlite"
    half = len(arrivals) // 2
    first = stored_engine(path, world, LIMITS)
    drive(first, arrivals[:half])
    pending = first.mempool.txs()
    del first  # killed: the mempool is lost, the store is not
    second = stored_engine(path, world, LIMITS)
    # Devices re-send what was not receipted.
    resubmitted = [(arrivals[half - 1][0], raw) for raw in pending]
    drive(second, resubmitted + arrivals[half:])
    second.store.close()  # type: ignore[attr-defined]
    store = open_store(path, world)  # re-verifies the whole chain
    replica = world.app()
    for height in range(1, store.height + 1):
        block = store.block(height)
        header = block.header
        replica.finalize_block(
            FinalizeRequest(header.height, header.time_s, block.txs, header.proposer)
        )
        assert replica.commit() == header.state_root
    assert replica.state == store.load_state()
    rows = store._conn.execute("SELECT leaf FROM reading").fetchall()
    leaves = [bytes(leaf) for (leaf,) in rows]
    assert len(leaves) == len(set(leaves)), "a reading was committed twice"
