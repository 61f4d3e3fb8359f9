"""Durable, private files: what every part that keeps secrets or ledgers on disk needs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

PRIVATE_MODE = 0o600


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (POSIX needs the directory synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only (0600), atomically and durably:
    a crash leaves the old file or the new one, and an existing file's wider mode is not
    inherited (the new file replaces it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, PRIVATE_MODE)
    os.replace(tmp, path)


def open_private_sqlite(path: Path) -> sqlite3.Connection:
    """SQLite in WAL mode with synchronous=FULL, its file created 0600 by us (SQLite gives
    its -wal and -shm files the same mode), in autocommit mode for explicit transactions;
    usable from the threads the caller serialises itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE))
    os.chmod(path, PRIVATE_MODE)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db
