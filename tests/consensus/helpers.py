"""A four-validator cluster on paper: keys, a core under test, and messages from peers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from aggregator.consensus.core import (
    Action,
    Broadcast,
    Config,
    Core,
    Event,
    Persist,
    ProposalReceived,
    Start,
    Timeouts,
    VoteReceived,
)
from aggregator.consensus.messages import (
    Proposal,
    Vote,
    sign_proposal,
    sign_vote,
)
from aggregator.consensus.validators import ValidatorSet
from edge.crypto import SigningKey, verify

CHAIN = "gl-test"
IDS = ("node-0", "node-1", "node-2", "node-3")
KEYS = {n: SigningKey.from_bytes(hashlib.sha256(n.encode()).digest()) for n in IDS}
VALIDATORS = ValidatorSet.of((n, KEYS[n].public_key(), 1) for n in IDS)
TIMEOUTS = Timeouts(propose_ms=1000, propose_delta_ms=500, prevote_ms=400,
                    prevote_delta_ms=200, precommit_ms=300, precommit_delta_ms=100)


def valid(height: int, value: bytes) -> bool:
    return value.startswith(b"ok")


def config(node_id: str, validators: ValidatorSet = VALIDATORS) -> Config:
    return Config(CHAIN, node_id, validators, KEYS[node_id].sign, verify, valid, TIMEOUTS)


def proposer(height: int, round_: int) -> str:
    return VALIDATORS.proposer(height, round_)


def not_proposer(height: int, round_: int) -> str:
    """A validator that proposes neither this round nor the next two."""
    busy = {proposer(height, r) for r in range(round_, round_ + 3)}
    return next(n for n in IDS if n not in busy)


def started(node_id: str, height: int = 1) -> Core:
    core = Core(config(node_id), height)
    core.step(Start(), 0)
    return core


def proposal(height: int, round_: int, value: bytes, valid_round: int = -1,
             node_id: str | None = None) -> Proposal:
    signer = node_id or proposer(height, round_)
    return sign_proposal(CHAIN, height, round_, value, valid_round, signer, KEYS[signer].sign)


def vote(type_: int, height: int, round_: int, vid: bytes | None, node_id: str) -> Vote:
    return sign_vote(CHAIN, type_, height, round_, vid, node_id, KEYS[node_id].sign)


def feed(core: Core, events: Sequence[Event], now_ms: int = 0) -> list[Action]:
    out: list[Action] = []
    for event in events:
        out.extend(core.step(event, now_ms))
    return out


def propose_to(core: Core, p: Proposal, now_ms: int = 0) -> list[Action]:
    return core.step(ProposalReceived(p), now_ms)


def votes_from(core: Core, type_: int, round_: int, vid: bytes | None,
               senders: Sequence[str], now_ms: int = 0) -> list[Action]:
    events = [VoteReceived(vote(type_, core.height, round_, vid, n)) for n in senders]
    return feed(core, events, now_ms)


def others(node_id: str, count: int = 3) -> list[str]:
    return [n for n in IDS if n != node_id][:count]


def sent(actions: Sequence[Action]) -> list[Proposal | Vote]:
    return [a.message for a in actions if isinstance(a, Broadcast)]


def sent_votes(actions: Sequence[Action], type_: int) -> list[Vote]:
    return [m for m in sent(actions) if isinstance(m, Vote) and m.type == type_]


def persisted(actions: Sequence[Action]) -> list[Persist]:
    return [a for a in actions if isinstance(a, Persist)]

