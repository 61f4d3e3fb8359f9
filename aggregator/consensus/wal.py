"""The consensus write-ahead log: what this node signed, durable before it is sent.

Contract
--------
The core emits `Persist(record)` before the `Broadcast` of every proposal or vote it
signs.  The shell performs actions in order and must not send a message until the
`append` of its record has returned, which means the bytes are on stable storage.  On
restart the shell rebuilds the core with `Core.restore(config, height, wal.records())`
where height is one above the last block in the block store.  The core then re-sends
what it had signed and never signs a different proposal or vote for the same (height,
round, type): no equivocation across a crash.  After a block is durable in the block
store the shell may call `prune_below(height)`; records of lower heights are useless.

A record is (height, bytes); the bytes are `core.encode_record` output.

File format (FileWal): append-only, one entry per record

    length: u32 BE | height: u64 BE | crc32(payload): u32 BE | payload

and fsync after every append (the vote must survive power loss).  On open a torn last
entry (short, or CRC mismatch at the end of the file: a crash during append) is cut
off: its message was never sent.  A bad entry followed by more entries raises
WalCorruptError.  Pruning writes a new file, fsyncs it and renames it over the old one.

Errors
------
    GridLedgerError
    └── WalError               consensus.wal
        └── WalCorruptError    consensus.wal_corrupt   a bad entry before the end

Limits: RECORD_BYTES_MAX 34 MiB (a proposal carries its value, messages.VALUE_BYTES_MAX).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Protocol

from edge.portable.errors import GridLedgerError
from gridledger.files import fsync_dir

from .messages import VALUE_BYTES_MAX

__all__ = ["FileWal", "MemoryWal", "Wal", "WalCorruptError", "WalError"]

RECORD_BYTES_MAX = VALUE_BYTES_MAX + 1024 * 1024
_HEAD = struct.Struct(">IQI")


class WalError(GridLedgerError):
    code = "consensus.wal"


class WalCorruptError(WalError):
    code = "consensus.wal_corrupt"


class Wal(Protocol):
    def append(self, height: int, record: bytes) -> None: ...

    def records(self) -> list[tuple[int, bytes]]: ...

    def prune_below(self, height: int) -> None: ...


class MemoryWal:
    """The in-memory twin: survives a simulated crash because the simulator keeps it."""

    def __init__(self) -> None:
        self._records: list[tuple[int, bytes]] = []

    def append(self, height: int, record: bytes) -> None:
        if len(record) > RECORD_BYTES_MAX:
            raise WalError(f"record of {len(record)} bytes is over {RECORD_BYTES_MAX}")
        self._records.append((height, record))

    def records(self) -> list[tuple[int, bytes]]:
        return list(self._records)

    def prune_below(self, height: int) -> None:
        self._records = [(h, r) for h, r in self._records if h >= height]


class FileWal:
    """Append-only file, fsync per append; see the module docstring for the format."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records = _read(path) if path.exists() else []
        self._rewrite(self._records)  # drops a torn tail so appends follow a whole entry
        self._file = open(path, "ab")  # noqa: SIM115 - held open for appends until close()

    def append(self, height: int, record: bytes) -> None:
        if len(record) > RECORD_BYTES_MAX:
            raise WalError(f"record of {len(record)} bytes is over {RECORD_BYTES_MAX}")
        self._file.write(_entry(height, record))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._records.append((height, record))

    def records(self) -> list[tuple[int, bytes]]:
        return list(self._records)

    def prune_below(self, height: int) -> None:
        self._file.close()
        self._records = [(h, r) for h, r in self._records if h >= height]
        self._rewrite(self._records)
        self._file = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileWal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rewrite(self, records: list[tuple[int, bytes]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            for height, record in records:
                handle.write(_entry(height, record))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


def _entry(height: int, record: bytes) -> bytes:
    return _HEAD.pack(len(record), height, zlib.crc32(record)) + record


def _read(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    records: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        entry = _parse(data, pos)
        if entry is None:
            return records  # torn tail from a crash during append
        height, record, pos = entry
        records.append((height, record))
    return records


def _parse(data: bytes, pos: int) -> tuple[int, bytes, int] | None:
    if pos + _HEAD.size > len(data):
        return None
    size, height, crc = _HEAD.unpack_from(data, pos)
    end = pos + _HEAD.size + size
    if size > RECORD_BYTES_MAX or end > len(data):
        return None
    record = data[pos + _HEAD.size:end]
    if zlib.crc32(record) != crc:
        if end < len(data):
            raise WalCorruptError(f"WAL entry at byte {pos} fails its CRC")
        return None
    return height, record, end


