"""The node's durable ledger: one SQLite file, one transaction per block, verified on open.

Theory of operation
-------------------
SQLite in WAL mode with synchronous=FULL: a block is durable when `save_block` returns,
and a crash at any point leaves either the whole block (block, results, seen commit,
device rows, readings, Merkle nodes, summary) or none of it.  The application's
`commit()` runs inside that transaction, because it appends the readings log's nodes
through `SqliteNodeStore`; should anything fail the transaction rolls back, and the node
must restart from the store (the in-memory State may be ahead; `Store.load_state` is the
truth).

Tables (blobs are deterministic CBOR unless said otherwise):

    meta(key, value)                 genesis_hash, chain_id, summary = [height, time_s,
                                     log_size, log_root, batches, readings, violations],
                                     log_leaves (uint, the Merkle store's leaf count)
    block(height, hash, data, results)   the encoded block (`Block.encode`), its hash,
                                     the encoded tx results (`FinalizeResult.encode_results`)
    seen_commit(height, data)        the commit of the newest block (the next block
                                     carries it); kept for every height
    device(device_id, data)          `Device.to_obj`, one row per device, upserted
    reading(idx, height, device_id,  readings-log leaf data (`app.leaf_bytes`), with its
            seq, meter_id, leaf)     device, seq and meter copied out and indexed, so the
                                     leaves of a batch are one lookup (the leaf is the
                                     authority: a proof is checked against its hash)
    merkle_node(level, idx, hash)    the perfect subtrees of `aggregator.merkle`
    record(key, data)                class II/III records of the State (`app.State.records`),
                                     upserted; the verification periods are derived

`Store.open` re-verifies everything before the node may serve: each block decodes, its
stored hash is SHA-256 of its header, heights run 1..n, prev_hash links to the previous
block (the genesis hash for block 1), the txs root matches the body, time never goes
back, each last_commit names the previous block and carries > 2/3 of the validator power
(a BFT certificate signs the previous block's value id, `block.value_id`);
every reading's leaf hash is the stored level-0 node, each header's log root and size
are the Merkle tree's at that size, and the device rows give the last header's state
root.  Any mismatch raises StoreCorruptError (store.corrupt) naming the height: one
flipped byte anywhere in a stored block is caught.  Cost is linear in the ledger.

Errors
------
    GridLedgerError
    └── StoreError               store.error
        ├── StoreCorruptError    store.corrupt   the stored ledger does not verify
        └── StoreGenesisError    store.genesis   the store belongs to another chain
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from edge.portable import cbor
from edge.portable.errors import GridLedgerError

from . import block as block_mod
from .app import Device, FinalizeResult, State, verification_periods
from .merkle import MerkleLog, Node, leaf_hash

__all__ = [
    "SCHEMA",
    "SqliteNodeStore",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreGenesisError",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS block (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL, results BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seen_commit (height INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS device (device_id TEXT PRIMARY KEY, data BLOB NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reading (
    idx INTEGER PRIMARY KEY, height INTEGER NOT NULL, device_id TEXT NOT NULL,
    seq INTEGER NOT NULL, meter_id TEXT NOT NULL, leaf BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS reading_by_device ON reading (device_id, seq);
CREATE TABLE IF NOT EXISTS record (key TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merkle_node (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
"""

VerifyFn = Callable[[bytes, bytes, bytes], bool]
_WRONG_TYPES = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError)


# The sqlite3 module binds int, float and str as they are but sends every bytes value
# through its adapter protocol first, which looks for __adapt__ and __conform__ by
# raising and clearing two AttributeErrors (~1/3 µs a value, and a block binds several
# blobs a reading).  An adapter registered for bytes is found at the first step and
# returns the value itself, so what is stored does not change.
sqlite3.register_adapter(bytes, bytes)


class StoreError(GridLedgerError):
    code = "store.error"


class StoreCorruptError(StoreError):
    code = "store.corrupt"


class StoreGenesisError(StoreError):
    code = "store.genesis"


class SqliteNodeStore:
    """`merkle.NodeStore` over the merkle_node table; writes join the open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def leaf_count(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'log_leaves'").fetchone()
        return 0 if row is None else int(row[0])

    def node(self, level: int, index: int) -> bytes:
        row = self._conn.execute(
            "SELECT hash FROM merkle_node WHERE level = ? AND idx = ?", (level, index)
        ).fetchone()
        if row is None:
            raise StoreCorruptError(f"Merkle node ({level}, {index}) is missing")
        return bytes(row[0])

    def append(self, leaf_count: int, nodes: Sequence[Node]) -> None:
        self._conn.executemany("INSERT INTO merkle_node VALUES (?, ?, ?)", nodes)
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('log_leaves', ?)", (leaf_count,))


class Store:
    """One node's ledger file."""

    def __init__(self, conn: sqlite3.Connection, genesis_hash: bytes) -> None:
        self._conn = conn
        self.genesis_hash = genesis_hash
        self.nodes = SqliteNodeStore(conn)

    @classmethod
    def open(
        cls,
        path: Path,
        chain_id: str,
        genesis_hash: bytes,
        validators: Mapping[str, tuple[bytes, int]],
        verify_fn: VerifyFn,
    ) -> Store:
        """Open (creating if new) and verify; StoreCorruptError if it does not verify."""
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            store = cls(conn, genesis_hash)
            store._bind(chain_id)
            store.verify(chain_id, validators, verify_fn)
        except (sqlite3.DatabaseError, *_WRONG_TYPES) as exc:
            conn.close()
            raise StoreCorruptError(f"{path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def _bind(self, chain_id: str) -> None:
        found = self._meta("genesis_hash")
        if found is None:
            with self._transaction():
                self._put_meta("genesis_hash", self.genesis_hash)
                self._put_meta("chain_id", chain_id.encode())
        elif bytes(found) != self.genesis_hash:
            raise StoreGenesisError("the store was made for another genesis file")

    # -- reading ------------------------------------------------------------------------

    def _meta(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    @property
    def height(self) -> int:
        row = self._conn.execute("SELECT MAX(height) FROM block").fetchone()
        return int(row[0] or 0)

    def block(self, height: int) -> block_mod.Block:
        row = self._conn.execute("SELECT data FROM block WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise StoreError(f"no block {height}", "store.range")
        return block_mod.decode_block(bytes(row[0]))

    def results(self, height: int) -> object:
        row = self._conn.execute(
            "SELECT results FROM block WHERE height = ?", (height,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no block {height}", "store.range")
        return cbor.decode(bytes(row[0]), max_depth=4, max_items=1 << 20,
                           max_size_bytes=block_mod.BLOCK_BYTES_MAX)

    def readings_of(self, device_id: str, seq: int) -> list[tuple[int, int, str, bytes]]:
        """(leaf index, height, meter id, leaf data) of one batch's readings."""
        rows = self._conn.execute(
            "SELECT idx, height, meter_id, leaf FROM reading WHERE device_id = ? AND seq = ? "
            "ORDER BY idx", (device_id, seq),
        )
        return [(int(i), int(h), str(m), bytes(leaf)) for i, h, m, leaf in rows]

    def batch_height(self, device_id: str, seq: int, batch_hash: bytes) -> int | None:
        """Height of the block that committed exactly this signed batch, if any."""
        for _, height, _, leaf in self.readings_of(device_id, seq):
            decoded = cbor.decode(leaf)
            if isinstance(decoded, list) and decoded[-1] == batch_hash:
                return height
        return None

    def seen_commit(self, height: int) -> block_mod.Commit | None:
        row = self._conn.execute(
            "SELECT data FROM seen_commit WHERE height = ?", (height,)
        ).fetchone()
        return None if row is None else block_mod.decode_commit(cbor.decode(bytes(row[0])))

    def last_block(self) -> block_mod.Block | None:
        height = self.height
        return self.block(height) if height else None

    def load_state(self) -> State:
        raw = self._meta("summary")
        if raw is None:
            return State()
        summary = cbor.decode(raw)
        if not isinstance(summary, list) or len(summary) != 7:
            raise StoreCorruptError("state summary is malformed")
        height, time_s, log_size, log_root, batches, readings, violations = summary
        devices = {}
        for device_id, data in self._conn.execute("SELECT device_id, data FROM device"):
            devices[device_id] = Device.from_obj(cbor.decode(bytes(data), max_items=1 << 16))
        rows = self._conn.execute("SELECT key, data FROM record")
        records = {str(k): bytes(v) for k, v in rows}
        return State(height, time_s, MappingProxyType(devices), log_size, log_root, batches,
                     readings, violations, MappingProxyType(records),
                     MappingProxyType(verification_periods(records)))

    # -- writing ------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _put_meta(self, key: str, value: bytes | int) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def save_block(
        self,
        block: block_mod.Block,
        result: FinalizeResult,
        seen_commit: block_mod.Commit,
        app_commit: Callable[[], bytes],
    ) -> bytes:
        """Write one block and everything it changed in one transaction; `app_commit`
        (the application's commit) runs inside it.  Returns the app hash."""
        height = block.height
        with self._transaction():
            self._conn.execute(
                "INSERT INTO block VALUES (?, ?, ?, ?)",
                (height, block.hash(), block.encode(), result.encode_results()),
            )
            self._conn.execute("INSERT INTO seen_commit VALUES (?, ?)",
                               (height, seen_commit.encode()))
            self._write_state(result, height)
            app_hash = app_commit()
        return app_hash

    def _write_state(self, result: FinalizeResult, height: int) -> None:
        state = result.state
        first = state.log_size - len(result.leaves)
        rows = [
            (first + i, height, device_id, seq, meter_id, leaf)
            for i, (leaf, (device_id, seq, meter_id)) in enumerate(
                zip(result.leaves, result.leaf_keys, strict=True)
            )
        ]
        self._conn.executemany("INSERT INTO reading VALUES (?, ?, ?, ?, ?, ?)", rows)
        self._conn.executemany(
            "INSERT OR REPLACE INTO device VALUES (?, ?)",
            [(d.device_id, d.encoded) for d in result.changed],
        )
        if result.changed_records:
            self._conn.executemany("INSERT OR REPLACE INTO record VALUES (?, ?)",
                                   result.changed_records)
        summary = [state.height, state.time_s, state.log_size, state.log_root, state.batches,
                   state.readings, state.violations]
        self._put_meta("summary", cbor.encode(summary))

    # -- verification -------------------------------------------------------------------

    def verify(
        self, chain_id: str, validators: Mapping[str, tuple[bytes, int]], verify_fn: VerifyFn
    ) -> None:
        """Re-verify the whole stored ledger; StoreCorruptError on the first mismatch."""
        try:
            headers = self._verify_chain(chain_id, validators, verify_fn)
            self._verify_log(headers)
            self._verify_state(headers)
        except _WRONG_TYPES as exc:
            # SQLite columns are dynamically typed: a damaged record can hand back text or
            # a number where a blob was written.
            raise StoreCorruptError(f"stored value of the wrong type: {exc!r}") from None

    def _verify_chain(
        self, chain_id: str, validators: Mapping[str, tuple[bytes, int]], verify_fn: VerifyFn
    ) -> list[block_mod.Header]:
        headers: list[block_mod.Header] = []
        prev_hash = self.genesis_hash
        prev: _Stored | None = None
        rows = self._conn.execute("SELECT height, hash, data FROM block ORDER BY height")
        for height, stored_hash, data in rows:
            try:
                block = block_mod.decode_block(bytes(data))
                _check_block(block, height, bytes(stored_hash), prev_hash, headers, chain_id)
                _check_commit(block.last_commit, height - 1, prev_hash, chain_id, validators,
                              verify_fn, prev)
            except GridLedgerError as exc:
                raise StoreCorruptError(f"block {height}: [{exc.code}] {exc}") from None
            headers.append(block.header)
            prev_hash, prev = bytes(stored_hash), _Stored(block, bytes(data))
        if headers:
            self._verify_seen_commit(len(headers), prev_hash, chain_id, validators, verify_fn,
                                     prev)
        return headers

    def _verify_seen_commit(
        self, height: int, block_hash: bytes, chain_id: str,
        validators: Mapping[str, tuple[bytes, int]], verify_fn: VerifyFn,
        stored: _Stored | None,
    ) -> None:
        try:
            commit = self.seen_commit(height)
            if commit is None:
                raise StoreCorruptError("no commit for the newest block")
            _check_commit(commit, height, block_hash, chain_id, validators, verify_fn, stored)
        except GridLedgerError as exc:
            raise StoreCorruptError(f"seen commit {height}: [{exc.code}] {exc}") from None

    def _verify_log(self, headers: list[block_mod.Header]) -> None:
        size = headers[-1].log_size if headers else 0
        if self.nodes.leaf_count() != size:
            raise StoreCorruptError(f"Merkle store holds {self.nodes.leaf_count()} leaves, "
                                    f"the last header {size}")
        count = 0
        for idx, leaf in self._conn.execute("SELECT idx, leaf FROM reading ORDER BY idx"):
            if idx != count or leaf_hash(bytes(leaf)) != self.nodes.node(0, idx):
                raise StoreCorruptError(f"reading {idx} does not match its leaf hash")
            count += 1
        if count != size:
            raise StoreCorruptError(f"{count} readings stored, the last header says {size}")
        log = MerkleLog(self.nodes)
        for header in headers:
            if log.root(header.log_size) != header.log_root:
                raise StoreCorruptError(f"block {header.height}: log root does not match")

    def _verify_state(self, headers: list[block_mod.Header]) -> None:
        try:
            state = self.load_state()
        except GridLedgerError as exc:
            raise StoreCorruptError(f"state: [{exc.code}] {exc}") from None
        if not headers:
            return
        last = headers[-1]
        if state.height != last.height or state.root() != last.state_root:
            raise StoreCorruptError(f"state does not match the state root of block {last.height}")


def _check_block(
    block: block_mod.Block,
    height: int,
    stored_hash: bytes,
    prev_hash: bytes,
    headers: list[block_mod.Header],
    chain_id: str,
) -> None:
    header = block.header
    if block.hash() != stored_hash or header.height != height:
        raise StoreCorruptError("stored hash or height does not match the header")
    if header.chain_id != chain_id or header.prev_hash != prev_hash:
        raise StoreCorruptError("chain id or previous block hash does not match")
    if header.txs_root != block_mod.txs_root(block.txs):
        raise StoreCorruptError("transactions do not match the txs root")
    if headers and (header.time_s < headers[-1].time_s or header.log_size < headers[-1].log_size):
        raise StoreCorruptError("time or log size goes backwards")


@dataclass(frozen=True)
class _Stored:
    """A stored block, decoded and as bytes: what a BFT commit's value id is checked on."""

    block: block_mod.Block
    data: bytes


def _check_commit(
    commit: block_mod.Commit | None,
    height: int,
    block_hash: bytes,
    chain_id: str,
    validators: Mapping[str, tuple[bytes, int]],
    verify_fn: VerifyFn,
    stored: _Stored | None = None,
) -> None:
    if height == 0:
        if commit is not None:
            raise StoreCorruptError("block 1 carries a commit")
        return
    if commit is None or commit.height != height or commit.block_hash != block_hash:
        raise StoreCorruptError(f"commit does not name block {height}")
    if commit.round is not None and stored is not None and \
            commit.value_id != block_mod.value_id(stored.data, stored.block):
        raise StoreCorruptError(f"the certificate of block {height} signs another value")
    block_mod.verify_commit(commit, chain_id, validators, verify_fn)
