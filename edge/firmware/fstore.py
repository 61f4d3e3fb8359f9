"""The queue on flash: append-only segment files, written with wear in mind.

    q/<n>.seg   records: magic 0xA5, length (u16), seq (u32), crc32 (u32), message
    q/acks      one u32 per settled seq (append-only)
    q/meta      "last_seq last_confirmed", rewritten only when a segment is removed

Flash is only ever appended to, except the tiny meta file once per segment.  A segment
closes at SEGMENT_BYTES and is deleted when all its batches are settled; the acks file
starts afresh when no segment is left.  On boot the segments and acks are scanned; a
record cut short by a reset (bad length or CRC) ends its segment and is ignored: its
seq was never sent, so it is free again (the seq rule of edge/portable/agent.py).

Limits: SEGMENT_BYTES 16 KiB (one flash erase block is 4 KiB; 4 blocks per file keeps
the file count low); messages up to 65535 bytes.
"""

import binascii
import os
import struct

from portable.errors import LocalProtocolError

MAGIC = 0xA5
HEADER = "<BHII"
HEADER_BYTES = 11
SEGMENT_BYTES = 16384


def _exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class FlashStore:
    def __init__(self, root: str) -> None:
        self.dir = root.rstrip("/") + "/q"
        if not _exists(self.dir):
            os.mkdir(self.dir)
        self.index: dict[int, tuple[int, int, int]] = {}  # seq -> (segment, offset, length)
        self.live: dict[int, int] = {}  # segment -> records not yet settled
        self._last_seq = 0
        self._confirmed = 0
        self._read_meta()
        self.segment = 0
        self.segment_bytes = 0
        self._scan()

    def _path(self, name: str) -> str:
        return self.dir + "/" + name

    def _read_meta(self) -> None:
        if _exists(self._path("meta")):
            with open(self._path("meta")) as handle:
                parts = handle.read().split()
            self._last_seq, self._confirmed = int(parts[0]), int(parts[1])

    def _scan(self) -> None:
        segments = sorted(int(n[:-4]) for n in os.listdir(self.dir) if n.endswith(".seg"))
        for segment in segments:
            self._scan_segment(segment)
        if _exists(self._path("acks")):
            with open(self._path("acks"), "rb") as handle:
                data = handle.read()
            for i in range(0, len(data) - 3, 4):
                self._settle(struct.unpack("<I", data[i:i + 4])[0])
        self.segment = (segments[-1] + 1) if segments else 0

    def _scan_segment(self, segment: int) -> None:
        with open(self._path(str(segment) + ".seg"), "rb") as handle:
            data = handle.read()
        offset = 0
        while offset + HEADER_BYTES <= len(data):
            magic, length, seq, crc = struct.unpack(HEADER, data[offset:offset + HEADER_BYTES])
            body = data[offset + HEADER_BYTES:offset + HEADER_BYTES + length]
            if magic != MAGIC or len(body) != length or binascii.crc32(body) != crc:
                break  # cut short by a reset: the rest of this segment is void
            self.index[seq] = (segment, offset + HEADER_BYTES, length)
            self.live[segment] = self.live.get(segment, 0) + 1
            self._last_seq = max(self._last_seq, seq)
            offset += HEADER_BYTES + length

    def last_seq(self) -> int:
        return self._last_seq

    def append(self, seq: int, message: bytes, made_at_s: int) -> None:
        if seq <= self._last_seq:
            raise LocalProtocolError("seq " + str(seq) + " was already used")
        if self.segment_bytes >= SEGMENT_BYTES:
            self.segment += 1
            self.segment_bytes = 0
        header = struct.pack(HEADER, MAGIC, len(message), seq, binascii.crc32(message))
        with open(self._path(str(self.segment) + ".seg"), "ab") as handle:
            handle.write(header + message)
        self.index[seq] = (self.segment, self.segment_bytes + HEADER_BYTES, len(message))
        self.live[self.segment] = self.live.get(self.segment, 0) + 1
        self.segment_bytes += HEADER_BYTES + len(message)
        self._last_seq = seq

    def _settle(self, seq: int) -> bool:
        where = self.index.pop(seq, None)
        if where is None:
            return False
        self.live[where[0]] -= 1
        return True

    def delete(self, seq: int) -> bool:
        if not self._settle(seq):
            return False
        with open(self._path("acks"), "ab") as handle:
            handle.write(struct.pack("<I", seq))
        self._collect()
        return True

    def _collect(self) -> None:
        """Remove segments whose batches are all settled (never the one being written);
        once everything is settled and the current segment is full, start afresh."""
        done = [s for s, n in self.live.items() if n == 0 and s != self.segment]
        fresh = not self.index and self.segment_bytes >= SEGMENT_BYTES
        if not done and not fresh:
            return
        self._write_meta()  # last_seq must outlive the segments that proved it
        for segment in done:
            os.remove(self._path(str(segment) + ".seg"))
            del self.live[segment]
        if fresh:
            for name in ("acks", str(self.segment) + ".seg"):
                if _exists(self._path(name)):
                    os.remove(self._path(name))
            self.live.pop(self.segment, None)
            self.segment += 1
            self.segment_bytes = 0

    def _write_meta(self) -> None:
        with open(self._path("meta.tmp"), "w") as handle:
            handle.write(str(self._last_seq) + " " + str(self._confirmed))
        os.rename(self._path("meta.tmp"), self._path("meta"))

    def get(self, seq: int) -> "bytes | None":
        where = self.index.get(seq)
        if where is None:
            return None
        with open(self._path(str(where[0]) + ".seg"), "rb") as handle:
            handle.seek(where[1])
            data: bytes = handle.read(where[2])
        return data

    def oldest(self, count: int, after_seq: int) -> list[int]:
        return sorted(seq for seq in self.index if seq > after_seq)[:count]

    def depth(self) -> int:
        return len(self.index)

    def last_confirmed(self) -> int:
        return self._confirmed

    def set_confirmed(self, seq: int) -> None:
        self._confirmed = seq  # in RAM; flash gets it with the next meta write
