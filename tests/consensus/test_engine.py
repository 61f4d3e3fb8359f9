"""The BFT engine with the real application, SQLite stores and file WALs, in one process.

Four engines exchange their Send actions through a queue; time is stepped to the next
deadline, so nothing sleeps.  Restarting an engine reopens its store and WAL.
"""

from __future__ import annotations

import random
import sqlite3
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator import block as block_mod
from aggregator.app import Application, FinalizeRequest
from aggregator.consensus.engine import (
    BftEngine,
    BftSettings,
    ConsensusMsg,
    FromPeer,
    Refused,
    Send,
    StatusMsg,
    TxMsg,
)
from aggregator.consensus.messages import PREVOTE, encode_message, sign_proposal, sign_vote
from aggregator.consensus.validators import ValidatorSet
from aggregator.consensus.wal import FileWal
from aggregator.engine import ACCEPTED, Committed, NodeSigner, Receipt, TxIn
from aggregator.store import Store, StoreCorruptError
from edge import crypto
from edge.portable import cbor
from edge.portable import receipt as receipt_mod
from tests.aggregator.helpers import CHAIN_ID, GENESIS_HASH, T0, World, key

N = 4
IDS = [f"node-{i}" for i in range(N)]


class Net:
    def __init__(self, tmp: Path, world: World, seed: int) -> None:
        self.tmp, self.world = tmp, world
        self.rng = random.Random(seed)
        self.keys = {node_id: key(100 + i) for i, node_id in enumerate(IDS)}
        self.validators = ValidatorSet.of((n, k.public_key(), 1) for n, k in self.keys.items())
        self.engines: dict[str, BftEngine | None] = {}
        self.now_s = float(T0)
        self.queue: deque[tuple[str, str, object]] = deque()
        self.down: set[str] = set()
        self.committed: dict[str, list[bytes]] = {n: [] for n in IDS}
        self.receipts: list[Receipt] = []
        self.receipts_by: dict[str, list[Receipt]] = {n: [] for n in IDS}
        self.refused: list[Refused] = []
        for node_id in IDS:
            self.boot(node_id)

    def boot(self, node_id: str) -> None:
        d = self.tmp / node_id
        d.mkdir(exist_ok=True)
        members = {n: (k.public_key(), 1) for n, k in self.keys.items()}
        store = Store.open(d / "ledger.sqlite", CHAIN_ID, GENESIS_HASH, members, crypto.verify)
        app = Application(self.world.config, store.load_state(), store.nodes)
        engine = BftEngine(app, store, NodeSigner(node_id, self.keys[node_id].sign),
                           GENESIS_HASH, T0, self.validators, FileWal(d / "consensus.wal"),
                           crypto.verify, settings=BftSettings())
        self.engines[node_id] = engine
        self.down.discard(node_id)
        self.perform(node_id, engine.start(self.now_s))

    def crash(self, node_id: str) -> None:
        engine = self.engines[node_id]
        assert engine is not None
        engine.wal.close()  # type: ignore[attr-defined]
        engine.sync_store.close()  # type: ignore[attr-defined]
        self.engines[node_id] = None
        self.down.add(node_id)

    def perform(self, node_id: str, actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, Send):
                for peer in IDS:
                    if peer != node_id and (action.to is None or action.to == peer):
                        self.queue.append((node_id, peer, action.message))
            elif isinstance(action, Committed):
                self.committed[node_id].append(action.block.hash())
            elif isinstance(action, Receipt):
                self.receipts.append(action)
                self.receipts_by[node_id].append(action)
            elif isinstance(action, Refused):
                self.refused.append(action)

    def submit(self, node_id: str, raw: bytes) -> str:
        engine = self.engines[node_id]
        assert engine is not None
        actions = engine.step(TxIn(raw, "t"), self.now_s)
        self.perform(node_id, actions)
        return actions[0].submission.status  # type: ignore[union-attr]

    def run_until(self, done: object, limit_s: float = 60.0) -> None:
        deadline_s = self.now_s + limit_s
        while not done():  # type: ignore[operator]
            assert self.now_s < deadline_s, "cluster made no progress in time"
            while self.queue:
                src, dst, message = self.queue.popleft()
                engine = self.engines[dst]
                if engine is None or src in self.down:
                    continue
                self.perform(dst, engine.step(FromPeer(src, message), self.now_s))  # type: ignore[arg-type]
                if done():  # type: ignore[operator]
                    return
            deadlines = [e.next_deadline() for e in self.engines.values() if e is not None]
            self.now_s = max(self.now_s, min(d for d in deadlines if d is not None))
            for node_id, engine in self.engines.items():
                if engine is not None:
                    self.perform(node_id, engine.handle_timeout(self.now_s))

    def heights(self) -> list[int]:
        return [len(self.committed[n]) for n in IDS]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def net(tmp_path: Path, world: World) -> Iterator[Net]:
    cluster = Net(tmp_path, world, 0)
    yield cluster
    for node_id in IDS:
        if cluster.engines[node_id] is not None:
            cluster.crash(node_id)


def test_batches_at_two_nodes_commit_once_everywhere(net: Net, world: World) -> None:
    for seq in range(1, 6):
        assert net.submit("node-0", world.batch_tx("dev-a", seq)) == ACCEPTED
        assert net.submit("node-2", world.batch_tx("dev-b", seq)) == ACCEPTED
    net.run_until(lambda: all(_batches(net, n) == 10 for n in IDS if n not in net.down))
    chains = {tuple(net.committed[n]) for n in IDS}
    assert len(chains) == 1  # identical block hashes at every node
    engine = net.engines["node-1"]
    assert engine is not None and engine.app.state.readings == 10
    for height in range(1, engine.sync_store.height + 1):
        commit = engine.sync_store.seen_commit(height)
        assert commit is not None and commit.round is not None


def _receipted(receipts: list[Receipt], keys: dict[str, bytes]) -> set[tuple[str, int, str]]:
    found = set()
    for item in receipts:
        _, device_id, entries = receipt_mod.verify(item.data, keys, crypto.verify)
        found |= {(device_id, e.seq, e.status) for e in entries}
    return found


def test_the_node_a_device_sent_to_signs_its_receipt(net: Net, world: World) -> None:
    """One receipt a batch, from the validator that took it: gossip earns none."""
    keys = {n: k.public_key() for n, k in net.keys.items()}
    for seq in (1, 2):
        assert net.submit("node-0", world.batch_tx("dev-a", seq)) == ACCEPTED
        assert net.submit("node-2", world.batch_tx("dev-b", seq)) == ACCEPTED
    net.run_until(lambda: all(_batches(net, n) == 4 for n in IDS))
    net.run_until(lambda: len(_receipted(net.receipts_by["node-2"], keys)) == 2)
    assert _receipted(net.receipts_by["node-0"], keys) == {
        ("dev-a", 1, "committed"), ("dev-a", 2, "committed")}
    assert _receipted(net.receipts_by["node-2"], keys) == {
        ("dev-b", 1, "committed"), ("dev-b", 2, "committed")}
    assert net.receipts_by["node-1"] == net.receipts_by["node-3"] == []
    # the device lost node-0's receipt and asks node-3: answered at once, from the chain
    engine = net.engines["node-3"]
    assert engine is not None
    again = engine.submit(world.batch_tx("dev-a", 2), net.now_s)
    assert again.receipt is not None
    assert _receipted([Receipt("dev-a", again.receipt)], keys) == {("dev-a", 2, "committed")}


def test_blocks_are_version_2_and_validators_sign_their_hash(net: Net, world: World) -> None:
    net.submit("node-0", world.batch_tx("dev-a", 1))
    net.run_until(lambda: _batches(net, "node-3") == 1 and len(net.committed["node-3"]) >= 3)
    engine = net.engines["node-3"]
    assert engine is not None
    for height in range(1, engine.sync_store.height + 1):
        block = engine.sync_store.block(height)
        assert block.header.version == block_mod.VERSION
        assert block.header.last_commit_hash == block_mod.commit_hash(block.last_commit)
        assert block_mod.value_id(block.encode()) == block.hash()
        seen = engine.sync_store.seen_commit(height)
        assert seen is not None and seen.value_id == seen.block_hash == block.hash()


def test_a_block_must_match_its_header_to_be_a_value(net: Net) -> None:
    proposer, _, _ = _proposal_parts(net)
    block = _block(net, proposer, proposer, T0)
    assert block_mod.value_id(block.encode()) == block.hash()
    for other in (block_mod.Block(block.header, (b"tx",), block.last_commit),
                  block_mod.Block(block.header, block.txs, block_mod.Commit(0, bytes(32), ())),
                  block_mod.Block(block_mod.Header(**{**block.header.__dict__, "version": 1,
                                                      "last_commit_hash": b""}),
                                  block.txs, None)):
        assert block_mod.value_id(other.encode()) != block.hash()
    engine = net.engines[proposer]
    assert engine is not None and engine._valid(1, block.encode())
    version_1 = block_mod.Header(**{**block.header.__dict__, "version": 1,
                                    "last_commit_hash": b""})
    assert not engine._valid(1, block_mod.Block(version_1, block.txs, None).encode())


@pytest.mark.parametrize("named, valid_round, ahead_s, code", [
    ("proposer", -1, 0, None),
    ("other", -1, 0, "consensus.header_proposer"),
    ("proposer", -1, 3600, "consensus.block_time"),
    ("first", 0, 0, None),                           # a re-proposal of round 0's value
    ("other", 0, 0, "consensus.header_proposer"),
])
def test_a_proposal_must_name_its_rounds_proposer_and_a_sane_time(
        net: Net, named: str, valid_round: int, ahead_s: int, code: str | None) -> None:
    proposer, receiver, others = _proposal_parts(net, 0 if valid_round < 0 else 1)
    first = net.validators.proposer(1, 0)
    header_proposer = {"proposer": proposer, "first": first,
                       "other": next(n for n in others if n != first)}[named]
    block = _block(net, proposer, header_proposer, int(net.now_s) + ahead_s)
    round_ = valid_round + 1
    proposal = sign_proposal(CHAIN_ID, 1, round_, block.encode(), valid_round, proposer,
                             net.keys[proposer].sign, block_mod.value_id)
    engine = net.engines[receiver]
    assert engine is not None
    out = engine.step(FromPeer("node-x", ConsensusMsg(encode_message(proposal))), net.now_s)
    refused = [a for a in out if isinstance(a, Refused)]
    assert refused == ([] if code is None else [Refused("node-x", code, proposer)])
    counted = engine.status()["consensus"]["refused_by_code"]  # type: ignore[index]
    assert counted == ({} if code is None else {code: 1})
    held = engine.core.proposals_of(round_)
    assert [p.value_id for p in held] == ([] if code else [block.hash()])


def _proposal_parts(net: Net, round_: int = 0) -> tuple[str, str, list[str]]:
    """The proposer of (1, round_), a receiver and the validators other than the proposer."""
    proposer = net.validators.proposer(1, round_)
    others = [n for n in IDS if n != proposer]
    return proposer, others[0], others


def _block(net: Net, builder: str, named: str, time_s: int) -> block_mod.Block:
    engine = net.engines[builder]
    assert engine is not None
    result = engine.app.execute(FinalizeRequest(1, time_s, (), named))
    return engine._build(result)


def test_crashed_node_catches_up_by_sync(net: Net, world: World) -> None:
    net.crash("node-3")
    for seq in range(1, 4):
        net.submit("node-0", world.batch_tx("dev-a", seq))
    net.run_until(lambda: _batches(net, "node-0") == 3)
    top = len(net.committed["node-0"])
    net.boot("node-3")
    net.run_until(lambda: len(net.committed["node-3"]) >= top)
    assert net.committed["node-3"][:top] == net.committed["node-0"][:top]
    engine = net.engines["node-3"]
    assert engine is not None and engine.bft.synced_blocks >= top


def test_the_store_reopens_with_bft_commits(net: Net, world: World, tmp_path: Path) -> None:
    net.submit("node-1", world.batch_tx("dev-a", 1))
    net.run_until(lambda: _batches(net, "node-1") == 1)
    net.crash("node-1")
    net.boot("node-1")  # Store.open re-verifies every block and BFT certificate
    engine = net.engines["node-1"]
    assert engine is not None and engine.app.state.batches == 1


def test_a_chain_rewritten_under_its_certificates_does_not_reopen(
        net: Net, tmp_path: Path) -> None:
    """Block 1 changed and every later block re-linked to it, keeping the precommit
    signatures: each link and hash checks out, but the certificate of block 1 signs the
    value id of the block that was decided."""
    net.run_until(lambda: len(net.committed["node-1"]) >= 3)
    net.crash("node-1")
    path = tmp_path / "node-1" / "ledger.sqlite"
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT height, data FROM block ORDER BY height").fetchall()
    prev_hash = GENESIS_HASH
    for height, data in rows:
        block = block_mod.decode_block(bytes(data))
        commit = block.last_commit
        if commit is not None:
            commit = replace(commit, block_hash=prev_hash)
        header = replace(block.header, prev_hash=prev_hash,
                         violations=block.header.violations + (height == 1))
        changed = block_mod.Block(header.bound_to(commit), block.txs, commit)
        conn.execute("UPDATE block SET hash = ?, data = ? WHERE height = ?",
                     (changed.hash(), changed.encode(), height))
        prev_hash = changed.hash()
    top, seen = conn.execute("SELECT height, data FROM seen_commit WHERE height = ?",
                             (len(rows),)).fetchone()
    relinked = replace(block_mod.decode_commit(cbor.decode(bytes(seen))), block_hash=prev_hash)
    conn.execute("UPDATE seen_commit SET data = ? WHERE height = ?", (relinked.encode(), top))
    conn.commit()
    conn.close()
    members = {n: (k.public_key(), 1) for n, k in net.keys.items()}
    with pytest.raises(StoreCorruptError, match=r"block 2: .*certificate of block 1 signs"):
        Store.open(path, CHAIN_ID, GENESIS_HASH, members, crypto.verify)


def test_forged_and_malformed_messages_are_refused(net: Net, world: World) -> None:
    engine = net.engines["node-0"]
    assert engine is not None
    out = engine.step(FromPeer("node-1", ConsensusMsg(b"\xff\x00garbage")), net.now_s)
    assert [a.code for a in out if isinstance(a, Refused)] == ["consensus.message"]
    forged = sign_vote(CHAIN_ID, PREVOTE, 1, 0, None, "node-2", key(7).sign)  # wrong key
    out = engine.step(FromPeer("node-1", ConsensusMsg(encode_message(forged))), net.now_s)
    assert [a for a in out if isinstance(a, Refused)] == [
        Refused("node-1", "consensus.signature", "node-2")]  # the link's peer, the signer
    stranger = sign_vote(CHAIN_ID, PREVOTE, 1, 0, None, "node-9", key(8).sign)
    out = engine.step(FromPeer("node-1", ConsensusMsg(encode_message(stranger))), net.now_s)
    assert [a.code for a in out if isinstance(a, Refused)] == ["consensus.unknown_validator"]
    out = engine.step(FromPeer("node-1", TxMsg(b"not a tx")), net.now_s)
    assert engine.status()["consensus"]["refused_by_code"] == {  # type: ignore[index]
        "consensus.message": 1, "consensus.signature": 1, "consensus.unknown_validator": 1}
    out = engine.step(FromPeer("node-1", StatusMsg(1)), net.now_s)
    assert not [a for a in out if isinstance(a, Send) and a.to == "node-1"]  # nothing to sync


def test_block_commit_with_round_round_trips(net: Net) -> None:
    commit = block_mod.Commit(3, bytes(32), (("node-0", bytes(64)),), 2, bytes(range(32)))
    assert block_mod.decode_commit(block_mod.cbor.decode(commit.encode())) == commit
    solo = block_mod.Commit(3, bytes(32), (("node-0", bytes(64)),))
    assert block_mod.decode_commit(block_mod.cbor.decode(solo.encode())) == solo


def _batches(net: Net, node_id: str) -> int:
    engine = net.engines[node_id]
    return -1 if engine is None else engine.app.state.batches
