"""The solo engine: admission, back-pressure, block cuts by count, bytes and time, receipts."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import pytest

from aggregator import app as app_mod
from aggregator import engine as engine_mod
from aggregator import rules, tx
from aggregator.block import verify_commit
from aggregator.engine import (
    ACCEPTED,
    DUPLICATE_PENDING,
    FULL,
    REJECTED,
    Action,
    Answer,
    Committed,
    EngineLimits,
    Receipt,
    SoloEngine,
    Timeout,
    TxIn,
)
from edge import crypto
from edge.portable import receipt
from tests.aggregator.helpers import GENESIS_HASH, NODE_ID, T0, World, stored_engine

LIMITS = EngineLimits(
    txs_max=3, bytes_max=1 << 20, timeout_s=0.5, mempool_txs_max=5, mempool_bytes_max=1 << 22
)


def receipts_of(actions: Sequence[object], world: World) -> dict[str, list[receipt.Entry]]:
    keys = {NODE_ID: world.node.public_key()}
    found: dict[str, list[receipt.Entry]] = {}
    for action in actions:
        if isinstance(action, Receipt):
            node_id, device_id, entries = receipt.verify(action.data, keys, crypto.verify)
            assert node_id == NODE_ID and device_id == action.device_id
            found.setdefault(device_id, []).extend(entries)
    return found


def committed(actions: Sequence[object]) -> list[Committed]:
    return [a for a in actions if isinstance(a, Committed)]


def test_block_cut_by_timeout_with_injected_time(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    assert engine.next_deadline() is None
    assert engine.submit(world.batch_tx("gw-1", 1), T0 + 0.25).status == ACCEPTED
    assert engine.next_deadline() == T0 + 0.75
    assert engine.handle_timeout(T0 + 0.7) == []
    actions = engine.handle_timeout(T0 + 0.75)
    [block] = committed(actions)
    assert block.block.height == 1 and block.block.header.time_s == T0
    assert block.block.header.prev_hash == GENESIS_HASH and block.block.last_commit is None
    assert receipts_of(actions, world) == {"gw-1": [receipt.committed(1, 1)]}
    assert engine.next_deadline() is None and len(engine.mempool) == 0


def test_block_cut_by_count(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    actions = [a for s in (1, 2, 3) for a in engine.step(TxIn(world.batch_tx("gw-1", s), s), T0)]
    answers = [a for a in actions if isinstance(a, Answer)]
    assert [a.token for a in answers] == [1, 2, 3]
    [block] = committed(actions)
    assert len(block.block.txs) == 3
    assert receipts_of(actions, world)["gw-1"] == [receipt.committed(s, 1) for s in (1, 2, 3)]


def test_block_cut_by_bytes(world: World) -> None:
    one = world.batch_tx("gw-1", 1)
    limits = EngineLimits(
        txs_max=100,
        bytes_max=2 * len(one),
        timeout_s=9,
        mempool_txs_max=100,
        mempool_bytes_max=1 << 22,
    )
    engine = world.engine(limits=limits)
    engine.submit(one, T0)
    assert engine.next_deadline() == T0 + 9
    engine.submit(world.batch_tx("gw-1", 2), T0 + 1)
    assert engine.next_deadline() == T0  # a full block is due at once
    assert len(committed(engine.handle_timeout(T0 + 1))) == 1


def test_mempool_full_is_back_pressure(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    for seq in range(1, 6):
        assert engine.submit(world.batch_tx("gw-1", seq), T0).status == ACCEPTED
    full = engine.submit(world.batch_tx("gw-1", 6), T0)
    assert (full.status, full.code, full.retry_after_s) == (FULL, "mempool.full", 0.5)
    assert len(committed(engine.handle_timeout(T0))) == 1  # the full block, at once
    actions = engine.handle_timeout(T0 + 0.5)  # the rest, on its timeout
    assert [c.block.height for c in committed(actions)] == [2]
    assert engine.submit(world.batch_tx("gw-1", 6), T0).status == ACCEPTED


def test_duplicates_in_the_mempool_and_after_commit(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    first = world.batch_tx("gw-1", 1)
    engine.submit(first, T0)
    assert engine.submit(first, T0).status == DUPLICATE_PENDING
    # Same device and seq, other bytes: held once.
    assert engine.submit(world.batch_tx("gw-1", 1, energy=5), T0).status == DUPLICATE_PENDING
    engine.handle_timeout(T0 + 1)
    again = engine.submit(first, T0 + 2)
    assert (again.status, again.code) == (ACCEPTED, rules.DUPLICATE)
    assert again.receipt is not None
    assert receipts_of([Receipt("gw-1", again.receipt)], world) == {
        "gw-1": [receipt.committed(1, 1)]
    }


def test_rejections_and_which_get_receipts(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    engine.submit(world.batch_tx("gw-1", 2), T0)
    engine.handle_timeout(T0 + 1)
    replay = engine.submit(world.batch_tx("gw-1", 2, energy=9), T0 + 2)  # seq 2 again
    assert (replay.status, replay.code) == (REJECTED, rules.REPLAY)
    assert receipts_of([Receipt("gw-1", replay.receipt or b"")], world) == {
        "gw-1": [receipt.rejected(2, rules.REPLAY)]
    }
    forged = bytearray(world.message("gw-1", 3))
    forged[-1] ^= 1
    bad = engine.submit(tx.encode(tx.BATCH, bytes(forged)), T0 + 2)
    # Anyone can forge a device id: no signed receipt that would end the real batch 3.
    assert (bad.status, bad.code, bad.receipt) == (REJECTED, "cose.signature", None)
    garbage = engine.submit(b"\x00", T0 + 2)
    assert (garbage.status, garbage.code) == (REJECTED, "tx.format")
    status = engine.status()
    assert status["rejects_by_code"] == {"cose.signature": 1, "rule.replay": 1, "tx.format": 1}
    assert status["height"] == 1 and status["batches_committed"] == 1


def test_receipts_are_signed_by_the_receipt_signer_and_blocks_by_the_node_key(
    world: World,
) -> None:
    used: list[str] = []

    def signer(name: str, sign: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
        def counted(message: bytes) -> bytes:
            used.append(name)
            return sign(message)
        return counted

    key = crypto.SigningKey.from_bytes(world.node.to_bytes())
    node_signer = engine_mod.NodeSigner(NODE_ID, signer("block", key.sign),
                                        signer("receipt", key.sign_random_nonce))
    engine = SoloEngine(world.app(), engine_mod.MemoryBlockStore(), node_signer, GENESIS_HASH,
                        T0, LIMITS)
    engine.submit(world.batch_tx("gw-1", 1), T0)
    first = engine.handle_timeout(T0 + 1)
    assert used == ["block", "receipt"]
    again = engine.submit(world.batch_tx("gw-1", 1), T0 + 2)  # its receipt was lost
    replay = engine.submit(world.batch_tx("gw-1", 1, energy=9), T0 + 2)
    assert used == ["block", "receipt", "receipt", "receipt"]
    sent = [*first, Receipt("gw-1", again.receipt or b""), Receipt("gw-1", replay.receipt or b"")]
    assert receipts_of(sent, world) == {"gw-1": [receipt.committed(1, 1), receipt.committed(1, 1),
                                                 receipt.rejected(1, rules.REPLAY)]}


def test_submit_message_wraps_a_transport_message(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    result = engine.submit_message(world.message("gw-1", 1), T0)
    assert (result.status, result.device_id, result.seq) == (ACCEPTED, "gw-1", 1)
    too_big = engine.submit_message(b"\x00" * (tx.TX_BYTES_MAX + 1), T0)
    assert (too_big.status, too_big.code) == (REJECTED, "tx.limit")


def test_each_block_carries_the_commit_of_the_previous(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    blocks = []
    for seq in range(1, 4):
        engine.submit(world.batch_tx("gw-1", seq), T0 + seq)
        blocks += [c.block for c in committed(engine.step(Timeout(), T0 + seq + 1))]
    validators = {NODE_ID: (world.node.public_key(), 1)}
    for previous, current in itertools.pairwise(blocks):
        commit = current.last_commit
        assert commit is not None and commit.block_hash == previous.hash()
        assert current.header.prev_hash == previous.hash()
        verify_commit(commit, "gl-test", validators, crypto.verify)


def test_block_time_never_goes_back(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    engine.submit(world.batch_tx("gw-1", 1), T0 + 100)
    engine.handle_timeout(T0 + 101)
    engine.submit(world.batch_tx("gw-1", 2), T0 + 50)  # the host clock stepped back
    [block] = committed(engine.handle_timeout(T0 + 51))
    assert block.block.header.time_s == T0 + 101


def test_rejected_in_block_counts_and_violation_header(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    engine.submit(world.revoke_tx("gw-2"), T0)
    engine.submit(world.batch_tx("gw-1", 1), T0)
    engine.submit(world.batch_tx("gw-1", 5 + rules.SEQ_WINDOW), T0)  # 2..5 fall out: a gap
    [block] = committed(engine.handle_timeout(T0))
    assert block.block.header.violations == 1
    assert engine.status()["violations"] == 1


def test_results_have_a_json_view(world: World) -> None:
    engine = world.engine(limits=LIMITS)
    engine.submit(world.batch_tx("gw-1", 1), T0)
    engine.submit(world.batch_tx("gw-1", 3 + rules.SEQ_WINDOW), T0)  # 2 falls out: a gap
    [block] = committed(engine.handle_timeout(T0 + 1))
    views = [r.to_json() for r in block.results]
    assert views[1]["violations"][0]["code"] == "rule.gap"  # type: ignore[index]
    assert views[0]["leaf_count"] == 1 and views[1]["first_leaf"] == 1


def test_a_tx_bigger_than_a_block_is_refused(world: World) -> None:
    one = world.batch_tx("gw-1", 1)
    limits = EngineLimits(
        txs_max=10,
        bytes_max=len(one) - 1,
        timeout_s=1.0,
        mempool_txs_max=10,
        mempool_bytes_max=1 << 20,
    )
    engine = world.engine(limits=limits)
    refused = engine.submit(one, T0)
    assert (refused.status, refused.code) == (REJECTED, "tx.limit")
    assert engine.next_deadline() is None


def _resend_after_later_commit(world: World, engine: SoloEngine) -> None:
    first = world.batch_tx("gw-1", 1)
    engine.submit(first, T0)
    engine.handle_timeout(T0 + 1)
    engine.submit(world.batch_tx("gw-1", 2), T0 + 2)
    engine.handle_timeout(T0 + 3)
    # The receipt of seq 1 was lost and the device sends the same bytes again after
    # seq 2 committed: it gets the commit receipt of height 1, not "rejected: replay".
    again = engine.submit(first, T0 + 4)
    assert (again.status, again.code) == (ACCEPTED, rules.DUPLICATE)
    assert receipts_of([Receipt("gw-1", again.receipt or b"")], world) == {
        "gw-1": [receipt.committed(1, 1)]
    }
    # Other bytes under an old seq are a replay.
    other = engine.submit(world.batch_tx("gw-1", 1, energy=7), T0 + 4)
    assert (other.status, other.code) == (REJECTED, rules.REPLAY)
    status = engine.status()
    assert status["height"] == 2
    # The lost-receipt resend is counted as a duplicate, the forgery as the one replay.
    assert status["rejects_by_code"] == {rules.DUPLICATE: 1, rules.REPLAY: 1}


def test_older_batch_sent_again_gets_its_commit_receipt(world: World) -> None:
    _resend_after_later_commit(world, world.engine(limits=LIMITS))


def test_older_batch_sent_again_gets_its_commit_receipt_from_sqlite(
    world: World, tmp_path: Path
) -> None:
    _resend_after_later_commit(world, stored_engine(tmp_path / "node.sqlite", world, LIMITS))


def _drive(steps: Generator[None, None, list[Action]],
           between: Callable[[], None] = lambda: None) -> tuple[int, list[Action]]:
    pauses = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return pauses, done.value
        pauses += 1
        between()


def test_a_cut_in_steps_is_the_cut_and_admits_in_its_pauses(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block cut in slices gives the block an atomic cut gives; txs admitted in its
    pauses wait in the mempool for the next block, and nothing of theirs is lost."""
    monkeypatch.setattr(app_mod, "EXECUTE_SLICE_TXS", 2)
    monkeypatch.setattr(engine_mod, "RECEIPT_SLICE", 4)
    # 8 txs: 3 pauses in execution, one before the roots, one before storing, one before
    # the receipts and one among them; 7 admitted do not fill the next block, so the
    # generator cuts one block only.
    limits = EngineLimits(txs_max=8, bytes_max=1 << 20, timeout_s=0.5, mempool_txs_max=20,
                          mempool_bytes_max=1 << 22)
    atomic, stepped = world.engine(limits=limits), world.engine(limits=limits)
    first = [world.batch_tx(f"gw-{n}", 1) for n in range(8)]
    for engine in (atomic, stepped):
        for raw in first:
            assert engine.submit(raw, T0).status == ACCEPTED
    late = iter([world.batch_tx(f"gw-{n}", 2) for n in range(8)])
    answers: list[str] = []

    def admit_one() -> None:
        raw = next(late, None)
        if raw is not None:
            answers.append(stepped.submit(raw, T0 + 1).status)

    pauses, actions = _drive(stepped.handle_timeout_steps(T0 + 1), admit_one)
    [expected] = committed(atomic.handle_timeout(T0 + 1))
    [block] = committed(actions)
    assert pauses == 7 and answers == [ACCEPTED] * pauses
    assert block.block.hash() == expected.block.hash()
    assert receipts_of(actions, world) == {f"gw-{n}": [receipt.committed(1, 1)] for n in range(8)}
    assert len(stepped.mempool) == pauses  # admitted in the pauses, for block 2
    [second] = committed(stepped.handle_timeout(T0 + 2))
    assert len(second.block.txs) == pauses


def test_an_abandoned_cut_leaves_state_and_mempool_as_they_were(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_mod, "EXECUTE_SLICE_TXS", 1)
    engine = world.engine(limits=LIMITS)
    for seq in (1, 2, 3):
        engine.submit(world.batch_tx("gw-1", seq), T0)
    steps = engine.handle_timeout_steps(T0 + 1)
    next(steps)
    steps.close()  # the node shut down mid-block
    assert engine.app.state.height == 0 and len(engine.mempool) == 3
    [block] = committed(engine.handle_timeout(T0 + 1))
    assert len(block.block.txs) == 3 and block.block.height == 1
