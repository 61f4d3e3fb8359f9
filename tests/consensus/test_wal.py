"""The WAL: durable records, torn tails, and no double signing across a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.consensus.core import (
    Action,
    Broadcast,
    Core,
    Persist,
    Start,
    TimeoutFired,
    ValueReady,
)
from aggregator.consensus.messages import PRECOMMIT, PREVOTE, Proposal, Vote, value_id
from aggregator.consensus.wal import FileWal, MemoryWal, Wal, WalCorruptError
from tests.consensus.helpers import (
    config,
    proposal,
    propose_to,
    sent_votes,
    votes_from,
)

V, W = b"ok-v", b"ok-w"
ME = "node-0"


def perform(wal: Wal, actions: list[Action]) -> None:
    """What a shell does with Persist: append (durably) before anything later is sent."""
    for action in actions:
        if isinstance(action, Persist):
            wal.append(action.height, action.record)


def running(wal: Wal, height: int = 1) -> Core:
    core = Core.restore(config(ME), height, wal.records())
    perform(wal, core.step(Start(), 0))
    return core


def test_file_wal_keeps_records_across_reopen_and_prunes(tmp_path: Path) -> None:
    wal = FileWal(tmp_path / "wal")
    wal.append(1, b"one")
    wal.append(2, b"two")
    wal.close()
    reopened = FileWal(tmp_path / "wal")
    assert reopened.records() == [(1, b"one"), (2, b"two")]
    reopened.prune_below(2)
    reopened.append(3, b"three")
    reopened.close()
    with FileWal(tmp_path / "wal") as last:
        assert last.records() == [(2, b"two"), (3, b"three")]


def test_torn_last_entry_is_cut_off_and_appends_continue(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = FileWal(path)
    wal.append(1, b"whole")
    wal.append(1, b"torn by a crash")
    wal.close()
    path.write_bytes(path.read_bytes()[:-4])
    again = FileWal(path)
    assert again.records() == [(1, b"whole")]
    again.append(1, b"next")
    again.close()
    with FileWal(path) as last:
        assert last.records() == [(1, b"whole"), (1, b"next")]


def test_corruption_before_the_end_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = FileWal(path)
    wal.append(1, b"first")
    wal.append(1, b"second")
    wal.close()
    data = bytearray(path.read_bytes())
    data[17] ^= 0xFF  # inside the first payload
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        FileWal(path)
    assert info.value.code == "consensus.wal_corrupt"


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_replayed_wal_prevents_a_second_different_prevote(kind: str, tmp_path: Path) -> None:
    wal: Wal = MemoryWal() if kind == "memory" else FileWal(tmp_path / "wal")
    core = running(wal)
    actions = propose_to(core, proposal(1, 0, V))
    perform(wal, actions)
    (before,) = sent_votes(actions, PREVOTE)
    # crash here: the prevote for V is on disk, perhaps never sent
    if isinstance(wal, FileWal):
        wal.close()
        wal = FileWal(tmp_path / "wal")
    restarted = Core.restore(config(ME), 1, wal.records())
    start = restarted.step(Start(), 10)
    assert before in [a.message for a in start if isinstance(a, Broadcast)]  # re-sent
    after = restarted.step(TimeoutFired("propose", 1, 0), 1010)  # would prevote nil
    assert all(v == before for v in sent_votes(after, PREVOTE))
    assert not any(isinstance(a, Persist) for a in after)
    if isinstance(wal, FileWal):
        wal.close()


def test_replayed_wal_keeps_the_lock() -> None:
    wal = MemoryWal()
    core = running(wal)
    perform(wal, propose_to(core, proposal(1, 0, V)))
    perform(wal, votes_from(core, PREVOTE, 0, value_id(V), ["node-1", "node-2"]))
    assert core.locked_round == 0
    restarted = Core.restore(config(ME), 1, wal.records())
    assert (restarted.locked_value, restarted.locked_round) == (V, 0)
    restarted.step(Start(), 0)
    assert restarted.step_ == 2  # its precommit is on record: step precommit
    votes_from(restarted, PREVOTE, 1, None, ["node-2", "node-3"])
    out = propose_to(restarted, proposal(1, 1, W))
    assert sent_votes(out, PREVOTE)[0].value_id is None


def test_a_restored_lock_keeps_the_polka_that_justifies_it() -> None:
    wal = MemoryWal()
    core = running(wal)
    perform(wal, propose_to(core, proposal(1, 0, V)))
    polka = votes_from(core, PREVOTE, 0, value_id(V), ["node-1", "node-3"])
    perform(wal, polka)
    restarted = Core.restore(config(ME), 1, wal.records())
    resent = restarted.messages_to_resend()
    relayed = {m.node_id for m in resent if isinstance(m, Vote) and m.type == PREVOTE}
    assert relayed == {ME, "node-1", "node-3"}  # others can check the lock's validRound


def test_replayed_wal_re_sends_the_same_proposal() -> None:
    wal = MemoryWal()
    proposer_id = "node-1"
    core = Core.restore(config(proposer_id), 1, [])
    core.step(Start(), 0)
    out = core.step(ValueReady(1, 0, V), 0)
    perform(wal, out)
    (original,) = [a.message for a in out if isinstance(a, Broadcast)
                   and isinstance(a.message, Proposal)]
    restarted = Core.restore(config(proposer_id), 1, wal.records())
    again = restarted.step(Start(), 50)
    proposals = [a.message for a in again if isinstance(a, Broadcast)
                 and isinstance(a.message, Proposal)]
    assert proposals == [original]
    assert not any(isinstance(a, Persist) for a in again)
    late = restarted.step(ValueReady(1, 0, W), 60)  # a late answer must not make a second
    assert not [a for a in late if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]


def test_records_of_other_heights_are_ignored() -> None:
    wal = MemoryWal()
    core = running(wal)
    perform(wal, propose_to(core, proposal(1, 0, V)))
    restarted = Core.restore(config(ME), 2, wal.records())
    assert restarted.messages_to_resend() == []
    assert all(isinstance(m, Vote | Proposal) for m in core.messages_to_resend())
    assert PRECOMMIT not in [m.type for m in core.messages_to_resend() if isinstance(m, Vote)]
