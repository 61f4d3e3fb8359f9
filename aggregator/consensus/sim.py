"""Seeded simulation of a whole cluster running the real consensus core.

Theory of operation
-------------------
One process runs n replicas, each a real `Core` behind a small shell that does what a
node's shell does: performs actions in order (WAL append before send), delivers
timeouts, asks the application for values, gossips (re-sends its own messages of the
current height) and syncs (answers a peer at a lower height with decided values and
their certificates).  Time is simulated: a priority queue of (time_ms, sequence, event);
nothing sleeps.  Every random choice comes from one `random.Random(seed)` and the node
keys are derived from the seed, so a seed replays exactly, event for event; the run's
trace digest (SHA-256 over every processed event) shows it.

Fault model, active from the start until `heal_ms` (then the network is synchronous):
  - network: drop, duplicate, reorder (random delays), long delays, partitions that
    form and heal;
  - crashes of honest replicas at any point of an action list (for example between the
    WAL append of a vote and its broadcast); a restart rebuilds the core from the WAL
    and the replica's decided values.  All crashed replicas restart at heal;
  - up to f Byzantine replicas (a real core whose outgoing messages are rewritten):
    equivocating proposals, invalid proposals, double votes, withheld votes, messages
    forged in another validator's name, commit certificates with one repeated or too few
    signatures in answer to sync requests, and votes that agree with whatever proposal each
    honest peer holds (the adversary reads the honest replicas' state, as the BFT model
    allows, to show different nodes polkas for different values).

Checks after every step (a failure raises InvariantViolation naming the seed):
  - agreement: no two honest replicas decide different values at a height (neither
    different value ids nor different bytes under one id, which an injected identity
    that is not injective would allow);
  - certificates: every decided value comes with a certificate that verifies against the
    validator set alone, for that height and value id;
  - validity: every decided value satisfies the application's predicate;
  - no equivocation: no honest replica ever sends two different votes or proposals for
    one (height, round, type), across its crashes;
  - liveness: heights started after the heal are decided in at most
    `rounds_after_heal_max` rounds, and every honest replica decides
    `heights_after_heal` of them within `liveness_ms`.

Each replica has its own application object with `build`, `valid`, `invalid` and
`commit` (see `SimApp`), made by the `app_factory` given to `Simulation`, and the cores
identify values with the `identify` given to it (SHA-256 by default); it survives the
replica's crashes as a durable store would.  The default makes blocks of fake
transactions.  Swapping in another application means passing another factory.

    python -m aggregator.consensus.sim --seeds 1-50 [--nodes 4] [--byzantine 1] [--steps N]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge.crypto import SigningKey
from edge.crypto import verify as es256_verify
from edge.portable import cbor
from edge.portable.errors import DecodeError, GridLedgerError, LocalProtocolError

from .certificate import (
    CertificateError,
    CommitCertificate,
    decode_certificate,
    verify_certificate,
)
from .core import (
    Action,
    Broadcast,
    BuildValue,
    CommitReceived,
    Config,
    Core,
    Decide,
    Dropped,
    Event,
    Evidence,
    Persist,
    ProposalReceived,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    Timeouts,
    ValueReady,
    VoteReceived,
)
from .messages import (
    PRECOMMIT,
    PREVOTE,
    ConsensusMessageError,
    IdentifyFn,
    Message,
    Proposal,
    Vote,
    decode_message,
    encode_message,
    sign_proposal,
    sign_vote,
    value_id,
)
from .validators import ValidatorSet
from .wal import MemoryWal

__all__ = ["FakeTxApp", "InvariantViolation", "SimApp", "SimConfig", "Simulation", "main"]

CHAIN_ID = "gl-sim"
POWER_DRAW_MAX = 4
SYNC_HEIGHTS_MAX = 8  # decided values per sync answer: bounds one answer's size


class InvariantViolation(GridLedgerError):
    code = "consensus.sim_invariant"


class SimApp(Protocol):
    """What the simulation needs of one replica's application (ABCI-shaped)."""

    def build(self, height: int, rng: random.Random) -> bytes:
        """prepare_proposal: a block for `height` on top of the committed chain."""
        ...

    def valid(self, height: int, value: bytes) -> bool:
        """process_proposal: a pure function of the committed chain and the value."""
        ...

    def invalid(self, height: int, rng: random.Random) -> bytes:
        """A block this application refuses, for Byzantine proposers."""
        ...

    def commit(self, height: int, value: bytes) -> None:
        """finalize_block and commit: durable before the replica goes on."""
        ...


class FakeTxApp:
    """Blocks of fake transactions: CBOR [height, [tx, ...]], tx = b"tx" + 1..30 bytes."""

    TXS_MAX = 8

    def build(self, height: int, rng: random.Random) -> bytes:
        txs = [b"tx" + rng.randbytes(rng.randint(1, 30)) for _ in range(rng.randint(0, 5))]
        return cbor.encode([height, txs])

    def valid(self, height: int, value: bytes) -> bool:
        try:
            obj = cbor.decode(value)
        except DecodeError:
            return False
        if not (isinstance(obj, list) and len(obj) == 2 and obj[0] == height):
            return False
        txs = obj[1]
        return isinstance(txs, list) and len(txs) <= self.TXS_MAX and all(
            isinstance(tx, bytes) and tx.startswith(b"tx") and len(tx) <= 32 for tx in txs)

    def invalid(self, height: int, rng: random.Random) -> bytes:
        return rng.choice([cbor.encode([height, [b"bad"]]), cbor.encode([height + 1, []]),
                           rng.randbytes(16)])

    def commit(self, height: int, value: bytes) -> None:
        pass  # no state: validity depends on the height only


def _fake_app(node_id: str) -> SimApp:
    return FakeTxApp()


@dataclass(frozen=True)
class SimConfig:
    seed: int
    nodes: int = 4
    byzantine: int = 1
    steps: int = 200_000
    heal_ms: int = 10_000
    liveness_ms: int = 30_000
    heights_after_heal: int = 3
    rounds_after_heal_max: int = 8
    delay_ms_max: int = 40
    slow_delay_ms_max: int = 1500
    drop_p: float = 0.1
    duplicate_p: float = 0.05
    slow_p: float = 0.05
    crash_p: float = 0.002
    downtime_ms_max: int = 3000
    partition_every_ms: int = 3000
    gossip_ms: int = 300
    build_ms_max: int = 30
    weighted: bool = False
    isolate_p: float = 0.1
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(
        propose_ms=300, propose_delta_ms=100, prevote_ms=200, prevote_delta_ms=100,
        precommit_ms=200, precommit_delta_ms=100, cap_ms=5000))

    def check(self) -> None:
        if self.nodes < 1 or not 0 <= 3 * self.byzantine < self.nodes:
            raise LocalProtocolError("need nodes > 3 * byzantine")


@dataclass
class Replica:
    node_id: str
    key: SigningKey
    byzantine: bool
    wal: MemoryWal = field(default_factory=MemoryWal)
    decided: list[tuple[bytes, bytes]] = field(default_factory=list)  # (value, cert bytes)
    core: Core | None = None
    incarnation: int = 0

    @property
    def up(self) -> bool:
        return self.core is not None


@dataclass(frozen=True)
class Result:
    seed: int
    steps: int
    time_ms: int
    heights: int
    crashes: int
    partitions: int
    evidence: int
    dropped: int
    round_max: int
    digest: str
    liveness: str


class Simulation:
    def __init__(self, config: SimConfig, app_factory: Callable[[str], SimApp] | None = None,
                 trace: Callable[[str], None] | None = None,
                 identify: IdentifyFn = value_id) -> None:
        config.check()
        self.cfg = config
        self.identify = identify
        self.rng = random.Random(config.seed)
        self.trace = trace
        self.replicas = [self._replica(i) for i in range(config.nodes)]
        factory = app_factory if app_factory is not None else _fake_app
        self.apps: dict[str, SimApp] = {r.node_id: factory(r.node_id) for r in self.replicas}
        powers = self._powers()
        self.validators = ValidatorSet.of(
            (r.node_id, r.key.public_key(), p) for r, p in zip(self.replicas, powers, strict=True))
        self.by_id = {r.node_id: r for r in self.replicas}
        self.queue: list[tuple[int, int, tuple[object, ...]]] = []
        self.seq = 0
        self.now_ms = 0
        self.digest = hashlib.sha256()
        self.verified: dict[tuple[bytes, bytes, bytes], bool] = {}
        self.decided: dict[int, bytes] = {}
        self.decided_values: dict[int, bytes] = {}
        self.signed: dict[tuple[str, int, int, int], bytes | None] = {}
        self.groups: list[set[str]] | None = None
        self.heal_height = 0
        self.crashes = 0
        self.partitions = 0
        self.evidence = 0
        self.dropped = 0
        self.round_max = 0

    def _powers(self) -> list[int]:
        """Power 1 each, or (weighted) 1..POWER_DRAW_MAX each with the Byzantine replicas
        holding less than 1/3 of the total, the model's bound."""
        while True:
            if not self.cfg.weighted:
                return [1] * self.cfg.nodes
            powers = [self.rng.randint(1, POWER_DRAW_MAX) for _ in range(self.cfg.nodes)]
            byzantine = sum(p for p, r in zip(powers, self.replicas, strict=True) if r.byzantine)
            if 3 * byzantine < sum(powers):
                return powers

    def _replica(self, index: int) -> Replica:
        secret = hashlib.sha256(f"gl-sim/{self.cfg.seed}/{index}".encode()).digest()
        return Replica(f"node-{index}", SigningKey.from_bytes(secret),
                       byzantine=index >= self.cfg.nodes - self.cfg.byzantine)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> Result:
        for replica in self.replicas:
            self._boot(replica)
            self._push(self.rng.randint(0, self.cfg.gossip_ms), ("gossip", replica.node_id))
        self._push(self.cfg.heal_ms, ("heal",))
        self._push(self.rng.randint(0, self.cfg.partition_every_ms), ("partition",))
        steps = 0
        while self.queue and steps < self.cfg.steps:
            at_ms, _, item = heapq.heappop(self.queue)
            self.now_ms = at_ms
            self.digest.update(repr((at_ms, item)).encode())
            self._dispatch(item)
            steps += 1
            if self._liveness_done():
                break
        return self._result(steps)

    def _push(self, at_ms: int, item: tuple[object, ...]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at_ms, self.seq, item))

    def _dispatch(self, item: tuple[object, ...]) -> None:
        kind = item[0]
        if kind == "deliver":
            self._deliver(str(item[1]), str(item[2]), item[3])
        elif kind in ("timeout", "value"):
            replica = self.by_id[str(item[1])]
            if replica.up and replica.incarnation == item[2]:
                event = item[3]
                assert isinstance(event, TimeoutFired | ValueReady)
                self._step(replica, event)
        elif kind == "gossip":
            self._gossip(self.by_id[str(item[1])])
        elif kind == "partition":
            self._partition()
        elif kind == "heal":
            self._heal()
        elif kind == "restart":
            self._boot(self.by_id[str(item[1])])

    def _faulty_phase(self) -> bool:
        return self.now_ms < self.cfg.heal_ms

    # -- replicas ----------------------------------------------------------------------

    def _config(self, replica: Replica) -> Config:
        return Config(CHAIN_ID, replica.node_id, self.validators, replica.key.sign,
                      self._verify, self.apps[replica.node_id].valid, self.cfg.timeouts,
                      self.identify)

    def _verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        key = (public_key, message, signature)
        verdict = self.verified.get(key)
        if verdict is None:
            verdict = self.verified[key] = es256_verify(public_key, message, signature)
        return verdict

    def _boot(self, replica: Replica) -> None:
        height = len(replica.decided) + 1
        replica.core = Core.restore(self._config(replica), height, replica.wal.records())
        replica.incarnation += 1
        self._log(f"{replica.node_id} up at height {height}")
        self._step(replica, Start())

    def _crash(self, replica: Replica) -> None:
        replica.core = None
        self.crashes += 1
        self._log(f"{replica.node_id} crashed")
        downtime_ms = self.rng.randint(1, self.cfg.downtime_ms_max)
        self._push(min(self.now_ms + downtime_ms, self.cfg.heal_ms), ("restart", replica.node_id))

    def _may_crash(self, replica: Replica) -> bool:
        down = sum(1 for r in self.replicas if not r.up)
        return (self._faulty_phase() and not replica.byzantine and down < self.cfg.nodes - 1
                and self.rng.random() < self.cfg.crash_p)

    def _step(self, replica: Replica, event: Event) -> None:
        assert replica.core is not None
        actions = replica.core.step(event, self.now_ms)
        crash_at = self.rng.randrange(len(actions) + 1) if self._may_crash(replica) else None
        for index, action in enumerate(actions):
            if index == crash_at:
                self._crash(replica)
                return
            self._perform(replica, action)
        if crash_at is not None:
            self._crash(replica)

    def _perform(self, replica: Replica, action: Action) -> None:
        if isinstance(action, Persist):
            replica.wal.append(action.height, action.record)
        elif isinstance(action, Broadcast):
            self._broadcast(replica, action.message)
        elif isinstance(action, ScheduleTimeout):
            event = TimeoutFired(action.kind, action.height, action.round)
            self._push(action.at_ms, ("timeout", replica.node_id, replica.incarnation, event))
        elif isinstance(action, BuildValue):
            value = self.apps[replica.node_id].build(action.height, self.rng)
            event_v = ValueReady(action.height, action.round, value)
            at_ms = self.now_ms + self.rng.randint(0, self.cfg.build_ms_max)
            self._push(at_ms, ("value", replica.node_id, replica.incarnation, event_v))
        elif isinstance(action, Decide):
            self._decide(replica, action)
        elif isinstance(action, Evidence):
            self.evidence += 1
        elif isinstance(action, Dropped):
            self.dropped += 1

    def _decide(self, replica: Replica, decide: Decide) -> None:
        if not replica.byzantine:
            self._check_decision(replica, decide)
            self._isolate_decider(replica)
        self.apps[replica.node_id].commit(decide.height, decide.value)
        replica.decided.append((decide.value, decide.certificate.encode()))
        self.round_max = max(self.round_max, decide.round)
        replica.wal.prune_below(decide.height + 1)  # the block is durable first
        self._log(f"{replica.node_id} decided {decide.height} in round {decide.round}")

    # -- checks ------------------------------------------------------------------------

    def _fail(self, what: str) -> None:
        raise InvariantViolation(f"seed {self.cfg.seed} at {self.now_ms} ms: {what}")

    def _check_decision(self, replica: Replica, decide: Decide) -> None:
        height, vid = decide.height, self.identify(decide.value)
        if height != len(replica.decided) + 1:
            self._fail(f"{replica.node_id} decided height {height} out of order")
        if self.decided.setdefault(height, vid) != vid:
            self._fail(f"agreement: {replica.node_id} decided another value at {height}")
        if self.decided_values.setdefault(height, decide.value) != decide.value:
            self._fail(f"agreement: {replica.node_id} decided other bytes under the same "
                       f"value id at {height}")
        cert = decode_certificate(decide.certificate.encode())
        if (cert.height, cert.value_id) != (height, vid):
            self._fail(f"certificate of height {height} names another height or value")
        try:
            verify_certificate(cert, CHAIN_ID, self.validators, self._verify)
        except CertificateError as exc:
            self._fail(f"certificate of height {height} does not verify: {exc}")
        if not self.apps[replica.node_id].valid(height, decide.value):
            self._fail(f"validity: {replica.node_id} decided an invalid value at {height}")
        if height > self.heal_height > 0 and decide.round > self.cfg.rounds_after_heal_max:
            self._fail(f"liveness: height {height} after the heal took {decide.round} rounds")

    def _check_signed(self, replica: Replica, message: Message) -> None:
        if message.node_id != replica.node_id:
            return  # a relayed message of another signer
        type_ = message.type if isinstance(message, Vote) else -1
        vid = message.value_id
        key = (replica.node_id, message.height, message.round, type_)
        if self.signed.setdefault(key, vid) != vid:
            self._fail(f"{replica.node_id} equivocated at {key[1:]}")

    def _liveness_done(self) -> bool:
        if self.heal_height == 0:
            return False
        target = self.heal_height + self.cfg.heights_after_heal
        honest = [r for r in self.replicas if not r.byzantine]
        if all(len(r.decided) >= target for r in honest):
            return True
        if self.now_ms > self.cfg.heal_ms + self.cfg.liveness_ms:
            heights = [len(r.decided) for r in honest]
            self._fail(f"liveness: honest heights {heights} short of {target} in time")
        return False

    # -- network -----------------------------------------------------------------------

    def _broadcast(self, replica: Replica, message: Message) -> None:
        if replica.byzantine:
            self._byzantine_broadcast(replica, message)
            return
        self._check_signed(replica, message)
        raw = encode_message(message)
        for peer in self.replicas:
            if peer is not replica:
                self._send(replica.node_id, peer.node_id, raw)

    def _send(self, src: str, dst: str, payload: object) -> None:
        copies = 1
        if self._faulty_phase():
            if self._cut(src, dst) or self.rng.random() < self.cfg.drop_p:
                return
            copies += self.rng.random() < self.cfg.duplicate_p
        for _ in range(copies):
            self._push(self.now_ms + self._delay_ms(), ("deliver", src, dst, payload))

    def _delay_ms(self) -> int:
        if self._faulty_phase() and self.rng.random() < self.cfg.slow_p:
            return self.rng.randint(1, self.cfg.slow_delay_ms_max)
        return self.rng.randint(1, self.cfg.delay_ms_max)

    def _cut(self, src: str, dst: str) -> bool:
        if self.groups is None:
            return False
        return not any(src in group and dst in group for group in self.groups)

    def _partition(self) -> None:
        if not self._faulty_phase():
            return
        if self.groups is None and self.cfg.nodes > 1 and self.rng.random() < 0.5:
            ids = [r.node_id for r in self.replicas]
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, len(ids) - 1)
            self.groups = [set(ids[:cut]), set(ids[cut:])]
            self.partitions += 1
            self._log(f"partition {sorted(ids[:cut])} | {sorted(ids[cut:])}")
        elif self.groups is not None:
            self.groups = None
            self._log("partition healed")
        self._push(self.now_ms + self.rng.randint(1, self.cfg.partition_every_ms),
                   ("partition",))

    def _isolate_decider(self, replica: Replica) -> None:
        """Cut off a node that has just decided, so that the others must finish the height
        without its help or its sync: the case where locks alone keep them safe."""
        if self._faulty_phase() and self.groups is None and \
                self.rng.random() < self.cfg.isolate_p:
            rest = {r.node_id for r in self.replicas if r is not replica}
            self.groups = [{replica.node_id}, rest]
            self.partitions += 1
            self._log(f"partition [{replica.node_id}] just after it decided")

    def _heal(self) -> None:
        self.groups = None
        for replica in self.replicas:
            if not replica.up:
                self._boot(replica)
        honest = [len(r.decided) for r in self.replicas if not r.byzantine]
        self.heal_height = max(honest) + 1  # the highest height an honest node is on
        self._log(f"network healed at heights {honest}")

    def _deliver(self, src: str, dst: str, payload: object) -> None:
        replica = self.by_id[dst]
        if not replica.up:
            return
        if isinstance(payload, tuple):
            self._on_sync(replica, src, payload)
            return
        assert isinstance(payload, bytes)
        try:
            message = decode_message(payload)
        except ConsensusMessageError:
            return
        assert replica.core is not None
        if message.height > replica.core.height:
            self._send(dst, src, ("status", replica.core.height))
        event = ProposalReceived(message) if isinstance(message, Proposal) else \
            VoteReceived(message)
        self._step(replica, event)

    # -- gossip and sync ---------------------------------------------------------------

    def _gossip(self, replica: Replica) -> None:
        self._push(self.now_ms + self.cfg.gossip_ms, ("gossip", replica.node_id))
        if replica.core is None:
            return
        for message in replica.core.messages_to_resend():
            self._broadcast(replica, message)
        for peer in self.replicas:
            if peer is not replica:
                self._send(replica.node_id, peer.node_id, ("status", replica.core.height))

    def _on_sync(self, replica: Replica, src: str, payload: tuple[object, ...]) -> None:
        if payload[0] == "status":
            height = payload[1]
            assert isinstance(height, int)
            if replica.byzantine and self.rng.random() < 0.5:
                self._send(replica.node_id, src, self._forged_commit(replica, height))
                return
            for h in range(height, min(height + SYNC_HEIGHTS_MAX, len(replica.decided) + 1)):
                value, cert = replica.decided[h - 1]
                self._send(replica.node_id, src, ("commit", value, cert))
            return
        decided, cert_raw = payload[1], payload[2]
        assert isinstance(decided, bytes) and isinstance(cert_raw, bytes)
        try:
            certificate = decode_certificate(cert_raw)
        except CertificateError:
            return
        self._step(replica, CommitReceived(decided, certificate))

    # -- Byzantine replicas ------------------------------------------------------------

    def _forged_commit(self, replica: Replica, height: int) -> tuple[object, ...]:
        """A decided value that was never decided: one signature repeated, or too few."""
        value = self.apps[replica.node_id].build(height, self.rng)
        vid = self.identify(value)
        vote = sign_vote(CHAIN_ID, PRECOMMIT, height, 0, vid, replica.node_id, replica.key.sign)
        copies = self.rng.choice([1, len(self.replicas)])
        signatures = tuple([(vote.node_id, vote.signature)] * copies)
        return ("commit", value, CommitCertificate(height, 0, vid, signatures).encode())

    def _byzantine_broadcast(self, replica: Replica, message: Message) -> None:
        peers = [r for r in self.replicas if r is not replica]
        if isinstance(message, Proposal):
            variants = self._bad_proposals(replica, message)
        else:
            variants = self._bad_votes(replica, message)
        for peer in peers:
            chosen = self.rng.choice(variants) if variants else None
            if isinstance(chosen, Vote) and self.rng.random() < 0.5:
                chosen = self._agreeing_vote(replica, chosen, peer)
            if chosen is not None:
                self._send(replica.node_id, peer.node_id, encode_message(chosen))

    def _agreeing_vote(self, replica: Replica, vote: Vote, peer: Replica) -> Vote:
        """An omniscient adversary: vote for whatever value this peer holds as proposed,
        so that different honest nodes see polkas for different values."""
        if peer.core is None or peer.core.height != vote.height:
            return vote
        proposals = peer.core.proposals_of(vote.round)
        if not proposals:
            return vote
        vid = self.rng.choice(proposals).value_id
        return sign_vote(CHAIN_ID, vote.type, vote.height, vote.round, vid, replica.node_id,
                         replica.key.sign)

    def _bad_proposals(self, replica: Replica, p: Proposal) -> list[Message | None]:
        mode = self.rng.choice(["honest", "equivocate", "invalid"])
        if mode == "honest":
            return [p]
        app = self.apps[replica.node_id]
        other = app.build(p.height, self.rng) if mode == "equivocate" else \
            app.invalid(p.height, self.rng)
        forged = sign_proposal(CHAIN_ID, p.height, p.round, other, p.valid_round,
                               replica.node_id, replica.key.sign, self.identify)
        return [forged] if mode == "invalid" else [p, forged]

    def _bad_votes(self, replica: Replica, v: Vote) -> list[Message | None]:
        mode = self.rng.choice(["honest", "double", "withhold", "forge"])
        if mode == "honest":
            return [v]
        if mode == "withhold":
            return [None]
        other_id = None if v.value_id is not None else self.rng.randbytes(32)
        if mode == "double":
            return [v, sign_vote(CHAIN_ID, v.type, v.height, v.round, other_id,
                                 replica.node_id, replica.key.sign)]
        victim = self.rng.choice([r.node_id for r in self.replicas if r is not replica])
        forged = sign_vote(CHAIN_ID, self.rng.choice([PREVOTE, PRECOMMIT]), v.height, v.round,
                           other_id, victim, replica.key.sign)
        return [v, forged]

    # -- reporting ---------------------------------------------------------------------

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"{self.now_ms:>8} ms  {text}")

    def _result(self, steps: int) -> Result:
        heights = min(len(r.decided) for r in self.replicas if not r.byzantine)
        liveness = "checked" if self._liveness_done() else "not reached in the step budget"
        return Result(self.cfg.seed, steps, self.now_ms, heights, self.crashes, self.partitions,
                      self.evidence, self.dropped, self.round_max, self.digest.hexdigest()[:16],
                      liveness)


# -- command line ----------------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """'7', '1-50' or '1,4,9-12'."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def run_seed(config: SimConfig, verbose: bool = False) -> Result:
    trace: Callable[[str], None] | None = print if verbose else None
    return Simulation(config, trace=trace).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aggregator.consensus.sim",
                                     description="Seeded simulation of the consensus core.")
    parser.add_argument("--seeds", default="1-20", help="e.g. 1-50 or 3,7,9-12")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--byzantine", type=int, default=1)
    parser.add_argument("--steps", type=int, default=SimConfig.steps)
    parser.add_argument("--heal-ms", type=int, default=SimConfig.heal_ms)
    parser.add_argument("--drop", type=float, default=SimConfig.drop_p,
                        help="loss probability before the heal")
    parser.add_argument("--slow", type=float, default=SimConfig.slow_p,
                        help="probability of a delivery up to 1.5 s late before the heal")
    parser.add_argument("--weighted", action="store_true",
                        help="voting powers 1..4 drawn from the seed instead of 1 each")
    parser.add_argument("--verbose", action="store_true", help="print every decision and fault")
    args = parser.parse_args(argv)
    failed = 0
    started = time.perf_counter()
    for seed in parse_seeds(args.seeds):
        config = SimConfig(seed, args.nodes, args.byzantine, args.steps, heal_ms=args.heal_ms,
                           drop_p=args.drop, slow_p=args.slow, weighted=args.weighted)
        failed += _run_one(config, args.verbose)
    elapsed_s = time.perf_counter() - started
    print(f"{len(parse_seeds(args.seeds))} seeds, {failed} failed, {elapsed_s:.1f} s")
    return 1 if failed else 0


def _run_one(config: SimConfig, verbose: bool) -> int:
    try:
        r = run_seed(config, verbose)
    except InvariantViolation as exc:
        print(f"FAIL seed {config.seed}: {exc}", file=sys.stderr)
        print(f"  replay: python -m aggregator.consensus.sim --seeds {config.seed} "
              f"--nodes {config.nodes} --byzantine {config.byzantine} --steps {config.steps} "
              f"--heal-ms {config.heal_ms} --drop {config.drop_p} --slow {config.slow_p} "
              f"{'--weighted ' if config.weighted else ''}--verbose", file=sys.stderr)
        return 1
    print(f"seed {r.seed}: {r.heights} heights, {r.steps} steps, {r.time_ms} ms simulated, "
          f"{r.crashes} crashes, {r.partitions} partitions, {r.evidence} evidence, "
          f"{r.dropped} dropped, max round {r.round_max}, liveness {r.liveness}, "
          f"trace {r.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
