"""The SQLite ledger: persistence, crash safety, and refusal of a corrupted store."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from aggregator.engine import Committed, EngineLimits, SoloEngine
from aggregator.store import Store, StoreCorruptError, StoreError, StoreGenesisError
from edge import crypto
from tests.aggregator.helpers import CHAIN_ID, NODE_ID, T0, World, open_store, stored_engine

LIMITS = EngineLimits(
    txs_max=4, bytes_max=1 << 20, timeout_s=1.0, mempool_txs_max=64, mempool_bytes_max=1 << 22
)


def workload(world: World) -> list[list[bytes]]:
    """Four blocks' worth of txs: enrollment, readings from two devices, a revocation."""
    return [
        [
            world.enroll_tx("gw-1", {"M1": "abb_b23"}),
            world.batch_tx("gw-1", 1, meters=("M1", "M2")),
        ],
        [world.batch_tx("gw-2", 1), world.batch_tx("gw-1", 2, energy=2000)],
        [world.batch_tx("gw-2", 3, voltage=400.0), world.revoke_tx("gw-2")],
        [world.batch_tx("gw-1", 3, energy=3000), world.batch_tx("gw-2", 4)],
    ]


def feed(engine: SoloEngine, txs: list[bytes], height: int) -> list[Committed]:
    for raw in txs:
        engine.submit(raw, T0 + height)
    actions = engine.handle_timeout(T0 + height + 1)
    return [a for a in actions if isinstance(a, Committed)]


def run(engine: SoloEngine, blocks: list[list[bytes]], start: int = 0) -> list[bytes]:
    hashes = []
    for offset, txs in enumerate(blocks):
        hashes += [c.block.hash() for c in feed(engine, txs, start + offset)]
    return hashes


def test_blocks_persist_and_reopen(tmp_path: Path, world: World) -> None:
    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world, LIMITS)
    hashes = run(engine, workload(world))
    state = engine.app.state
    engine.store.close()  # type: ignore[attr-defined]
    store = open_store(path, world)
    assert isinstance(store, Store)
    reloaded = store.load_state()
    assert reloaded == state and reloaded.root() == state.root()
    assert [store.block(h).hash() for h in (1, 2, 3, 4)] == hashes
    assert store.height == 4 and store.last_block() is not None
    results = store.results(3)
    assert isinstance(results, list) and results[1][1] == "ok"
    readings = store.readings_of("gw-1", 1)
    assert [(height, meter) for _, height, meter, _ in readings] == [(1, "M1"), (1, "M2")]
    assert store.readings_of("gw-1", 99) == []
    store.close()


def test_crash_between_blocks_then_continue(tmp_path: Path, world: World) -> None:
    blocks = workload(world)
    straight = run(world.engine(limits=LIMITS), blocks)
    path = tmp_path / "ledger.sqlite"
    first = stored_engine(path, world, LIMITS)
    before = run(first, blocks[:2])
    del first  # the process dies between blocks: nothing is closed cleanly
    second = stored_engine(path, world, LIMITS)
    after = run(second, blocks[2:], start=2)
    assert before + after == straight


def test_crash_inside_a_block_rolls_it_back(tmp_path: Path, world: World) -> None:
    blocks = workload(world)
    straight = run(world.engine(limits=LIMITS), blocks)
    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world, LIMITS)
    run(engine, blocks[:1])
    store = engine.store
    original = store.save_block

    def crash(block, result, seen, app_commit):  # type: ignore[no-untyped-def]
        def failing_commit() -> bytes:
            app_commit()  # the Merkle nodes are written, then the process dies
            raise KeyboardInterrupt

        return original(block, result, seen, failing_commit)

    store.save_block = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        run(engine, blocks[1:2], start=1)
    restarted = stored_engine(path, world, LIMITS)
    assert restarted.app.state.height == 1
    assert run(restarted, blocks[1:], start=1) == straight[1:]


def _corrupt(path: Path, sql: str, params: tuple[object, ...]) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def _flip(data: bytes, position: int, mask: int) -> bytes:
    flipped = bytearray(data)
    flipped[position] ^= mask
    return bytes(flipped)


def test_every_flipped_byte_of_a_stored_block_is_detected(
    tmp_path: Path, world: World, rng: random.Random
) -> None:
    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world, LIMITS)
    run(engine, workload(world))
    store = engine.store
    assert isinstance(store, Store)
    conn = store._conn
    (data,) = conn.execute("SELECT data FROM block WHERE height = 2").fetchone()
    validators = {NODE_ID: (world.node.public_key(), 1)}
    for position in range(len(data)):
        mask = 1 << rng.randrange(8)
        conn.execute("UPDATE block SET data = ? WHERE height = 2", (_flip(data, position, mask),))
        with pytest.raises(StoreCorruptError, match=r"block [23]"):
            store.verify(CHAIN_ID, validators, crypto.verify)
    conn.execute("UPDATE block SET data = ? WHERE height = 2", (data,))
    store.verify(CHAIN_ID, validators, crypto.verify)


@pytest.mark.parametrize(
    ("table", "column", "where"),
    [
        ("reading", "leaf", "idx = 1"),
        ("device", "data", "device_id = 'gw-1'"),
        ("merkle_node", "hash", "level = 1 AND idx = 0"),
        ("seen_commit", "data", "height = 4"),
        ("block", "hash", "height = 3"),
    ],
)
def test_other_flipped_bytes_are_detected(
    tmp_path: Path, world: World, table: str, column: str, where: str
) -> None:
    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world, LIMITS)
    run(engine, workload(world))
    engine.store.close()  # type: ignore[attr-defined]
    conn = sqlite3.connect(path)
    (value,) = conn.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchone()
    conn.close()
    _corrupt(path, f"UPDATE {table} SET {column} = ? WHERE {where}", (_flip(value, 5, 0x10),))
    with pytest.raises(StoreCorruptError) as info:
        open_store(path, world)
    assert info.value.code == "store.corrupt"


def test_a_deleted_newest_block_is_detected(tmp_path: Path, world: World) -> None:
    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world, LIMITS)
    run(engine, workload(world))
    engine.store.close()  # type: ignore[attr-defined]
    _corrupt(path, "DELETE FROM block WHERE height = 4", ())
    with pytest.raises(StoreCorruptError):
        open_store(path, world)


def test_store_of_another_chain_is_refused(tmp_path: Path, world: World) -> None:
    path = tmp_path / "ledger.sqlite"
    open_store(path, world).close()
    with pytest.raises(StoreGenesisError) as info:
        Store.open(path, CHAIN_ID, b"\x09" * 32, {}, crypto.verify)
    assert info.value.code == "store.genesis"


def test_a_file_that_is_not_a_database(tmp_path: Path, world: World) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreCorruptError):
        open_store(path, world)


def test_sqlite_settings(tmp_path: Path, world: World) -> None:
    store = open_store(tmp_path / "ledger.sqlite", world)
    assert isinstance(store, Store)
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_flipped_bytes_anywhere_in_the_file(
    tmp_path: Path, world: World, rng: random.Random
) -> None:
    """Either the store refuses (store.corrupt, or store.genesis when the byte hit the
    stored genesis hash), or it serves exactly the same ledger
    (the byte was in free space): never another exception, never other data."""
    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world, LIMITS)
    hashes = run(engine, workload(world))
    root = engine.app.state.root()
    engine.store.close()  # type: ignore[attr-defined]
    original = path.read_bytes()
    refused = served = 0
    for _ in range(150):
        position = rng.randrange(len(original))
        path.write_bytes(_flip(original, position, 1 << rng.randrange(8)))
        try:
            store = open_store(path, world)
        except StoreError as exc:
            assert exc.code in ("store.corrupt", "store.genesis"), exc
            refused += 1
            continue
        assert isinstance(store, Store)
        assert [store.block(h).hash() for h in range(1, store.height + 1)] == hashes, position
        assert store.load_state().root() == root, position
        store.close()
        served += 1
    assert refused > 0
