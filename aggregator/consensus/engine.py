"""The BFT engine: the Tendermint core driving the ledger application, sans-I/O.

Theory of operation
-------------------
`BftEngine` sits behind the same boundary as `aggregator.engine.SoloEngine` (it reuses
its admission, mempool, receipts and status) and adds what a validator among validators
needs.  The node's shell feeds it events and performs the actions it returns:

    step(event, now_s) -> [Action]      TxIn, Timeout (as solo) and FromPeer(node_id, msg)
    next_deadline() -> float | None     the earliest core timeout, pending build or gossip
    start(now_s) -> [Action]            Start() of the core after open or restart
    take_outgoing() -> [Action]         Sends queued by `submit` (transaction gossip)

Actions: Answer, Committed, Receipt as with solo, plus

    Send(to, message)      to one peer (node id) or to every peer (None)
    Refused(node_id, code) a peer message was refused: count it and log it with the peer

Peer messages (`aggregator.cluster.wire` puts them on the wire):

    ConsensusMsg(raw)       a signed proposal or vote (`consensus.messages`)
    TxMsg(tx)               transaction gossip: a tx admitted at any node reaches every
                            mempool, the proposer's among them
    StatusMsg(height)       the sender's next undecided height, every gossip tick
    BlockMsg(value, cert)   block sync: a decided block and its commit certificate

The core's actions map as follows.  Persist: appended to the injected WAL (fsynced)
before anything after it is performed, so a vote is durable before it is sent.
Broadcast: Send(None, ConsensusMsg).  ScheduleTimeout: kept in a table, fed back as
TimeoutFired once `now` passes it.  BuildValue: remembered; the block is built when the
mempool has a due block (solo's rule: full, or `timeout_s` after the oldest tx) or after
`empty_block_s` with an empty mempool, then fed back as ValueReady.  Decide: the block is
finalized, stored with its certificate as the seen commit, and committed; the WAL is
pruned below the next height.  Receipts are signed by the validator the device sent to,
not by all of them: `submit` (the node's own transports) notes (device, seq), gossip
does not, and a decided block receipts only the noted txs.  Every validator signing and
publishing every receipt would cost n signatures and n deliveries a batch for one
useful answer; a device whose node dies before the commit re-sends, and any node
answers a committed batch sent again with a fresh receipt.

The value of a height is the whole encoded block (header, txs and last commit), so every
node stores the same bytes.  Its value id, what precommits sign, is the block hash: the
engine builds version 2 headers, which fix txs and last commit (`block.value_id`, the
core's injected identity), so a header and its commit certificate prove a block without
its transactions.  `valid(height, value)` is a pure function of the chain up to
height-1: the block is a version 2 block in its deterministic encoding whose header fixes
its body, names the previous block and carries its commit certificate (round and
signatures of more than 2/3 of the power, over the previous block's value id), names a
validator as proposer, and `app.process_proposal` re-executes it to the same roots
(which also refuses a time before the previous block's).

Before a proposal reaches the core, two checks that depend on the round or the clock,
which `valid` cannot see (it is memoised per value): a fresh proposal's block must name
the round's proposer in its header (a re-proposal, validRound >= 0, the proposer of a
round up to validRound, where it was first proposed), and its time may be at most
BLOCK_TIME_AHEAD_MAX_S ahead of this node's clock (`now_s`, injected).  A refused
proposal is never stored, so this node prevotes nil when timeoutPropose fires.

Gossip and sync.  Every `gossip_s` the engine re-sends its own messages of the current
height (`core.messages_to_resend`) and its StatusMsg.  A peer whose status is below our
height gets up to SYNC_BLOCKS_MAX decided blocks with certificates (CommitReceived at the
peer); a consensus message of a height above ours makes us send our status to its
sender so that it answers with blocks.  Messages of the next height are held
(NEXT_HEIGHT_HELD_MAX) and replayed after the decision, so a node a little behind does
not wait a gossip tick for the proposal.

Limits
------
    SYNC_BLOCKS_MAX         8     blocks sent to a lagging peer per status; the next status
                                  asks for more, so a far-behind peer catches up in steps.
                                  A peer is served at most twice per gossip period, so a
                                  status flood cannot make us send blocks without bound.
    NEXT_HEIGHT_HELD_MAX    256   messages of height+1 kept until the decision.
    VERIFY_CACHE_MAX        4096  ES256 verdicts remembered (gossip re-sends the same votes).
    IDENTITY_CACHE_MAX      16    block identities remembered by SHA-256 of the value: a
                                  block is decoded and its txs root recomputed once, not
                                  at each gossip re-send of its proposal.
    BLOCK_TIME_AHEAD_MAX_S  30    a proposal's block time may lead our clock by this much:
                                  clocks of NTP-synced servers differ by far less, and a
                                  faulty proposer cannot date the chain far in the future.
    gossip_s                0.5   re-send period; bounded by the peer queues downstream.
    empty_block_s           1.0   an idle chain still makes a block a second, so rounds do
                                  not grow while nobody sends readings.
    LOCAL_TXS_MAX           mempool_txs_max  (device, seq) noted for a receipt; the
                                  oldest is forgotten first (its device re-sends and is
                                  answered from the committed chain).

Errors: nothing here raises for remote bytes; refusals are Refused actions, naming the
peer the message came from and the validator it claims as signer, with codes
`consensus.message`, `consensus.limit` (bad message), `consensus.signature`,
`consensus.unknown_validator`, `consensus.not_proposer` (from the core),
`consensus.header_proposer` (a block whose header names another proposer than the
round's), `consensus.block_time` (a block time too far ahead of our clock),
`consensus.equivocation` (a signer's second, conflicting message), `consensus.certificate*`
(a sync certificate that does not decode or verify).  A synced block that is not valid is
simply not decided.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from hashlib import sha256
from typing import Protocol

from edge.portable.errors import GridLedgerError

from .. import block as block_mod
from ..app import OK, Application, FinalizeRequest, FinalizeResult, Prechecked, Steps
from ..engine import (
    ACCEPTED,
    DUPLICATE_PENDING,
    Action,
    Answer,
    Committed,
    EngineLimits,
    NodeSigner,
    SoloEngine,
    Submission,
    Timeout,
    TxIn,
)
from ..engine import BlockStore as _BlockStore
from . import core as core_mod
from .certificate import CertificateError, CommitCertificate, decode_certificate
from .messages import (
    ConsensusMessageError,
    Message,
    Proposal,
    VerifyFn,
    decode_message,
    encode_message,
)
from .validators import ValidatorSet
from .wal import Wal

__all__ = [
    "BftEngine",
    "BftSettings",
    "BlockMsg",
    "ConsensusMsg",
    "FromPeer",
    "PeerMessage",
    "Refused",
    "Send",
    "StatusMsg",
    "SyncStore",
    "TxMsg",
]

SYNC_BLOCKS_MAX = 8
NEXT_HEIGHT_HELD_MAX = 256
VERIFY_CACHE_MAX = 4096
IDENTITY_CACHE_MAX = 16
BLOCK_TIME_AHEAD_MAX_S = 30
CLUSTER_TIMEOUTS = core_mod.Timeouts(
    propose_ms=2000, propose_delta_ms=1000, prevote_ms=1000, prevote_delta_ms=500,
    precommit_ms=1000, precommit_delta_ms=500)


# -- peer messages, events and actions ---------------------------------------------------


@dataclass(frozen=True)
class ConsensusMsg:
    raw: bytes


@dataclass(frozen=True)
class TxMsg:
    tx: bytes


@dataclass(frozen=True)
class StatusMsg:
    height: int


@dataclass(frozen=True)
class BlockMsg:
    value: bytes
    certificate: bytes


PeerMessage = ConsensusMsg | TxMsg | StatusMsg | BlockMsg


@dataclass(frozen=True)
class FromPeer:
    node_id: str
    message: PeerMessage


@dataclass(frozen=True)
class Send:
    to: str | None
    message: PeerMessage


@dataclass(frozen=True)
class Refused:
    node_id: str      # the peer it came from ("" when not from a peer)
    code: str
    signer: str = ""  # the validator the refused message names, when it names one


BftEvent = TxIn | Timeout | FromPeer
BftAction = Action | Send | Refused


class SyncStore(_BlockStore, Protocol):
    """A block store that can also hand out stored blocks (`aggregator.store.Store`)."""

    @property
    def height(self) -> int: ...

    def block(self, height: int) -> block_mod.Block: ...


@dataclass(frozen=True)
class BftSettings:
    timeouts: core_mod.Timeouts = CLUSTER_TIMEOUTS
    gossip_s: float = 0.5
    empty_block_s: float = 1.0


@dataclass(frozen=True)
class _Examined:
    vid: bytes
    header: block_mod.Header | None


@dataclass
class _Build:
    height: int
    round: int
    asked_s: float


@dataclass
class BftCounters:
    refused_by_code: dict[str, int] = field(default_factory=dict)
    evidence: int = 0
    synced_blocks: int = 0
    rounds_max: int = 0

    def refused(self, code: str) -> None:
        self.refused_by_code[code] = self.refused_by_code.get(code, 0) + 1


class BftEngine(SoloEngine):
    """One validator of many: Tendermint core + ledger application + WAL + store."""

    def __init__(
        self,
        app: Application,
        store: SyncStore,
        signer: NodeSigner,
        genesis_hash: bytes,
        genesis_time_s: int,
        validators: ValidatorSet,
        wal: Wal,
        verify: VerifyFn,
        limits: EngineLimits | None = None,
        settings: BftSettings | None = None,
    ) -> None:
        super().__init__(app, store, signer, genesis_hash, genesis_time_s, limits)
        self.sync_store = store
        self.validators = validators
        self.wal = wal
        self.settings = settings or BftSettings()
        self._verify_inner = verify
        self._verified: OrderedDict[tuple[bytes, bytes, bytes], bool] = OrderedDict()
        self._examined: OrderedDict[bytes, _Examined] = OrderedDict()
        last = store.last_block()
        self._last_value_id = _stored_id(last, last.encode()) if last else b""
        config = core_mod.Config(app.config.chain_id, signer.node_id, validators, signer.sign,
                                 self._verify, self._valid, self.settings.timeouts,
                                 identify=self._identify)
        self.core = core_mod.Core.restore(config, app.state.height + 1, wal.records())
        self._timers: dict[tuple[str, int, int], int] = {}
        self._pending: _Build | None = None
        self._next_gossip_s: float | None = None
        self._held: list[tuple[str, Message]] = []
        self._served_s: dict[str, float] = {}
        self._outgoing: list[BftAction] = []
        self._local: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.bft = BftCounters()

    # -- the engine interface ---------------------------------------------------------

    def start(self, now_s: float) -> list[BftAction]:
        self._next_gossip_s = now_s + self.settings.gossip_s
        return self._core_step(core_mod.Start(), now_s)

    def step(self, event: BftEvent, now_s: float) -> list[BftAction]:  # type: ignore[override]
        out: list[BftAction] = []
        if isinstance(event, TxIn):
            out.append(Answer(event.token, self.submit(event.tx, now_s)))
        elif isinstance(event, FromPeer):
            out.extend(self._from_peer(event.node_id, event.message, now_s))
        out.extend(self.handle_timeout(now_s))
        return out

    def next_deadline(self) -> float | None:
        times = [at_ms / 1000 for at_ms in self._timers.values()]
        if self._next_gossip_s is not None:
            times.append(self._next_gossip_s)
        build_s = self._build_due_s()
        if build_s is not None:
            times.append(build_s)
        return min(times) if times else None

    def handle_timeout(self, now_s: float) -> list[BftAction]:  # type: ignore[override]
        out = self.take_outgoing()
        now_ms = int(now_s * 1000)
        for key, at_ms in sorted(self._timers.items(), key=lambda item: item[1]):
            if at_ms <= now_ms and self._timers.get(key) == at_ms:
                del self._timers[key]
                out.extend(self._core_step(core_mod.TimeoutFired(*key), now_s))
        build_s = self._build_due_s()
        if build_s is not None and build_s <= now_s:
            out.extend(self._build_value(now_s))
        if self._next_gossip_s is not None and self._next_gossip_s <= now_s:
            self._next_gossip_s = now_s + self.settings.gossip_s
            out.extend(self._gossip())
        return out

    def cut_steps(self, now_s: float) -> Steps[list[Action]]:
        """Never cuts (solo's `cut_block` runs this): blocks are decided by consensus."""
        return []
        yield  # a generator, like solo's

    def handle_timeout_steps(  # type: ignore[override]
        self, now_s: float
    ) -> Steps[list[BftAction]]:
        """`handle_timeout` in one step: timers and proposals, never a solo cut."""
        return self.handle_timeout(now_s)
        yield  # a generator, like solo's

    def submit(
        self, raw: bytes, now_s: float, prechecked: Prechecked | None = None
    ) -> Submission:
        """Admission as with solo; a tx new to the mempool is gossiped to every peer."""
        sub = super().submit(raw, now_s, prechecked)
        if sub.status == ACCEPTED and sub.code == OK:
            self._outgoing.append(Send(None, TxMsg(raw)))
        if sub.device_id and sub.receipt is None and sub.status in (ACCEPTED, DUPLICATE_PENDING):
            self._note_local(sub.device_id, sub.seq)
        return sub

    def _note_local(self, device_id: str, seq: int) -> None:
        """This node's transports took (device, seq): its block will owe them a receipt."""
        self._local[(device_id, seq)] = None
        self._local.move_to_end((device_id, seq))
        while len(self._local) > self.limits.mempool_txs_max:
            self._local.popitem(last=False)

    def _receipts(self, result: FinalizeResult) -> list[Action]:
        """Solo's receipts, for the txs this node's own transports took."""
        keys = {(r.device_id, r.seq) for r in result.results} & self._local.keys()
        for key in keys:
            del self._local[key]
        mine = tuple(r for r in result.results if (r.device_id, r.seq) in keys)
        return super()._receipts(replace(result, results=mine)) if mine else []

    def take_outgoing(self) -> list[BftAction]:
        out, self._outgoing = self._outgoing, []
        return out

    def status(self) -> dict[str, object]:
        shown = super().status()
        shown["engine"] = "tendermint"
        shown["consensus"] = {
            "height": self.core.height, "round": self.core.round,
            "validators": len(self.validators.powers()),
            "refused_by_code": dict(sorted(self.bft.refused_by_code.items())),
            "evidence": self.bft.evidence, "synced_blocks": self.bft.synced_blocks,
            "round_max": self.bft.rounds_max,
        }
        return shown

    # -- the core ---------------------------------------------------------------------

    def _core_step(self, event: core_mod.Event, now_s: float) -> list[BftAction]:
        height = self.core.height
        out: list[BftAction] = []
        for action in self.core.step(event, int(now_s * 1000)):
            out.extend(self._perform(action, now_s))
        if self.core.height > height and self._held:
            out.extend(self._replay_held(now_s))
        return out

    def _perform(self, action: core_mod.Action, now_s: float) -> list[BftAction]:
        if isinstance(action, core_mod.Persist):
            self.wal.append(action.height, action.record)  # durable before what follows
        elif isinstance(action, core_mod.Broadcast):
            return [Send(None, ConsensusMsg(encode_message(action.message)))]
        elif isinstance(action, core_mod.ScheduleTimeout):
            self._timers[(action.kind, action.height, action.round)] = action.at_ms
        elif isinstance(action, core_mod.BuildValue):
            self._pending = _Build(action.height, action.round, now_s)
        elif isinstance(action, core_mod.Decide):
            return self._decide(action, now_s)
        elif isinstance(action, core_mod.Evidence):
            self.bft.evidence += 1
            return [self._refuse(action.second.node_id, "consensus.equivocation")]
        elif isinstance(action, core_mod.Dropped):
            return [self._refuse(action.node_id, action.code)]
        return []

    def _refuse(self, node_id: str, code: str) -> Refused:
        self.bft.refused(code)
        return Refused(node_id, code)

    def _verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        key = (public_key, message, signature)
        verdict = self._verified.get(key)
        if verdict is None:
            verdict = self._verify_inner(public_key, message, signature)
            self._verified[key] = verdict
            if len(self._verified) > VERIFY_CACHE_MAX:
                self._verified.popitem(last=False)
        return verdict

    # -- identifying values -------------------------------------------------------------

    def _identify(self, value: bytes) -> bytes:
        return self._examine(value).vid

    def _examine(self, value: bytes) -> _Examined:
        """The value's id and, for a block, its header; remembered per value."""
        key = sha256(value).digest()
        found = self._examined.get(key)
        if found is None:
            try:
                block: block_mod.Block | None = block_mod.decode_block(value)
            except GridLedgerError:
                block = None
            vid = block_mod.value_id(value, block)
            header = None if block is None else block.header
            found = self._examined[key] = _Examined(vid, header)
            if len(self._examined) > IDENTITY_CACHE_MAX:
                self._examined.popitem(last=False)
        return found

    # -- building and checking values ---------------------------------------------------

    def _build(self, result: FinalizeResult) -> block_mod.Block:
        """Solo's block with a version 2 header: its hash is the value id validators sign."""
        block = super()._build(result)
        header = block.header.bound_to(block.last_commit)
        return block_mod.Block(header, block.txs, block.last_commit)

    def _build_due_s(self) -> float | None:
        build = self._pending
        if build is None:
            return None
        if (build.height, build.round) != (self.core.height, self.core.round):
            self._pending = None
            return None
        solo_due = SoloEngine.next_deadline(self)
        idle_due = build.asked_s + self.settings.empty_block_s
        return idle_due if solo_due is None else min(solo_due, idle_due)

    def _build_value(self, now_s: float) -> list[BftAction]:
        build, self._pending = self._pending, None
        assert build is not None
        limits = self.limits
        txs = self.app.prepare_proposal(self.mempool.txs(), limits.txs_max, limits.bytes_max)
        time_s = max(int(now_s), self._last_time_s)
        request = FinalizeRequest(build.height, time_s, tuple(txs), self.signer.node_id)
        block = self._build(self.app.execute(request))
        event = core_mod.ValueReady(build.height, build.round, block.encode())
        return self._core_step(event, now_s)

    def _valid(self, height: int, value: bytes) -> bool:
        """A pure function of the chain up to height-1 (see the module docstring)."""
        try:
            block = block_mod.decode_block(value)
        except GridLedgerError:
            return False
        if self._identify(value) != block.hash():
            return False  # version 1, not deterministic, or a body its header does not fix
        header = block.header
        if height != self.app.state.height + 1 or header.height != height:
            return False
        if header.prev_hash != self._last_hash or self.validators.power(header.proposer) == 0:
            return False
        if not self._carries_last_commit(block):
            return False
        limits = self.limits
        return self.app.process_proposal(block, limits.txs_max, limits.bytes_max) == OK

    def _carries_last_commit(self, block: block_mod.Block) -> bool:
        commit = block.last_commit
        if block.height == 1:
            return commit is None
        if commit is None or commit.round is None:
            return False
        if (commit.height, commit.block_hash, commit.value_id) != (
                block.height - 1, self._last_hash, self._last_value_id):
            return False
        try:
            block_mod.verify_commit(commit, self.app.config.chain_id, self._genesis_keys(),
                                    self._verify)
        except block_mod.CommitError:
            return False
        return True

    def _genesis_keys(self) -> dict[str, tuple[bytes, int]]:
        return dict(self.validators.members)

    # -- deciding -----------------------------------------------------------------------

    def _decide(self, decide: core_mod.Decide, now_s: float) -> list[BftAction]:
        block = block_mod.decode_block(decide.value)  # valid() decoded it already
        header = block.header
        request = FinalizeRequest(header.height, header.time_s, block.txs, header.proposer)
        result = self.app.finalize_block(request)
        cert = decide.certificate
        seen = block_mod.Commit(cert.height, block.hash(), cert.signatures, cert.round,
                                cert.value_id)
        app_hash = self.store.save_block(block, result, seen, self.app.commit)
        self.mempool.remove(r.tx_hash for r in result.results)
        self.counters.executed(result.results)
        self._last_hash, self._last_time_s, self._last_commit = block.hash(), header.time_s, seen
        self._last_value_id = cert.value_id
        self.bft.rounds_max = max(self.bft.rounds_max, decide.round)
        self.wal.prune_below(decide.height + 1)  # the block is durable first
        self._timers = {k: v for k, v in self._timers.items() if k[1] > decide.height}
        out: list[BftAction] = [Committed(block, result.results, app_hash)]
        out.extend(self._receipts(result))
        return out

    # -- peers --------------------------------------------------------------------------

    def _from_peer(self, node_id: str, message: PeerMessage, now_s: float) -> list[BftAction]:
        if isinstance(message, ConsensusMsg):
            return self._consensus_in(node_id, message.raw, now_s)
        if isinstance(message, TxMsg):
            super().submit(message.tx, now_s)  # gossip is not gossiped again
            return []
        if isinstance(message, StatusMsg):
            if now_s < self._served_s.get(node_id, 0.0) + self.settings.gossip_s / 2:
                return []  # a peer asking faster than gossip does is not served more
            self._served_s[node_id] = now_s
            return self._blocks_for(node_id, message.height)
        return self._block_in(node_id, message, now_s)

    def _consensus_in(self, node_id: str, raw: bytes, now_s: float) -> list[BftAction]:
        try:
            message = decode_message(raw)
        except ConsensusMessageError as exc:
            return [self._refuse(node_id, exc.code)]
        if message.height > self.core.height:
            out: list[BftAction] = [Send(node_id, StatusMsg(self.core.height))]
            if message.height == self.core.height + 1 and len(self._held) < NEXT_HEIGHT_HELD_MAX:
                self._held.append((node_id, message))
            return out
        return self._to_core(node_id, message, now_s)

    def _to_core(self, node_id: str, message: Message, now_s: float) -> list[BftAction]:
        code = self._proposal_refusal(message, now_s)
        if code:
            self.bft.refused(code)
            return [Refused(node_id, code, message.node_id)]
        return _from(node_id, self._core_step(_received(message), now_s))

    def _proposal_refusal(self, message: Message, now_s: float) -> str:
        """A refusal code for a signed proposal of this height whose block names another
        proposer than its round's, or a time too far ahead of `now_s`; "" otherwise
        (anything else is for the core and `valid` to judge)."""
        if not isinstance(message, Proposal) or not self._signed_by_proposer(message):
            return ""
        header = self._examine(message.value).header
        if header is None or header.height != message.height:
            return ""
        if message.valid_round < 0:
            named = header.proposer == message.node_id
        else:  # a re-proposal: first proposed in a round up to validRound
            named = self.validators.proposed_by(header.proposer, message.height,
                                                message.valid_round + 1)
        if not named:
            return "consensus.header_proposer"
        if header.time_s > now_s + BLOCK_TIME_AHEAD_MAX_S:
            return "consensus.block_time"
        return ""

    def _signed_by_proposer(self, proposal: Proposal) -> bool:
        """Signed by its round's proposer (the core checks it again, from the cache)."""
        if proposal.height != self.core.height or \
                proposal.node_id != self.validators.proposer(proposal.height, proposal.round):
            return False
        key = self.validators.public_key(proposal.node_id)
        identified = replace(proposal, vid=self._identify(proposal.value))
        signed = identified.signed_bytes(self.app.config.chain_id)
        return key is not None and self._verify(key, signed, proposal.signature)

    def _replay_held(self, now_s: float) -> list[BftAction]:
        held, self._held = self._held, []
        out: list[BftAction] = []
        for node_id, message in held:
            if message.height == self.core.height:
                out.extend(self._to_core(node_id, message, now_s))
            elif message.height == self.core.height + 1:
                self._held.append((node_id, message))
        return out

    def _block_in(self, node_id: str, message: BlockMsg, now_s: float) -> list[BftAction]:
        try:
            cert = decode_certificate(message.certificate)
        except CertificateError as exc:
            return [self._refuse(node_id, exc.code)]
        if cert.height != self.core.height:
            return []  # already decided, or not next: the next status asks again
        height = self.core.height
        out = _from(node_id, self._core_step(core_mod.CommitReceived(message.value, cert), now_s))
        if self.core.height > height:
            self.bft.synced_blocks += 1
        return out

    def _blocks_for(self, node_id: str, height: int) -> list[BftAction]:
        """Decided blocks with certificates from `height` on, for a peer behind us."""
        top = self.sync_store.height
        out: list[BftAction] = []
        for h in range(max(height, 1), min(top, height + SYNC_BLOCKS_MAX - 1) + 1):
            found = self._certified(h, top)
            if found is not None:
                out.append(Send(node_id, BlockMsg(*found)))
        return out

    def _certified(self, height: int, top: int) -> tuple[bytes, bytes] | None:
        block = self.sync_store.block(height)
        value = block.encode()
        commit = (self.sync_store.block(height + 1).last_commit if height < top
                  else self.store.seen_commit(height))
        if commit is None or commit.round is None or commit.value_id != _stored_id(block, value):
            return None  # not a BFT certificate (a solo ledger): nothing to prove
        cert = CommitCertificate(commit.height, commit.round, commit.value_id,
                                 commit.signatures)
        return value, cert.encode()

    def _gossip(self) -> list[BftAction]:
        out: list[BftAction] = [Send(None, ConsensusMsg(encode_message(m)))
                                for m in self.core.messages_to_resend()]
        out.append(Send(None, StatusMsg(self.core.height)))
        return out


def _stored_id(block: block_mod.Block, value: bytes) -> bytes:
    """The value id of a block from our store, without recomputing its txs root: it was
    valid when decided (or passed Store.open's checks), so its header fixes its body."""
    if block.header.version >= block_mod.VERSION:
        return block.hash()
    return sha256(value).digest()


def _from(peer: str, actions: list[BftAction]) -> list[BftAction]:
    """Refusals while handling a peer's message name that peer (and the signer)."""
    return [Refused(peer, a.code, a.node_id) if isinstance(a, Refused) else a
            for a in actions]


def _received(message: Message) -> core_mod.Event:
    if isinstance(message, Proposal):
        return core_mod.ProposalReceived(message)
    return core_mod.VoteReceived(message)


