"""The durable queue on a Pi: SQLite in WAL mode, synchronous=FULL.

One file `queue.sqlite3` in the state directory:

    queue(seq INTEGER PRIMARY KEY, made_at_s INTEGER, message BLOB)   signed batches
    meta(key TEXT PRIMARY KEY, value)     device_id, last_seq, last_confirmed

`append` inserts a batch and raises last_seq in one transaction, so a seq is spent
exactly when its batch is durable (edge/portable/agent.py explains why that gives seqs
without gaps or reuse).  synchronous=FULL makes every commit survive power loss, at one
fsync per batch, which an SD card does in milliseconds and a batch comes every 15 s.
The database remembers the device it belongs to and refuses another, so two gateways'
state can never mix.  Readers (`edge status`) open it read-only alongside the agent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from edge.portable.errors import LocalProtocolError

FILE_NAME = "queue.sqlite3"
BUSY_TIMEOUT_MS = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY, made_at_s INTEGER NOT NULL,
                                  message BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
"""


class StoreError(LocalProtocolError):
    code = "store.invalid"


class SqliteStore:
    """The agent.Store protocol over SQLite."""

    def __init__(self, path: Path, device_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._claim(device_id)
        self._last_seq = int(self._meta("last_seq", 0))
        self._depth = int(self.db.execute("SELECT count(*) FROM queue").fetchone()[0])

    @classmethod
    def in_dir(cls, state_dir: Path, device_id: str) -> SqliteStore:
        return cls(state_dir / FILE_NAME, device_id)

    def _claim(self, device_id: str) -> None:
        owner = self._meta("device_id", None)
        if owner is None:
            self.db.execute("INSERT INTO meta VALUES ('device_id', ?)", (device_id,))
        elif owner != device_id:
            raise StoreError(f"{self.path} belongs to device {owner}, not {device_id}")

    def _meta(self, key: str, default: Any) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def _set_meta(self, key: str, value: int) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET value = excluded.value", (key, value))

    def last_seq(self) -> int:
        return self._last_seq

    def append(self, seq: int, message: bytes, made_at_s: int) -> None:
        if seq <= self._last_seq:
            raise StoreError(f"seq {seq} was already used (last is {self._last_seq})")
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO queue VALUES (?, ?, ?)", (seq, made_at_s, message))
            self._set_meta("last_seq", seq)
        self._last_seq = seq
        self._depth += 1

    def delete(self, seq: int) -> bool:
        deleted = self.db.execute("DELETE FROM queue WHERE seq = ?", (seq,)).rowcount > 0
        self._depth -= int(deleted)
        return deleted

    def get(self, seq: int) -> bytes | None:
        row = self.db.execute("SELECT message FROM queue WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def oldest(self, count: int, after_seq: int) -> list[int]:
        rows = self.db.execute("SELECT seq FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                               (after_seq, count))
        return [int(r[0]) for r in rows]

    def depth(self) -> int:
        return self._depth

    def last_confirmed(self) -> int:
        return int(self._meta("last_confirmed", 0))

    def set_confirmed(self, seq: int) -> None:
        self._set_meta("last_confirmed", seq)

    def close(self) -> None:
        self.db.close()


def read_summary(state_dir: Path) -> dict[str, object]:
    """Queue facts for `edge status`, read-only (safe while the agent runs)."""
    path = state_dir / FILE_NAME
    if not path.exists():
        raise StoreError(f"{path} does not exist: has the agent run with this --state-dir?")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        depth, first, made = db.execute(
            "SELECT count(*), min(seq), min(made_at_s) FROM queue").fetchone()
    finally:
        db.close()
    return {"device_id": meta.get("device_id"), "queue_depth": depth,
            "oldest_queued_seq": first, "oldest_queued_at_s": made,
            "last_seq": meta.get("last_seq", 0), "last_confirmed": meta.get("last_confirmed", 0)}
