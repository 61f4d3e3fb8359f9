"""The classic fork attempt that locks defeat, played message by message on four cores.

Roles (proposers: round 0 node-1, round 1 node-2):
    node-1  Byzantine: proposes V in round 0, then sends conflicting votes
    node-0  "A": sees the polka and the precommits for V and decides V in round 0
    node-3  "B": sees the polka, precommits V (locks), but not enough precommits to decide
    node-2  "C": prevotes nil (its proposal timed out), proposes W in round 1
A then leaves (decided, or cut off).  If B ignored its lock, B, C and node-1 would form a
polka and 2f+1 precommits for W: a fork.  With locks B prevotes nil and W gets nowhere.
"""

from __future__ import annotations

import pytest

from aggregator.consensus import core as core_mod
from aggregator.consensus.core import (
    Broadcast,
    Core,
    Decide,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from aggregator.consensus.messages import PRECOMMIT, PREVOTE, Proposal, Vote, value_id
from tests.consensus.helpers import (
    feed,
    proposal,
    propose_to,
    sent_votes,
    started,
    vote,
)

V, W = b"ok-v", b"ok-w"
BYZ = "node-1"


def deliver(core: Core, votes: list[Vote]) -> list[object]:
    return list(feed(core, [VoteReceived(v) for v in votes]))


def decisions(actions: list[object]) -> list[bytes]:
    return [a.value for a in actions if isinstance(a, Decide)]


def play() -> tuple[list[bytes], list[bytes], list[bytes]]:
    a, b, c = started("node-0"), started("node-3"), started("node-2")
    p0 = proposal(1, 0, V)
    vid = value_id(V)
    byz_prevote_v, byz_prevote_nil = vote(PREVOTE, 1, 0, vid, BYZ), vote(PREVOTE, 1, 0, None, BYZ)
    (a_pv,) = sent_votes(propose_to(a, p0), PREVOTE)
    (b_pv,) = sent_votes(propose_to(b, p0), PREVOTE)
    (c_pv,) = sent_votes(c.step(TimeoutFired("propose", 1, 0), 1000), PREVOTE)
    assert c_pv.value_id is None
    (a_pc,) = sent_votes(deliver(a, [b_pv, byz_prevote_v]), PRECOMMIT)
    (b_pc,) = sent_votes(deliver(b, [a_pv, byz_prevote_v]), PRECOMMIT)
    assert a_pc.value_id == b_pc.value_id == vid and b.locked_round == 0
    deliver(c, [a_pv, b_pv, byz_prevote_nil])
    (c_pc,) = sent_votes(c.step(TimeoutFired("prevote", 1, 0), 1500), PRECOMMIT)
    assert c_pc.value_id is None and c.locked_round == -1
    decided_a = decisions(deliver(a, [b_pc, vote(PRECOMMIT, 1, 0, vid, BYZ)]))
    byz_pc_nil = vote(PRECOMMIT, 1, 0, None, BYZ)
    assert decisions(deliver(b, [c_pc, byz_pc_nil])) == []
    deliver(c, [b_pc, byz_pc_nil])
    # A is gone; B and C move to round 1, where C proposes W
    b.step(TimeoutFired("precommit", 1, 0), 2000)
    c.step(TimeoutFired("precommit", 1, 0), 2000)
    assert (b.round, c.round) == (1, 1)
    return decided_a, *round_one(b, c)


def round_one(b: Core, c: Core) -> tuple[list[bytes], list[bytes]]:
    proposed = c.step(ValueReady(1, 1, W), 2100)  # C proposes W and prevotes it
    (p1,) = [a.message for a in proposed
             if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]
    (c_pv,) = sent_votes(proposed, PREVOTE)
    wid = value_id(W)
    (b_pv,) = sent_votes(propose_to(b, p1), PREVOTE)
    byz_pv = vote(PREVOTE, 1, 1, wid, BYZ)
    b_out = deliver(b, [c_pv, byz_pv])
    c_out = deliver(c, [b_pv, byz_pv])
    byz_pc = vote(PRECOMMIT, 1, 1, wid, BYZ)
    b_pcs, c_pcs = sent_votes(b_out, PRECOMMIT), sent_votes(c_out, PRECOMMIT)
    decided_b = decisions(deliver(b, [*c_pcs, byz_pc]))
    decided_c = decisions(deliver(c, [*b_pcs, byz_pc]))
    return decided_b, decided_c


def test_locks_stop_the_fork() -> None:
    decided_a, decided_b, decided_c = play()
    assert decided_a == [V]
    assert decided_b == decided_c == []


def test_without_locks_the_same_messages_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_mod.Core, "_locked_on", lambda self, vid: True)
    decided_a, decided_b, decided_c = play()
    assert decided_a == [V] and decided_b == decided_c == [W]
