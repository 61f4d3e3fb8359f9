"""The state machine, one rule of Algorithm 1 (Buchman, Kwon, Milosevic 2018) at a time.

Four validators of power 1: 2f+1 = 3, f+1 = 2.  Proposers: (1, 0) node-1, (1, 1) node-2,
(1, 2) node-3, (1, 3) node-0.  The core under test is node-0 unless said otherwise.
"""

from __future__ import annotations

from aggregator.consensus.certificate import verify_certificate
from aggregator.consensus.core import (
    Broadcast,
    BuildValue,
    CommitReceived,
    Core,
    Decide,
    Dropped,
    Evidence,
    Persist,
    ProposalReceived,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    ValueReady,
    VoteReceived,
    decode_record,
)
from aggregator.consensus.messages import PRECOMMIT, PREVOTE, Proposal, value_id
from edge.crypto import verify
from tests.consensus.helpers import (
    CHAIN,
    TIMEOUTS,
    VALIDATORS,
    config,
    feed,
    proposal,
    propose_to,
    proposer,
    sent,
    sent_votes,
    started,
    vote,
    votes_from,
)

V, W = b"ok-v", b"ok-w"
ME = "node-0"


def timeouts(actions: list[object]) -> list[ScheduleTimeout]:
    return [a for a in actions if isinstance(a, ScheduleTimeout)]


def lock_on_v(core: Core) -> None:
    """Round 0: proposal V and a polka for it, so the core precommits and locks V."""
    propose_to(core, proposal(1, 0, V))
    votes_from(core, PREVOTE, 0, value_id(V), ["node-1", "node-2"])
    assert (core.locked_value, core.locked_round) == (V, 0)


def to_round(core: Core, round_: int) -> None:
    """f+1 validators speak in `round_`: rule 55 moves the core there."""
    votes_from(core, PREVOTE, round_, None, ["node-2", "node-3"])
    assert core.round == round_


def test_proposer_asks_for_a_value_then_proposes_and_prevotes_it() -> None:
    core = Core(config("node-1"))
    start = core.step(Start(), 0)
    assert BuildValue(1, 0) in start
    actions = core.step(ValueReady(1, 0, V), 5)
    kinds = [type(a) for a in actions if isinstance(a, Persist | Broadcast)]
    assert kinds == [Persist, Broadcast, Persist, Broadcast]  # each written before sent
    p, v = sent(actions)
    assert isinstance(p, Proposal) and (p.value, p.valid_round) == (V, -1)
    assert decode_record(actions[0].record).message == p  # type: ignore[union-attr]
    assert v == vote(PREVOTE, 1, 0, value_id(V), "node-1")


def test_lines_22_27_valid_fresh_proposal_gets_a_prevote_for_it() -> None:
    core = started(ME)
    assert sent_votes(propose_to(core, proposal(1, 0, V)), PREVOTE)[0].value_id == value_id(V)


def test_lines_22_27_invalid_proposal_gets_a_nil_prevote() -> None:
    core = started(ME)
    assert sent_votes(propose_to(core, proposal(1, 0, b"bad")), PREVOTE)[0].value_id is None


def test_lines_57_60_timeout_propose_prevotes_nil() -> None:
    core = started(ME)
    out = core.step(TimeoutFired("propose", 1, 0), 1000)
    assert sent_votes(out, PREVOTE)[0].value_id is None
    assert core.step(TimeoutFired("propose", 1, 0), 1000) == []  # step is prevote now


def test_lines_36_41_polka_locks_and_precommits() -> None:
    core = started(ME)
    propose_to(core, proposal(1, 0, V))
    out = votes_from(core, PREVOTE, 0, value_id(V), ["node-1", "node-2"])
    assert sent_votes(out, PRECOMMIT)[0].value_id == value_id(V)
    assert (core.locked_round, core.valid_round) == (0, 0)


def test_line_23_locked_node_prevotes_nil_for_another_fresh_value() -> None:
    core = started(ME)
    lock_on_v(core)
    to_round(core, 1)
    out = propose_to(core, proposal(1, 1, W))
    assert sent_votes(out, PREVOTE)[0].value_id is None


def test_line_23_locked_node_prevotes_its_locked_value_again() -> None:
    core = started(ME)
    lock_on_v(core)
    to_round(core, 1)
    out = propose_to(core, proposal(1, 1, V))
    assert sent_votes(out, PREVOTE)[0].value_id == value_id(V)


def test_lines_28_30_polka_in_a_later_round_unlocks() -> None:
    core = started(ME)
    lock_on_v(core)
    to_round(core, 2)
    votes_from(core, PREVOTE, 1, value_id(W), ["node-1", "node-2", "node-3"])
    out = propose_to(core, proposal(1, 2, W, valid_round=1))
    assert sent_votes(out, PREVOTE)[0].value_id == value_id(W)


def test_line_29_proof_older_than_the_lock_does_not_unlock() -> None:
    core = started(ME)
    to_round(core, 1)
    propose_to(core, proposal(1, 1, V))
    votes_from(core, PREVOTE, 1, value_id(V), ["node-1", "node-2"])
    assert core.locked_round == 1
    to_round(core, 2)
    votes_from(core, PREVOTE, 0, value_id(W), ["node-1", "node-2", "node-3"])
    out = propose_to(core, proposal(1, 2, W, valid_round=0))
    assert sent_votes(out, PREVOTE)[0].value_id is None


def test_lines_42_43_and_15_16_valid_value_is_carried_to_our_own_proposal() -> None:
    core = started(ME)
    core.step(TimeoutFired("propose", 1, 0), 1000)  # prevote nil
    votes_from(core, PREVOTE, 0, None, ["node-1", "node-2"])
    core.step(TimeoutFired("prevote", 1, 0), 1500)  # precommit nil: step is precommit
    propose_to(core, proposal(1, 0, V))
    votes_from(core, PREVOTE, 0, value_id(V), ["node-1", "node-2", "node-3"])
    assert (core.valid_value, core.valid_round, core.locked_round) == (V, 0, -1)
    out = votes_from(core, PREVOTE, 3, None, ["node-1", "node-2"])  # node-0 proposes round 3
    assert proposer(1, 3) == ME
    ours = [m for m in sent(out) if isinstance(m, Proposal)]
    assert [(p.value, p.valid_round) for p in ours] == [(V, 0)]
    assert not any(isinstance(a, BuildValue) for a in out)


def test_lines_34_35_prevote_quorum_of_anything_schedules_one_prevote_timeout() -> None:
    core = started(ME)
    core.step(TimeoutFired("propose", 1, 0), 1000)
    out = votes_from(core, PREVOTE, 0, value_id(V), ["node-1", "node-2"], now_ms=1100)
    assert [(t.kind, t.at_ms) for t in timeouts(out)] == [("prevote", 1100 + 400)]
    assert timeouts(votes_from(core, PREVOTE, 0, None, ["node-3"])) == []
    out = core.step(TimeoutFired("prevote", 1, 0), 1500)  # lines 61-64
    assert sent_votes(out, PRECOMMIT)[0].value_id is None


def test_lines_44_46_nil_polka_precommits_nil() -> None:
    core = started(ME)
    core.step(TimeoutFired("propose", 1, 0), 1000)
    out = votes_from(core, PREVOTE, 0, None, ["node-1", "node-2"])
    assert sent_votes(out, PRECOMMIT)[0].value_id is None


def test_lines_47_48_and_65_67_precommit_quorum_then_timeout_starts_next_round() -> None:
    core = started(ME)
    out = votes_from(core, PRECOMMIT, 0, None, ["node-1", "node-2", "node-3"], now_ms=50)
    assert [(t.kind, t.at_ms) for t in timeouts(out)] == [("precommit", 50 + 300)]
    out = core.step(TimeoutFired("precommit", 1, 0), 350)
    assert core.round == 1
    assert ScheduleTimeout("propose", 1, 1, 350 + 1000 + 500) in out


def test_timeouts_grow_per_round_and_are_capped() -> None:
    assert [TIMEOUTS.of("propose", r) for r in range(3)] == [1000, 1500, 2000]
    assert [TIMEOUTS.of("prevote", r) for r in range(3)] == [400, 600, 800]
    assert TIMEOUTS.of("precommit", 10**6) == TIMEOUTS.cap_ms


def test_line_55_f_plus_1_in_a_higher_round_skips_there_and_f_does_not() -> None:
    core = started(ME)
    votes_from(core, PRECOMMIT, 5, None, ["node-1"])
    assert core.round == 0
    out = votes_from(core, PREVOTE, 4, None, ["node-2"], now_ms=10)
    assert core.round == 4  # marks 5 and 4: f+1 are at rounds >= 4
    assert ScheduleTimeout("propose", 1, 4, 10 + 1000 + 4 * 500) in out


def test_lines_49_54_decide_with_a_certificate_anyone_can_verify() -> None:
    core = started(ME)
    propose_to(core, proposal(1, 0, V))
    out = votes_from(core, PRECOMMIT, 0, value_id(V), ["node-1", "node-2", "node-3"])
    decide = next(a for a in out if isinstance(a, Decide))
    assert (decide.height, decide.round, decide.value) == (1, 0, V)
    verify_certificate(decide.certificate, CHAIN, VALIDATORS, verify)
    assert (core.height, core.round, core.locked_round) == (2, 0, -1)
    assert any(isinstance(a, ScheduleTimeout) and a.height == 2 for a in out)


def test_line_49_decides_for_an_earlier_round_too() -> None:
    core = started(ME)
    propose_to(core, proposal(1, 1, V))
    to_round(core, 2)
    out = votes_from(core, PRECOMMIT, 1, value_id(V), ["node-1", "node-2", "node-3"])
    assert [(a.height, a.round) for a in out if isinstance(a, Decide)] == [(1, 1)]


def test_no_decision_without_the_value() -> None:
    core = started(ME)
    out = votes_from(core, PRECOMMIT, 0, value_id(V), ["node-1", "node-2", "node-3"])
    assert not any(isinstance(a, Decide) for a in out)


def test_commit_received_decides_and_a_weak_certificate_is_dropped() -> None:
    donor = started(ME)
    propose_to(donor, proposal(1, 0, V))
    out = votes_from(donor, PRECOMMIT, 0, value_id(V), ["node-1", "node-2", "node-3"])
    cert = next(a for a in out if isinstance(a, Decide)).certificate
    behind = started("node-2")
    weak = type(cert)(cert.height, cert.round, cert.value_id, cert.signatures[:2])
    dropped = behind.step(CommitReceived(V, weak), 0)
    assert [a.code for a in dropped if isinstance(a, Dropped)] == ["consensus.cert_power"]
    decided = behind.step(CommitReceived(V, cert), 0)
    assert [a.height for a in decided if isinstance(a, Decide)] == [1]
    assert behind.height == 2


def test_conflicting_votes_are_evidence_once() -> None:
    core = started(ME)
    propose_to(core, proposal(1, 0, V))
    first = votes_from(core, PREVOTE, 0, value_id(V), ["node-3"])
    assert not any(isinstance(a, Evidence) for a in first)
    second = votes_from(core, PREVOTE, 0, None, ["node-3"])
    assert len([a for a in second if isinstance(a, Evidence)]) == 1
    assert not any(isinstance(a, Evidence) for a in votes_from(core, PREVOTE, 0, None, ["node-3"]))


def test_forged_unknown_and_wrong_proposer_messages_are_dropped() -> None:
    core = started(ME)
    good = vote(PREVOTE, 1, 0, None, "node-1")
    forged = type(good)(good.type, 1, 0, None, "node-2", good.signature)
    codes = [a.code for a in feed(core, [VoteReceived(forged)]) if isinstance(a, Dropped)]
    assert codes == ["consensus.signature"]
    stranger = type(good)(good.type, 1, 0, None, "node-9", good.signature)
    codes = [a.code for a in feed(core, [VoteReceived(stranger)]) if isinstance(a, Dropped)]
    assert codes == ["consensus.unknown_validator"]
    wrong = proposal(1, 0, V, node_id="node-2")
    codes = [a.code for a in feed(core, [ProposalReceived(wrong)]) if isinstance(a, Dropped)]
    assert codes == ["consensus.not_proposer"]


def test_messages_of_other_heights_are_ignored() -> None:
    core = started(ME)
    assert votes_from(core, PRECOMMIT, 0, None, ["node-1", "node-2", "node-3"])
    later = feed(core, [VoteReceived(vote(PREVOTE, 2, 0, None, n)) for n in ("node-1", "node-2")])
    assert later == [] and core.round == 0
