"""The Tendermint consensus core: a pure state machine, `step(event, now_ms) -> [Action]`.

Theory of operation
-------------------
This is Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic
2018); comments cite its line numbers.  One `Core` decides a sequence of heights.  It
reads no clock, socket, file or global randomness: the shell passes events and the time
`now_ms` (used only to date timeouts) and performs the returned actions in order
(CometBFT consensus/state.go's receive loop; TigerBeetle's replica).

Events                                   Actions (perform in the order returned)
    Start()                                  Persist(height, record)   WAL append; durable
    ProposalReceived(proposal)                                         before the next action
    VoteReceived(vote)                       Broadcast(message)        to every validator
    TimeoutFired(kind, height, round)        ScheduleTimeout(kind, height, round, at_ms)
    ValueReady(height, round, value)         BuildValue(height, round) ask the application
    CommitReceived(value, certificate)       Decide(height, round, value, certificate)
                                             Evidence(first, second)   a signer equivocated
                                             Dropped(node_id, code)    a message was refused

Application boundary.  Values are opaque bytes identified by the injected `identify`
(SHA-256 by default, messages.value_id); every proposal is re-identified on entry, so a
peer cannot attach another id to a value.
Building a value is asynchronous (BuildValue -> ValueReady: the proposer's block takes
time to assemble).  Validity is an injected predicate `valid(height, value) -> bool`
called synchronously and memoised per value id: it must be a pure function of the chain
up to height-1, which holds because the shell commits each Decide before it feeds the
next event (ABCI process_proposal).  A predicate rather than an event keeps rules 22-36,
which test valid(v) inside their guard, a single atomic step.

Deviations from Algorithm 1, each for a reason:
  - every node schedules timeoutPropose at StartRound, the proposer too (line 21 only
    does it for the others): getValue() is asynchronous here and may be slow or lost.
  - rule 55 counts, per validator, the highest round of any valid message it sent at
    this height; f+1 power at rounds >= R moves us to R.  One correct node is at a round
    >= R, so this is as safe as the paper's same-round count, and it needs one integer
    per validator instead of storing messages of unboundedly far rounds.
  - CommitReceived carries a value and a commit certificate (block sync): rule 49 with
    the precommits taken from the certificate instead of collected one by one.
  - a faulty signer's conflicting votes are each kept for their own value (at most
    CONFLICTING_VOTES_MAX, only for nil or proposed values) and count once towards
    "2f+1 of anything": otherwise a node that saw only one side of an equivocation could
    never see the polka another node locked on (CometBFT's per-block vote sets).
  - gossip (the paper's assumption that messages of correct nodes eventually arrive) is
    the shell's: it re-sends `messages_to_resend()` periodically (our messages of the
    height and the prevotes justifying validValue) and answers a peer at a lower height
    with the decided value and certificate.

Equivocation safety.  Before a proposal or vote is broadcast the core emits Persist with
its record; `Core.restore` rebuilds the state of a height from those records (votes,
proposal, lock and the prevotes that justify the lock) and from then on re-sends the
recorded message instead of signing another for the same (height, round, type).

Limits
------
    ROUNDS_AHEAD_MAX         8  messages of rounds beyond round+8 only raise the sender's
                                round mark (rule 55); a faulty node cannot make us store
                                messages for arbitrarily many future rounds.
    PROPOSALS_PER_ROUND_MAX  2  the proposer's first value and one conflicting one (kept
                                so that a decision on it can still be made, line 49).
    CONFLICTING_VOTES_MAX    3  votes kept per signer, round and type: its first, and
                                conflicting ones only for nil or a proposed value.
    votes per height         at most validators x 2 x 3 x (round + ROUNDS_AHEAD_MAX + 1);
                             a correct validator sends one prevote and one precommit a round.
    RULE_FIRINGS_MAX        64  rule evaluations per event; each firing advances the step
                                or round, so this is a guard against a bug, not a limit.
    Timeouts grow linearly per round and are capped at Timeouts.cap_ms (60 s): a long
    partition must not leave nodes waiting minutes after it heals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from edge.portable import cbor
from edge.portable.errors import DecodeError, LocalProtocolError

from .certificate import (
    CertificateError,
    CommitCertificate,
    certificate_from_votes,
    verify_certificate,
)
from .messages import (
    PRECOMMIT,
    PREVOTE,
    VALUE_BYTES_MAX,
    ConsensusMessageError,
    IdentifyFn,
    Message,
    Proposal,
    SignFn,
    VerifyFn,
    Vote,
    decode_message,
    encode_message,
    sign_proposal,
    sign_vote,
    value_id,
)
from .validators import VALIDATORS_MAX, ValidatorSet

__all__ = [
    "Action",
    "Broadcast",
    "BuildValue",
    "CommitReceived",
    "Config",
    "Core",
    "Decide",
    "Dropped",
    "Event",
    "Evidence",
    "Persist",
    "ProposalReceived",
    "Record",
    "ScheduleTimeout",
    "Start",
    "TimeoutFired",
    "Timeouts",
    "ValueReady",
    "VoteReceived",
    "decode_record",
    "encode_record",
]

ROUNDS_AHEAD_MAX = 8
PROPOSALS_PER_ROUND_MAX = 2
CONFLICTING_VOTES_MAX = 3
RULE_FIRINGS_MAX = 64
STEP_PROPOSE, STEP_PREVOTE, STEP_PRECOMMIT = 0, 1, 2
T_PROPOSE, T_PREVOTE, T_PRECOMMIT = "propose", "prevote", "precommit"

ValidFn = Callable[[int, bytes], bool]


@dataclass(frozen=True)
class Timeouts:
    """timeout(round) = base + round * delta, capped (CometBFT's timeout_* and *_delta)."""

    propose_ms: int = 1000
    propose_delta_ms: int = 500
    prevote_ms: int = 500
    prevote_delta_ms: int = 250
    precommit_ms: int = 500
    precommit_delta_ms: int = 250
    cap_ms: int = 60_000

    def of(self, kind: str, round_: int) -> int:
        base, delta = {
            T_PROPOSE: (self.propose_ms, self.propose_delta_ms),
            T_PREVOTE: (self.prevote_ms, self.prevote_delta_ms),
            T_PRECOMMIT: (self.precommit_ms, self.precommit_delta_ms),
        }[kind]
        return min(base + round_ * delta, self.cap_ms)


@dataclass(frozen=True)
class Config:
    chain_id: str
    node_id: str
    validators: ValidatorSet
    sign: SignFn
    verify: VerifyFn
    valid: ValidFn
    timeouts: Timeouts = field(default_factory=Timeouts)
    identify: IdentifyFn = value_id


# -- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class ProposalReceived:
    proposal: Proposal


@dataclass(frozen=True)
class VoteReceived:
    vote: Vote


@dataclass(frozen=True)
class TimeoutFired:
    kind: str
    height: int
    round: int


@dataclass(frozen=True)
class ValueReady:
    height: int
    round: int
    value: bytes


@dataclass(frozen=True)
class CommitReceived:
    value: bytes
    certificate: CommitCertificate


Event = Start | ProposalReceived | VoteReceived | TimeoutFired | ValueReady | CommitReceived


# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Persist:
    height: int
    record: bytes


@dataclass(frozen=True)
class Broadcast:
    message: Message


@dataclass(frozen=True)
class ScheduleTimeout:
    kind: str
    height: int
    round: int
    at_ms: int


@dataclass(frozen=True)
class BuildValue:
    height: int
    round: int


@dataclass(frozen=True)
class Decide:
    height: int
    round: int
    value: bytes
    certificate: CommitCertificate


@dataclass(frozen=True)
class Evidence:
    first: Message
    second: Message


@dataclass(frozen=True)
class Dropped:
    node_id: str
    code: str


Action = Persist | Broadcast | ScheduleTimeout | BuildValue | Decide | Evidence | Dropped


# -- WAL records -----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A WAL record: a signed message; for a non-nil precommit also the value locked on
    and the prevotes of the polka that justified the lock.  Without that proof a node
    restarted while locked could hold a lock nobody else can see justified: if the
    polka needed a faulty node's vote and that node stays silent, the height stalls."""

    message: Message
    value: bytes | None = None
    proof: tuple[Vote, ...] = ()


def encode_record(record: Record) -> bytes:
    proof = [encode_message(v) for v in record.proof]
    return cbor.encode([encode_message(record.message), record.value, proof])


def decode_record(raw: bytes) -> Record:
    try:
        obj = cbor.decode(raw, max_size_bytes=2 * VALUE_BYTES_MAX)
    except DecodeError as exc:
        raise ConsensusMessageError(f"WAL record: {exc}") from None
    if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], bytes)
            and isinstance(obj[2], list) and len(obj[2]) <= VALIDATORS_MAX):
        raise ConsensusMessageError("a WAL record is [message, value / null, [vote, ...]]")
    value = obj[1]
    if value is not None and not isinstance(value, bytes):
        raise ConsensusMessageError("WAL record value must be bytes or null")
    proof = tuple(_proof_vote(item) for item in obj[2])
    return Record(decode_message(obj[0]), value, proof)


def _proof_vote(item: object) -> Vote:
    message = decode_message(item) if isinstance(item, bytes) else None
    if not isinstance(message, Vote):
        raise ConsensusMessageError("a WAL record's proof holds votes")
    return message


# -- per-height state ------------------------------------------------------------------


class _Height:
    """What a node knows of one height: proposals, votes, verdicts, rule flags."""

    def __init__(self) -> None:
        self.proposals: dict[int, dict[bytes, Proposal]] = {}
        # (round, type) -> node id -> value id -> vote: a faulty signer's conflicting
        # votes each count for their own value, never twice towards "any" (see _store_vote)
        self.votes: dict[tuple[int, int], dict[str, dict[bytes | None, Vote]]] = {}
        self.proposal_ids: set[bytes] = set()
        self.round_mark: dict[str, int] = {}
        self.verdicts: dict[bytes, bool] = {}
        self.fired: set[tuple[int, int]] = set()  # (line, round): "for the first time"
        self.evidence: set[tuple[str, int, int]] = set()
        self.signed_votes: dict[tuple[int, int], Vote] = {}
        self.signed_proposals: dict[int, Proposal] = {}

    def first_proposal(self, round_: int) -> Proposal | None:
        by_id = self.proposals.get(round_)
        return next(iter(by_id.values())) if by_id else None

    def proposal_for(self, round_: int, vid: bytes) -> Proposal | None:
        return self.proposals.get(round_, {}).get(vid)

    def tally(self, validators: ValidatorSet, round_: int, type_: int) -> dict[bytes | None, int]:
        power: dict[bytes | None, int] = {}
        for node_id, by_value in self.votes.get((round_, type_), {}).items():
            for vid in by_value:
                power[vid] = power.get(vid, 0) + validators.power(node_id)
        return power

    def power_any(self, validators: ValidatorSet, round_: int, type_: int) -> int:
        return sum(validators.power(n) for n in self.votes.get((round_, type_), {}))

    def votes_for(self, round_: int, type_: int, vid: bytes | None) -> list[Vote]:
        by_node = self.votes.get((round_, type_), {})
        return [by_value[vid] for by_value in by_node.values() if vid in by_value]


class Core:
    """One validator's consensus state machine; see the module docstring."""

    def __init__(self, config: Config, height: int = 1) -> None:
        if config.validators.power(config.node_id) == 0:
            raise LocalProtocolError(f"{config.node_id} is not a validator")
        if height < 1:
            raise LocalProtocolError("heights start at 1")
        self.config = config
        self.node_id = config.node_id
        self.height = height  # line 2
        self.round = 0  # line 3
        self.step_ = STEP_PROPOSE  # line 4
        self._reset_values()
        self._h = _Height()
        self._out: list[Action] = []
        self._now_ms = 0

    def _reset_values(self) -> None:
        self.locked_value: bytes | None = None  # line 6
        self.locked_round = -1  # line 7
        self.valid_value: bytes | None = None  # line 8
        self.valid_round = -1  # line 9

    @classmethod
    def restore(cls, config: Config, height: int, records: Iterable[tuple[int, bytes]]) -> Core:
        """Rebuild a node from its WAL; `height` is one above its last committed block."""
        core = cls(config, height)
        for record_height, raw in records:
            if record_height == height:
                core._replay(decode_record(raw))
        return core

    def _replay(self, record: Record) -> None:
        message, value = record.message, record.value
        for vote in record.proof:  # verified when received; our own disk is trusted
            self._store_vote(vote)
        self.round = max(self.round, message.round)
        if isinstance(message, Proposal):
            message = self._identified(message)
            self._h.signed_proposals[message.round] = message
            self._store_proposal(message)
            return
        self._h.signed_votes[(message.round, message.type)] = message
        self._store_vote(message)
        if message.type == PRECOMMIT and value is not None and message.round > self.locked_round:
            self.locked_value, self.locked_round = value, message.round
            self.valid_value, self.valid_round = value, message.round

    # -- the one entry point -----------------------------------------------------------

    def step(self, event: Event, now_ms: int) -> list[Action]:
        self._now_ms = now_ms
        self._out = []
        if isinstance(event, Start):
            self._start_round(self.round)  # line 10
        elif isinstance(event, ProposalReceived):
            self._on_proposal(event.proposal)
        elif isinstance(event, VoteReceived):
            self._on_vote(event.vote)
        elif isinstance(event, TimeoutFired):
            self._on_timeout(event)
        elif isinstance(event, ValueReady):
            self._on_value(event)
        else:
            self._on_commit(event.value, event.certificate)
        self._run_rules()
        out, self._out = self._out, []
        return out

    def messages_to_resend(self) -> list[Message]:
        """This node's signed messages of the current height, for the shell's gossip."""
        own: list[Message] = list(self._h.signed_proposals.values())
        own.extend(self._h.signed_votes.values())
        return own + self._proof_of_lock()

    def _proof_of_lock(self) -> list[Message]:
        """The prevotes that made validValue valid: a proposal re-proposing it with
        validRound = vr is accepted (lines 28-29) only by nodes that hold them."""
        if self.valid_value is None:
            return []
        vid = self.config.identify(self.valid_value)
        return [v for v in self._h.votes_for(self.valid_round, PREVOTE, vid)
                if v.node_id != self.node_id]

    def proposals_of(self, round_: int) -> list[Proposal]:
        """The proposals held for a round of the current height (inspection, tests)."""
        return list(self._h.proposals.get(round_, {}).values())

    # -- StartRound, lines 11-21 -------------------------------------------------------

    def _start_round(self, round_: int) -> None:
        self.round = round_  # line 12
        self.step_ = STEP_PROPOSE  # line 13
        if self._proposer(round_) == self.node_id:  # line 14
            self._propose_own()
        self._schedule(T_PROPOSE, round_)  # line 21, for every node (see docstring)
        self._resume_signed()

    def _propose_own(self) -> None:
        signed = self._h.signed_proposals.get(self.round)
        if signed is not None:
            self._out.append(Broadcast(signed))  # restored from the WAL: same bytes
        elif self.valid_value is not None:  # lines 15-16
            self._propose(self.valid_value, self.valid_round)
        else:  # line 18: getValue(), answered by ValueReady
            self._out.append(BuildValue(self.height, self.round))

    def _resume_signed(self) -> None:
        """After a restart: take up the step our recorded votes of this round show."""
        for type_, step in ((PREVOTE, STEP_PREVOTE), (PRECOMMIT, STEP_PRECOMMIT)):
            vote = self._h.signed_votes.get((self.round, type_))
            if vote is not None:
                self._out.append(Broadcast(vote))
                self.step_ = step

    def _propose(self, value: bytes, valid_round: int) -> None:
        c = self.config
        proposal = sign_proposal(c.chain_id, self.height, self.round, value, valid_round,
                                 self.node_id, c.sign, c.identify)
        self._h.signed_proposals[self.round] = proposal
        self._out.append(Persist(self.height, encode_record(Record(proposal))))
        self._out.append(Broadcast(proposal))  # line 19
        self._store_proposal(proposal)

    def _on_value(self, event: ValueReady) -> None:
        if len(event.value) > VALUE_BYTES_MAX:
            raise LocalProtocolError(f"value of {len(event.value)} bytes is over the limit")
        current = (event.height, event.round) == (self.height, self.round)
        mine = self._proposer(self.round) == self.node_id
        if current and mine and self.step_ == STEP_PROPOSE and \
                self.round not in self._h.signed_proposals:
            self._propose(event.value, -1)  # line 19 with proposal = getValue()

    # -- receiving ---------------------------------------------------------------------

    def _on_proposal(self, proposal: Proposal) -> None:
        if proposal.height != self.height:
            return
        proposal = self._identified(proposal)
        if proposal.node_id != self._proposer(proposal.round):
            self._drop(proposal.node_id, "consensus.not_proposer")
            return
        if proposal.round in self._h.proposals and \
                proposal.value_id in self._h.proposals[proposal.round]:
            return  # a re-sent copy
        if not self._verified(proposal):
            return
        self._mark_round(proposal.node_id, proposal.round)
        if proposal.round <= self.round + ROUNDS_AHEAD_MAX:
            self._store_proposal(proposal)

    def _store_proposal(self, proposal: Proposal) -> None:
        by_id = self._h.proposals.setdefault(proposal.round, {})
        if by_id and proposal.value_id not in by_id:
            self._evidence(next(iter(by_id.values())), proposal, -1)
        if len(by_id) < PROPOSALS_PER_ROUND_MAX:
            by_id.setdefault(proposal.value_id, proposal)
            self._h.proposal_ids.add(proposal.value_id)

    def _on_vote(self, vote: Vote) -> None:
        if vote.height != self.height or vote.type not in (PREVOTE, PRECOMMIT):
            return
        known = self._h.votes.get((vote.round, vote.type), {}).get(vote.node_id, {})
        if known.get(vote.value_id) == vote:
            return  # a re-sent copy: no second signature check
        if not self._verified(vote):
            return
        self._mark_round(vote.node_id, vote.round)
        if vote.round <= self.round + ROUNDS_AHEAD_MAX:
            self._store_vote(vote)

    def _store_vote(self, vote: Vote) -> None:
        """Keep a signer's first vote, and conflicting ones for nil or a proposed value.

        A faulty signer may show one value to some nodes and another to the rest; a node
        that sees only one of them could never see the polka another node locked on.
        Keeping (up to CONFLICTING_VOTES_MAX) conflicting votes for values that were
        proposed lets relayed votes complete that polka, as CometBFT's per-block vote
        sets do.  Quorum intersection still holds: a correct node votes once.
        """
        by_node = self._h.votes.setdefault((vote.round, vote.type), {})
        by_value = by_node.setdefault(vote.node_id, {})
        if by_value and vote.value_id not in by_value:
            self._evidence(next(iter(by_value.values())), vote, vote.type)
            proposed = vote.value_id is None or vote.value_id in self._h.proposal_ids
            if not proposed or len(by_value) >= CONFLICTING_VOTES_MAX:
                return
        by_value.setdefault(vote.value_id, vote)

    def _verified(self, message: Message) -> bool:
        public_key = self.config.validators.public_key(message.node_id)
        if public_key is None:
            self._drop(message.node_id, "consensus.unknown_validator")
            return False
        signed = message.signed_bytes(self.config.chain_id)
        if not self.config.verify(public_key, signed, message.signature):
            self._drop(message.node_id, "consensus.signature")
            return False
        return True

    def _mark_round(self, node_id: str, round_: int) -> None:
        marks = self._h.round_mark
        marks[node_id] = max(marks.get(node_id, 0), round_)

    def _evidence(self, first: Message, second: Message, type_: int) -> None:
        key = (second.node_id, second.round, type_)
        if key not in self._h.evidence:
            self._h.evidence.add(key)
            self._out.append(Evidence(first, second))

    def _drop(self, node_id: str, code: str) -> None:
        self._out.append(Dropped(node_id, code))

    # -- timeouts, lines 57-67 ---------------------------------------------------------

    def _schedule(self, kind: str, round_: int) -> None:
        at_ms = self._now_ms + self.config.timeouts.of(kind, round_)
        self._out.append(ScheduleTimeout(kind, self.height, round_, at_ms))

    def _on_timeout(self, event: TimeoutFired) -> None:
        if (event.height, event.round) != (self.height, self.round):
            return
        if event.kind == T_PROPOSE and self.step_ == STEP_PROPOSE:  # lines 57-60
            self._vote(PREVOTE, None)
            self.step_ = STEP_PREVOTE
        elif event.kind == T_PREVOTE and self.step_ == STEP_PREVOTE:  # lines 61-64
            self._vote(PRECOMMIT, None)
            self.step_ = STEP_PRECOMMIT
        elif event.kind == T_PRECOMMIT:  # lines 65-67
            self._start_round(self.round + 1)

    # -- signing ------------------------------------------------------------------------

    def _vote(self, type_: int, vid: bytes | None, value: bytes | None = None,
              proof: tuple[Vote, ...] = ()) -> None:
        """Sign, persist and broadcast a vote of this round, unless one is on record."""
        signed = self._h.signed_votes.get((self.round, type_))
        if signed is not None:
            self._out.append(Broadcast(signed))  # never a second, different vote
            return
        c = self.config
        vote = sign_vote(c.chain_id, type_, self.height, self.round, vid, self.node_id, c.sign)
        self._h.signed_votes[(self.round, type_)] = vote
        self._out.append(Persist(self.height, encode_record(Record(vote, value, proof))))
        self._out.append(Broadcast(vote))
        self._store_vote(vote)

    # -- the upon rules ----------------------------------------------------------------

    def _run_rules(self) -> None:
        rules = (self._rule_decide, self._rule_skip_round, self._rule_proposal_fresh,
                 self._rule_proposal_carried, self._rule_prevote_timeout,
                 self._rule_polka_value, self._rule_polka_nil, self._rule_precommit_timeout)
        for _ in range(RULE_FIRINGS_MAX):
            if not any(rule() for rule in rules):
                return
        raise LocalProtocolError("consensus rules did not settle; this is a bug")

    def _rule_proposal_fresh(self) -> bool:
        """Lines 22-27: PROPOSAL with validRound = -1 while step = propose."""
        proposal = self._h.first_proposal(self.round)
        if self.step_ != STEP_PROPOSE or proposal is None or proposal.valid_round != -1:
            return False
        vid = proposal.value_id
        free = self.locked_round == -1 or self._locked_on(vid)  # line 23
        self._vote(PREVOTE, vid if free and self._valid(proposal) else None)  # 24, 26
        self.step_ = STEP_PREVOTE  # line 27
        return True

    def _rule_proposal_carried(self) -> bool:
        """Lines 28-33: PROPOSAL with 0 <= vr < round and 2f+1 PREVOTE(vr, id(v))."""
        proposal = self._h.first_proposal(self.round)
        if self.step_ != STEP_PROPOSE or proposal is None:
            return False
        vr, vid = proposal.valid_round, proposal.value_id
        if not (0 <= vr < self.round and self._quorum_for(vr, PREVOTE, vid)):
            return False
        free = self.locked_round <= vr or self._locked_on(vid)  # line 29
        self._vote(PREVOTE, vid if free and self._valid(proposal) else None)  # 30, 32
        self.step_ = STEP_PREVOTE  # line 33
        return True

    def _rule_prevote_timeout(self) -> bool:
        """Lines 34-35: 2f+1 PREVOTE(round, *) while step = prevote, first time."""
        if self.step_ != STEP_PREVOTE or not self._once_when(34, self._quorum_any(PREVOTE)):
            return False
        self._schedule(T_PREVOTE, self.round)
        return True

    def _rule_polka_value(self) -> bool:
        """Lines 36-43: PROPOSAL(round, v) and 2f+1 PREVOTE(round, id(v)), first time."""
        if self.step_ < STEP_PREVOTE or (36, self.round) in self._h.fired:
            return False
        proposal = self._polka_proposal(self.round)
        if proposal is None or not self._valid(proposal):
            return False
        self._h.fired.add((36, self.round))
        if self.step_ == STEP_PREVOTE:  # line 37
            self.locked_value, self.locked_round = proposal.value, self.round  # lines 38-39
            proof = tuple(self._h.votes_for(self.round, PREVOTE, proposal.value_id))
            self._vote(PRECOMMIT, proposal.value_id, proposal.value, proof)  # line 40
            self.step_ = STEP_PRECOMMIT  # line 41
        self.valid_value, self.valid_round = proposal.value, self.round  # lines 42-43
        return True

    def _rule_polka_nil(self) -> bool:
        """Lines 44-46: 2f+1 PREVOTE(round, nil) while step = prevote."""
        if self.step_ != STEP_PREVOTE or not self._quorum_for(self.round, PREVOTE, None):
            return False
        self._vote(PRECOMMIT, None)  # line 45
        self.step_ = STEP_PRECOMMIT  # line 46
        return True

    def _rule_precommit_timeout(self) -> bool:
        """Lines 47-48: 2f+1 PRECOMMIT(round, *), first time."""
        if not self._once_when(47, self._quorum_any(PRECOMMIT)):
            return False
        self._schedule(T_PRECOMMIT, self.round)
        return True

    def _rule_decide(self) -> bool:
        """Lines 49-54: PROPOSAL(r, v) and 2f+1 PRECOMMIT(r, id(v)), any round r."""
        for (round_, type_) in list(self._h.votes):
            if type_ != PRECOMMIT:
                continue
            vid = self._quorum_value(round_, PRECOMMIT)
            proposal = None if vid is None else self._h.proposal_for(round_, vid)
            if proposal is not None and self._valid(proposal):  # line 50
                votes = self._h.votes_for(round_, PRECOMMIT, vid)
                self._decide(round_, proposal.value,
                             certificate_from_votes(self.height, round_, proposal.value_id, votes))
                return True
        return False

    def _rule_skip_round(self) -> bool:
        """Lines 55-56: f+1 messages of a higher round (see the docstring's deviations)."""
        target = self._round_with_one_honest()
        if target <= self.round:
            return False
        self._start_round(target)
        return True

    # -- decisions ---------------------------------------------------------------------

    def _decide(self, round_: int, value: bytes, certificate: CommitCertificate) -> None:
        self._out.append(Decide(self.height, round_, value, certificate))  # line 51
        self.height += 1  # line 52
        self._reset_values()  # line 53
        self._h = _Height()
        self._start_round(0)  # line 54

    def _on_commit(self, value: bytes, certificate: CommitCertificate) -> None:
        """Block sync: a decided value with its certificate, for our current height."""
        vid = self.config.identify(value)
        if certificate.height != self.height or vid != certificate.value_id:
            return
        try:
            verify_certificate(certificate, self.config.chain_id, self.config.validators,
                               self.config.verify)
        except CertificateError as exc:
            self._drop("", exc.code)
            return
        if self._valid_value(vid, value):
            self._decide(certificate.round, value, certificate)

    # -- predicates --------------------------------------------------------------------

    def _proposer(self, round_: int) -> str:
        return self.config.validators.proposer(self.height, round_)

    def _locked_on(self, vid: bytes) -> bool:
        return self.locked_value is not None and self.config.identify(self.locked_value) == vid

    def _identified(self, proposal: Proposal) -> Proposal:
        """The proposal with the id our identity gives its value (never the sender's)."""
        return replace(proposal, vid=self.config.identify(proposal.value))

    def _valid(self, proposal: Proposal) -> bool:
        return self._valid_value(proposal.value_id, proposal.value)

    def _valid_value(self, vid: bytes, value: bytes) -> bool:
        verdict = self._h.verdicts.get(vid)
        if verdict is None:
            verdict = bool(self.config.valid(self.height, value))
            self._h.verdicts[vid] = verdict
        return verdict

    def _once_when(self, line: int, condition: bool) -> bool:
        if not condition or (line, self.round) in self._h.fired:
            return False
        self._h.fired.add((line, self.round))
        return True

    def _quorum_any(self, type_: int) -> bool:
        power = self._h.power_any(self.config.validators, self.round, type_)
        return self.config.validators.is_quorum(power)

    def _quorum_for(self, round_: int, type_: int, vid: bytes | None) -> bool:
        tally = self._h.tally(self.config.validators, round_, type_)
        return self.config.validators.is_quorum(tally.get(vid, 0))

    def _quorum_value(self, round_: int, type_: int) -> bytes | None:
        """The value id with more than 2/3 of the votes of (round, type), if any."""
        tally = self._h.tally(self.config.validators, round_, type_)
        for vid, power in tally.items():
            if vid is not None and self.config.validators.is_quorum(power):
                return vid
        return None

    def _polka_proposal(self, round_: int) -> Proposal | None:
        vid = self._quorum_value(round_, PREVOTE)
        return None if vid is None else self._h.proposal_for(round_, vid)

    def _round_with_one_honest(self) -> int:
        """Highest R such that validators of more than 1/3 power sent messages at >= R."""
        validators = self.config.validators
        power = 0
        for node_id, mark in sorted(self._h.round_mark.items(), key=lambda kv: -kv[1]):
            power += validators.power(node_id)
            if validators.is_one_honest(power):
                return mark
        return -1
