"""Heads of the other validators, for GET /v1/chain: each one's height and last block hash.

Theory of operation
-------------------
A node knows its own head; the others' it asks for.  `PeerHeads` keeps one entry per
validator of the genesis (except this node) with what that validator's `GET /v1/status`
(its HTTP address in the genesis file) last said, and when.  `heads(now_s)` answers from
the entries younger than FRESH_S and refreshes the others concurrently, each with a
deadline of FETCH_S, so /v1/chain costs at most one round of small requests every
FRESH_S whatever the number of callers.  A validator that does not answer in time, or
answers with something that is not a status, is shown with `reachable: false` and the
last head it gave, if any.

`parse_status(raw)` is the pure part: an HTTP/1.0 answer's bytes in, (height, last block
hash) out, or None for anything else.  `fetch_status` is the only I/O: an asyncio
connection, one request, at most RESPONSE_BYTES_MAX read.

Limits
------
    FRESH_S              2 s      a head is reused this long (blocks are cut every 0.2 s
                                  or more; a status page needs no fresher answer).
    FETCH_S              1 s      per validator; a slow peer never holds /v1/chain longer.
    RESPONSE_BYTES_MAX   64 KiB   a status is about 1 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

FRESH_S = 2.0
FETCH_S = 1.0
RESPONSE_BYTES_MAX = 64 * 1024
HASH_HEX_CHARS = 64


@dataclass(frozen=True)
class Head:
    height: int
    block_hash: str
    seen_s: float


def parse_status(raw: bytes) -> tuple[int, str] | None:
    """(height, last block hash) from a `GET /v1/status` answer; None if it is not one."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        return None
    try:
        status = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(status, dict):
        return None
    height, block_hash = status.get("height"), status.get("last_block_hash", "")
    if not isinstance(height, int) or isinstance(height, bool) or height < 0:
        return None
    if not isinstance(block_hash, str) or len(block_hash) > HASH_HEX_CHARS:
        return None
    return height, block_hash


def split_address(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


async def fetch_status(address: str) -> tuple[int, str] | None:
    """One validator's head over HTTP/1.0, or None (unreachable, late or malformed)."""
    where = split_address(address)
    if where is None:
        return None
    writer = None
    try:
        async with asyncio.timeout(FETCH_S):
            reader, writer = await asyncio.open_connection(*where)
            writer.write(f"GET /v1/status HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read(RESPONSE_BYTES_MAX)
            while raw and len(raw) < RESPONSE_BYTES_MAX:
                more = await reader.read(RESPONSE_BYTES_MAX - len(raw))
                if not more:
                    break
                raw += more
    except (OSError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return parse_status(raw)


class PeerHeads:
    """The other validators' heads, refreshed at most every FRESH_S."""

    def __init__(self, peers: Sequence[tuple[str, str]]) -> None:
        self._peers = dict(peers)            # node id -> HTTP address (genesis)
        self._heads: dict[str, Head] = {}
        self._reachable: dict[str, bool] = {}
        self._checked_s: dict[str, float] = {}

    async def heads(self, now_s: float) -> dict[str, tuple[Head | None, bool]]:
        stale = [n for n in self._peers if now_s - self._checked_s.get(n, -FRESH_S) >= FRESH_S]
        answers = await asyncio.gather(*(fetch_status(self._peers[n]) for n in stale))
        for node_id, answer in zip(stale, answers, strict=True):
            self._checked_s[node_id] = now_s
            self._reachable[node_id] = answer is not None
            if answer is not None:
                self._heads[node_id] = Head(answer[0], answer[1], now_s)
        return {n: (self._heads.get(n), self._reachable.get(n, False)) for n in self._peers}
