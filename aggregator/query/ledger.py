"""Read side of the ledger: blocks, proofs and receipts, and an index of readings.

Theory of operation
-------------------
`LedgerReader` opens the node's ledger file (`aggregator.store`) a second time,
read-only.  SQLite in WAL mode lets it read committed blocks while the node writes the
next one, and a block appears to it wholly or not at all (one transaction a block).
Blocks, commits, readings-log nodes and reading rows are written once and never
changed, so answers built from several reads agree even if a block commits between
them.  Every SQL statement the query API runs against the ledger is in this module.

Receipts (`bundle`): the reading rows of (device, seq) give the height and the leaf
indices; the block's stored results give the batch's position among its txs; the block
header, its stored commit (`seen_commit`, kept for every height) and the inclusion proofs
against the header's log size complete `receipts.Bundle`.  For receipts a block and its
results are read with cbor2's C decoder (a block holds thousands of txs and a receipt
needs one; the portable decoder took 30 ms a block); the bytes it hands out are checked
by whoever verifies the receipt.  Decoded blocks are kept in a small cache: a block is
immutable once stored.

`ReadingIndex` is a projection the query side keeps in DATA_DIR/query.sqlite: the
values of every committed batch (meter, read time, OBIS code, value, unit), every
violation record, which devices reported for which meter, and the class III document
records committed on chain (tx kind 4, with the height that committed them).
The ledger keeps leaves as [device, seq, meter, batch hash]; the values are inside the
signed batches in the block bodies, so the index reads each new block once and keeps
the values by (meter, time).  It is derived data: delete the file and it is rebuilt.
`catch_up` indexes whole blocks until it has read CATCHUP_TXS_MAX transactions (at least
one block) a call, so a request after a long pause does not stall the event loop for
long; `indexed_height` says how far it is.  Blocks and batches are read with cbor2's C
decoder and `Batch.from_obj` (the batches were verified when their block was executed);
a tx that does not read as a batch is left out of the index, never fatal.  A reading's
verification flag is the chain's own result: a rule.verification violation record for
its (device, seq, meter) (`verification_flags`).  Class II digests and the on-chain form
of a record are read from the ledger's state (`LedgerReader.record`), not indexed.

Limits
------
    BLOCK_CACHE_MAX      16     decoded blocks kept (a block is at most 32 MiB encoded,
                                a few MB in practice).
    LEAF_MAPS_MAX        4096   blocks whose tx-by-first-leaf map is kept (16 bytes a
                                tx: 32 KB for a block of 2000, 128 MB at most).
    CATCHUP_TXS_MAX      4096   txs indexed per call, about 2 default blocks (~0.2 s).
    PAGE_ROWS_MAX        1000   rows a page; a client pages with `after`.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from aggregator import block as block_mod
from aggregator import tx as tx_mod
from aggregator.app import Device
from aggregator.merkle import LogRangeError, MerkleLog, Node
from aggregator.store import SqliteNodeStore
from edge.portable import batch as batch_mod
from edge.portable import cbor, cose
from edge.portable.errors import GridLedgerError, LocalProtocolError, RemoteProtocolError
from gridledger.files import open_private_sqlite

from . import receipts
from .documents import DocumentRecord

BLOCK_CACHE_MAX = 16
LEAF_MAPS_MAX = 4096
CATCHUP_TXS_MAX = 4096
PAGE_ROWS_MAX = 1000
INDEX_FILE = "query.sqlite"
_RESULT_FIELDS = 7  # app.TxResult.to_obj: tx_hash, code, device, seq, first_leaf, count, viol


class NotFoundError(RemoteProtocolError):
    """A block, batch, device or log size the ledger does not hold (HTTP 404)."""

    code = "query.not_found"


class LedgerReadError(LocalProtocolError):
    """Stored data that does not agree with itself (HTTP 500): the node's store is
    damaged, which `Store.open` would have refused at start."""

    code = "query.ledger"


class RangeError(RemoteProtocolError):
    """A range that is not one (from after to, a size beyond the log): HTTP 400."""

    code = "query.range"


@dataclass(frozen=True)
class ChainSummary:
    height: int
    time_s: int
    block_hash: bytes
    log_size: int
    log_root: bytes
    batches: int
    readings: int
    violations: int


class LedgerReader:
    """Read-only queries over one node's ledger file."""

    def __init__(self, path: Path, chain_id: str) -> None:
        if not path.exists():
            raise NotFoundError(f"no ledger at {path}")
        self.chain_id = chain_id
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                     check_same_thread=False)
        self._blocks: OrderedDict[int, block_mod.Block] = OrderedDict()
        self._views: OrderedDict[int, BlockView] = OrderedDict()
        self._leaf_maps: OrderedDict[int, tuple[array.array[int], array.array[int]]] = \
            OrderedDict()

    def close(self) -> None:
        self._conn.close()

    @property
    def height(self) -> int:
        row = self._conn.execute("SELECT MAX(height) FROM block").fetchone()
        return int(row[0] or 0)

    def block(self, height: int) -> block_mod.Block:
        cached = self._blocks.get(height)
        if cached is not None:
            self._blocks.move_to_end(height)
            return cached
        row = self._conn.execute("SELECT data FROM block WHERE height = ?",
                                 (height,)).fetchone()
        if row is None:
            raise NotFoundError(f"no committed block at height {height}")
        found = block_mod.decode_block(bytes(row[0]))
        self._blocks[height] = found
        if len(self._blocks) > BLOCK_CACHE_MAX:
            self._blocks.popitem(last=False)
        return found

    def header_bytes(self, height: int) -> bytes:
        return self.block(height).raw_header()

    def results(self, height: int) -> list[list[Any]]:
        row = self._conn.execute("SELECT results FROM block WHERE height = ?",
                                 (height,)).fetchone()
        if row is None:
            raise NotFoundError(f"no committed block at height {height}")
        found = cbor.decode(bytes(row[0]), max_depth=4, max_items=1 << 20,
                            max_size_bytes=block_mod.BLOCK_BYTES_MAX)
        return [r for r in found if isinstance(r, list) and len(r) == _RESULT_FIELDS] \
            if isinstance(found, list) else []

    def results_fast(self, height: int) -> list[list[Any]]:
        """`results`, read with the C decoder (the index reads every block's)."""
        row = self._conn.execute("SELECT results FROM block WHERE height = ?",
                                 (height,)).fetchone()
        if row is None:
            raise NotFoundError(f"no committed block at height {height}")
        found = cbor2.loads(bytes(row[0]))
        return [r for r in found if isinstance(r, list) and len(r) == _RESULT_FIELDS] \
            if isinstance(found, list) else []

    def commit(self, height: int) -> block_mod.Commit:
        row = self._conn.execute("SELECT data FROM seen_commit WHERE height = ?",
                                 (height,)).fetchone()
        if row is None:
            raise NotFoundError(f"no commit stored for height {height}")
        return block_mod.decode_commit(cbor.decode(bytes(row[0])))

    def summary(self) -> ChainSummary:
        self._conn.execute("BEGIN")  # one snapshot: the height and the counts of one block
        try:
            height = self.height
            raw = self._conn.execute("SELECT value FROM meta WHERE key = 'summary'").fetchone()
        finally:
            self._conn.execute("COMMIT")
        counts = cbor.decode(bytes(raw[0])) if raw is not None else None
        if not height or not isinstance(counts, list) or len(counts) != 7:
            return ChainSummary(0, 0, b"", 0, hashlib.sha256(b"").digest(), 0, 0, 0)
        header = self.block(height).header
        batches, readings, violations = (int(c) for c in counts[4:])
        return ChainSummary(height, header.time_s, self.block(height).hash(), header.log_size,
                            header.log_root, batches, readings, violations)

    # -- class II/III records in the state ------------------------------------------------

    def record(self, key: str) -> list[Any] | None:
        """A record of the chain's state (`aggregator.app`: "document/<hex>" or
        "customer/<meter>"), decoded; None when the chain holds none."""
        row = self._conn.execute("SELECT data FROM record WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        found = cbor.decode(bytes(row[0]))
        if not isinstance(found, list):
            raise LedgerReadError(f"record {key!r} is not an array")
        return found

    # -- devices -------------------------------------------------------------------------

    def device(self, device_id: str) -> Device:
        row = self._conn.execute("SELECT data FROM device WHERE device_id = ?",
                                 (device_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no device {device_id!r} on the chain")
        return Device.from_obj(cbor.decode(bytes(row[0]), max_items=1 << 16))

    def devices(self, after: str, limit: int) -> list[Device]:
        rows = self._conn.execute(
            "SELECT data FROM device WHERE device_id > ? ORDER BY device_id LIMIT ?",
            (after, limit))
        return [Device.from_obj(cbor.decode(bytes(r[0]), max_items=1 << 16)) for r in rows]

    # -- proofs and receipts -------------------------------------------------------------

    def log(self) -> MerkleLog:
        return MerkleLog(SqliteNodeStore(self._conn))

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        log = self.log()
        if not 0 <= first <= second <= log.size:
            raise RangeError(f"need 0 <= from {first} <= to {second} <= log size {log.size}")
        return receipts.consistency_json(first, second, log.root(first), log.root(second),
                                         log.consistency_proof(first, second))

    def batch_rows(self, device_id: str, seq: int) -> list[tuple[int, int, str, bytes]]:
        """(leaf index, height, meter, leaf data) of one committed batch, in leaf order."""
        rows = self._conn.execute(
            "SELECT idx, height, meter_id, leaf FROM reading WHERE device_id = ? AND seq = ? "
            "ORDER BY idx", (device_id, seq))
        return [(int(i), int(h), str(m), bytes(leaf)) for i, h, m, leaf in rows]

    def leaf_batch(self, index: int) -> tuple[str, int]:
        """(device, seq) of the batch whose meter group is leaf `index`."""
        row = self._conn.execute("SELECT device_id, seq FROM reading WHERE idx = ?",
                                 (index,)).fetchone()
        if row is None:
            raise NotFoundError(f"no leaf {index}")
        return str(row[0]), int(row[1])

    def bundle(self, device_id: str, seq: int) -> receipts.Bundle:
        rows = self.batch_rows(device_id, seq)
        if not rows:
            raise NotFoundError(f"no committed batch {device_id}/{seq}")
        first_leaf, height, _, leaf = rows[0]
        view = self.view(height)
        message = self._batch_message(view, self.tx_position(height, first_leaf), leaf)
        log = MerkleLog(_MemoNodes(SqliteNodeStore(self._conn)))  # a batch's leaves are
        # neighbours: their paths share most nodes
        size = view.header.log_size
        leaves = tuple(receipts.Leaf(meter, idx, tuple(log.inclusion_proof(idx, size)))
                       for idx, _, meter, _ in rows)
        certificate = None
        if cose.parse(message).kcwt is None:
            certificate = self.device(device_id).certificate
        commit = self.commit(height)
        needs_block = receipts.needs_block(view.header, commit)  # a version 1 BFT block
        whole = self.block(height).encode() if needs_block else None
        return receipts.Bundle(self.chain_id, device_id, seq, message, certificate, leaves,
                               view.header_bytes, commit, whole)

    @staticmethod
    def _batch_message(view: BlockView, position: int, leaf: bytes) -> bytes:
        """The batch's COSE bytes, checked against the batch hash in its leaf."""
        message = tx_mod.decode(view.txs[position]).body
        if cbor2.loads(leaf)[3] != hashlib.sha256(message).digest():
            raise LedgerReadError(f"tx {position} of block {view.header.height} is not the "
                                  "batch its readings-log leaf names")
        return message

    def tx_position(self, height: int, first_leaf: int) -> int:
        """Index among the block's txs of the committed batch whose first leaf this is."""
        firsts, positions = self._leaf_map(height)
        at = bisect.bisect_left(firsts, first_leaf)
        if at == len(firsts) or firsts[at] != first_leaf:
            raise LedgerReadError(f"no tx of block {height} starts at leaf {first_leaf}")
        return positions[at]

    def _leaf_map(self, height: int) -> tuple[array.array[int], array.array[int]]:
        """First leaf of each committed tx of a block, ascending, with the tx's position:
        decoding a block's results costs ~1 ms, so this small map (16 bytes a tx) is kept
        for many blocks."""
        cached = self._leaf_maps.get(height)
        if cached is not None:
            self._leaf_maps.move_to_end(height)
            return cached
        results = self.results_fast(height)
        pairs = [(int(r[4]), i) for i, r in enumerate(results) if r[1] == "ok" and r[5]]
        found = array.array("q", (f for f, _ in pairs)), array.array("q", (i for _, i in pairs))
        self._leaf_maps[height] = found
        if len(self._leaf_maps) > LEAF_MAPS_MAX:
            self._leaf_maps.popitem(last=False)
        return found

    def view(self, height: int) -> BlockView:
        """A block's header and txs, read with the C decoder: a receipt needs one tx of a
        block of thousands."""
        cached = self._views.get(height)
        if cached is not None:
            self._views.move_to_end(height)
            return cached
        row = self._conn.execute("SELECT data FROM block WHERE height = ?",
                                 (height,)).fetchone()
        if row is None:
            raise NotFoundError(f"no committed block at height {height}")
        header_bytes, txs, _ = cbor2.loads(bytes(row[0]))
        view = BlockView(bytes(header_bytes), block_mod.decode_header(bytes(header_bytes)),
                         tuple(txs))
        self._views[height] = view
        if len(self._views) > BLOCK_CACHE_MAX:
            self._views.popitem(last=False)
        return view


class _MemoNodes:
    """A read-only NodeStore that reads each node once (for one receipt's proofs)."""

    def __init__(self, base: SqliteNodeStore) -> None:
        self._base = base
        self._seen: dict[tuple[int, int], bytes] = {}

    def leaf_count(self) -> int:
        return self._base.leaf_count()

    def node(self, level: int, index: int) -> bytes:
        found = self._seen.get((level, index))
        if found is None:
            found = self._seen[(level, index)] = self._base.node(level, index)
        return found

    def append(self, leaf_count: int, nodes: Sequence[Node]) -> None:
        raise LogRangeError("the read side never appends")


@dataclass(frozen=True)
class BlockView:
    header_bytes: bytes
    header: block_mod.Header
    txs: tuple[bytes, ...]


# -- the reading index -------------------------------------------------------------------

_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reading_value (
    id INTEGER PRIMARY KEY, meter TEXT NOT NULL, time_s INTEGER NOT NULL,
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, obis TEXT NOT NULL, value, unit TEXT NOT NULL,
    height INTEGER NOT NULL, leaf_index INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reading_value_by_meter ON reading_value (meter, time_s, id);
CREATE TABLE IF NOT EXISTS meter_device (meter TEXT NOT NULL, device_id TEXT NOT NULL,
    PRIMARY KEY (meter, device_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS violation (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    height INTEGER NOT NULL, code TEXT NOT NULL, meter TEXT NOT NULL, obis TEXT NOT NULL,
    detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS violation_by_device ON violation (device_id, id);
CREATE INDEX IF NOT EXISTS violation_by_meter ON violation (meter, code);
CREATE TABLE IF NOT EXISTS document (
    digest TEXT PRIMARY KEY, kind TEXT NOT NULL, meter TEXT NOT NULL,
    valid_from_s INTEGER NOT NULL, valid_until_s INTEGER NOT NULL, signer TEXT NOT NULL,
    record BLOB NOT NULL, height INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS document_by_meter ON document (meter, valid_until_s);
"""

ReadingRow = tuple[int, str, int, str, int, str, Any, str, int, int]
ViolationRow = tuple[int, str, int, int, str, str, str, str]


class ReadingIndex:
    """DATA_DIR/query.sqlite: values, violations and documents by meter and device."""

    def __init__(self, data_dir: Path, reader: LedgerReader) -> None:
        self._db = open_private_sqlite(data_dir / INDEX_FILE)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(document)")}
        if "stored_at_s" in columns:  # records an older node kept off chain: not evidence
            self._db.execute("DROP TABLE document")
        self._db.executescript(_INDEX_SCHEMA)
        self._reader = reader

    def close(self) -> None:
        self._db.close()

    @property
    def indexed_height(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'height'").fetchone()
        return 0 if row is None else int(row[0])

    @property
    def txs(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'txs'").fetchone()
        return 0 if row is None else int(row[0])

    def catch_up(self, txs_max: int = CATCHUP_TXS_MAX) -> int:
        """Index the next blocks, about `txs_max` txs' worth; returns the indexed height."""
        height, top, txs = self.indexed_height, self._reader.height, 0
        while height < top and txs < txs_max:
            height += 1
            txs += self._index_block(height)
        return height

    def _index_block(self, height: int) -> int:
        view = self._reader.view(height)
        results = self._reader.results_fast(height)
        values: list[tuple[Any, ...]] = []
        violations: list[tuple[Any, ...]] = []
        documents: list[tuple[Any, ...]] = []
        for raw, result in zip(view.txs, results, strict=False):
            violations.extend(_violation_rows(result, height))
            if result[1] == "ok":
                values.extend(_value_rows(raw, result, height))
                documents.extend(self._document_rows(raw, height))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT INTO reading_value (meter, time_s, device_id, seq, "
                                 "obis, value, unit, height, leaf_index) VALUES "
                                 "(?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            self._db.executemany("INSERT OR IGNORE INTO meter_device VALUES (?, ?)",
                                 {(v[0], v[2]) for v in values})
            self._db.executemany("INSERT INTO violation (device_id, seq, height, code, meter, "
                                 "obis, detail) VALUES (?, ?, ?, ?, ?, ?, ?)", violations)
            self._db.executemany("INSERT OR REPLACE INTO document VALUES "
                                 "(?, ?, ?, ?, ?, ?, ?, ?)", documents)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('height', ?)", (height,))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('txs', ?)",
                             (self.txs + len(view.txs),))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return len(view.txs)

    def _document_rows(self, raw: bytes, height: int) -> Iterator[tuple[Any, ...]]:
        """The document table's row of a committed document tx: fields and signer as the
        chain recorded them (`LedgerReader.record`), the signed record, the height."""
        if raw[1:2] != bytes([tx_mod.DOCUMENT]):  # [kind, body]: kind is the second byte
            return
        try:
            body = cbor2.loads(raw)[1]
            digest = cbor2.loads(cbor2.loads(body).value[2])[1]
            found = self._reader.record("document/" + digest.hex())
        except (GridLedgerError, cbor2.CBORError, ValueError, TypeError, AttributeError,
                IndexError, KeyError):  # an "ok" document reads; anything else is skipped
            return
        if found is not None:
            kind, meter, start, until, signer = found[:5]
            yield (digest.hex(), kind, meter, start, until, signer, body, height)

    # -- queries -------------------------------------------------------------------------

    def devices_of_meter(self, meter: str) -> frozenset[str]:
        rows = self._db.execute("SELECT device_id FROM meter_device WHERE meter = ?", (meter,))
        return frozenset(str(r[0]) for r in rows)

    def readings(self, meter: str, from_s: int, to_s: int, after: int,
                 limit: int) -> list[ReadingRow]:
        rows = self._db.execute(
            "SELECT id, meter, time_s, device_id, seq, obis, value, unit, height, leaf_index "
            "FROM reading_value WHERE meter = ? AND time_s >= ? AND time_s < ? AND id > ? "
            "ORDER BY id LIMIT ?", (meter, from_s, to_s, after, limit))
        return [tuple(r) for r in rows]

    def violations(self, device_id: str | None, after: int, limit: int) -> list[ViolationRow]:
        if device_id is None:
            rows = self._db.execute(
                "SELECT id, device_id, seq, height, code, meter, obis, detail FROM violation "
                "WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        else:
            rows = self._db.execute(
                "SELECT id, device_id, seq, height, code, meter, obis, detail FROM violation "
                "WHERE device_id = ? AND id > ? ORDER BY id LIMIT ?", (device_id, after, limit))
        return [tuple(r) for r in rows]

    def verification_flags(self, meter: str) -> set[tuple[str, int]]:
        """(device, seq) of the batches whose readings of `meter` the chain flagged with
        rule.verification."""
        rows = self._db.execute("SELECT device_id, seq FROM violation WHERE meter = ? AND "
                                "code = 'rule.verification'", (meter,))
        return {(str(d), int(q)) for d, q in rows}

    # -- class III document records ------------------------------------------------------

    def document(self, digest_hex: str) -> IndexedDocument | None:
        """The committed record of a document, as the chain recorded it."""
        row = self._db.execute(
            "SELECT digest, kind, meter, valid_from_s, valid_until_s, signer, record, height "
            "FROM document WHERE digest = ?", (digest_hex,)).fetchone()
        if row is None:
            return None
        return IndexedDocument(_record(row), str(row[5]), bytes(row[6]), int(row[7]))

    def documents_of_meter(self, meter: str) -> list[IndexedDocument]:
        rows = self._db.execute(
            "SELECT digest, kind, meter, valid_from_s, valid_until_s, signer, record, height "
            "FROM document WHERE meter = ? ORDER BY valid_until_s, digest LIMIT ?",
            (meter, PAGE_ROWS_MAX))
        return [IndexedDocument(_record(r), str(r[5]), bytes(r[6]), int(r[7])) for r in rows]


@dataclass(frozen=True)
class IndexedDocument:
    """A document record committed on chain: its fields, signer, COSE bytes, block."""

    record: DocumentRecord
    signer: str
    signed: bytes
    height: int


def _record(row: Iterable[Any]) -> DocumentRecord:
    digest, kind, meter, valid_from_s, valid_until_s, *_ = row
    return DocumentRecord(bytes.fromhex(digest), kind, meter, valid_from_s, valid_until_s)


def _violation_rows(result: list[Any], height: int) -> Iterator[tuple[Any, ...]]:
    found = result[6] if isinstance(result[6], list) else []
    for v in found:
        if isinstance(v, list) and len(v) == 6:
            code, device_id, seq, meter, obis, detail = v
            yield (device_id, seq, height, code, meter, obis, detail)


def _value_rows(raw: bytes, result: list[Any], height: int) -> Iterator[tuple[Any, ...]]:
    try:
        kind, body = cbor2.loads(raw)
        if kind != tx_mod.BATCH:
            return
        found = batch_mod.Batch.from_obj(cbor2.loads(cbor2.loads(body).value[2]))
    except (GridLedgerError, cbor2.CBORError, ValueError, TypeError, AttributeError,
            IndexError, KeyError):  # a committed "ok" batch reads; anything else is skipped
        return
    first_leaf = int(result[4])
    for offset, group in enumerate(found.meters):
        for record in group.records:
            yield (group.meter_id, group.read_time_s, found.device_id, found.seq,
                   record.name, record.value, record.unit, height, first_leaf + offset)
