"""Authenticated TCP links between validators: dial, accept, handshake, bounded queues.

Theory of operation
-------------------
`Links` keeps one TCP connection per pair of validators: the node with the smaller node
id dials (with jittered back-off, 0.1 s doubling to 2 s), the other accepts.  Peer
addresses and keys come from genesis; the handshake (`wire`) authenticates both ends
before a frame of any other kind is read, so a stranger, another chain or a replayed
handshake is refused, counted by code and logged with the address or peer id.  A link
that comes up replaces an older one to the same peer (the peer restarted).

Outgoing frames wait in a bounded queue per peer, drained by one writer task; when the
queue is full the frame is dropped and counted (`queue_full`): consensus messages are
re-sent by gossip and transactions re-gossiped by the devices' retries, so dropping is
safe where blocking the event loop is not.  Incoming frames are decoded and handed to
`on_message(peer_id, message)` in order; a malformed frame is counted and skipped, a
frame over the size limit closes the link (no way to find the next one).  Nothing a peer
sends ends the process.

Limits
------
    QUEUE_FRAMES_MAX   1024     frames waiting per peer (a few heights of votes and txs)
    QUEUE_BYTES_MAX    64 MiB   bytes waiting per peer (two maximal proposals)
    HANDSHAKE_S        5        a peer that does not finish the handshake is dropped
    DIAL_BACKOFF_S     0.1..2   between attempts to reach a peer
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import struct
from collections import deque
from collections.abc import Callable

from aggregator.consensus.engine import PeerMessage

from . import wire

QUEUE_FRAMES_MAX = 1024
QUEUE_BYTES_MAX = 64 * 1024 * 1024
HANDSHAKE_S = 5.0
DIAL_BACKOFF_S_MIN = 0.1
DIAL_BACKOFF_S_MAX = 2.0
CODE_QUEUE_FULL = "cluster.queue_full"
CODE_NODE = "cluster.node"

log = logging.getLogger("gridledger.cluster")
_LENGTH = struct.Struct(">I")

OnMessage = Callable[[str, PeerMessage], None]


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > limit:
        raise wire.FrameLimitError(f"frame of {length} bytes > {limit}")
    return await reader.readexactly(length)


class _Link:
    def __init__(self, peer_id: str, writer: asyncio.StreamWriter) -> None:
        self.peer_id = peer_id
        self.writer = writer
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.ready = asyncio.Event()

    def enqueue(self, data: bytes) -> bool:
        if len(self.queue) >= QUEUE_FRAMES_MAX or \
                self.queued_bytes + len(data) > QUEUE_BYTES_MAX:
            return False
        self.queue.append(data)
        self.queued_bytes += len(data)
        self.ready.set()
        return True

    async def pump(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while self.queue:
                data = self.queue.popleft()
                self.queued_bytes -= len(data)
                self.writer.write(data)
                await self.writer.drain()


class Links:
    def __init__(
        self,
        me: wire.LinkIdentity,
        listen: tuple[str, int],
        peers: dict[str, tuple[str, int]],
        on_message: OnMessage,
        rng: random.Random | None = None,
    ) -> None:
        self.me = me
        self.listen = listen
        self.peers = peers
        self.on_message = on_message
        self.rng = rng or random.Random()
        self.refused_by_code: dict[str, int] = {}
        self.frames_in = 0
        self.frames_out = 0
        self._links: dict[str, _Link] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- service ------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.port = int(self._server.sockets[0].getsockname()[1])
        for peer_id in sorted(self.peers):
            if self.me.node_id < peer_id:
                self._spawn(self._dial_loop(peer_id))
        log.info("links.listening", extra={"fields": {"node": self.me.node_id,
                                                      "port": self.port}})

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links.values()):
            link.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending ------------------------------------------------------------------------

    def send(self, to: str | None, message: PeerMessage) -> None:
        data = wire.frame(wire.encode_peer_message(message))
        targets = list(self._links.values()) if to is None else \
            [link for link in (self._links.get(to),) if link is not None]
        for link in targets:
            if link.enqueue(data):
                self.frames_out += 1
            else:
                self._count(CODE_QUEUE_FULL)

    def connected(self) -> list[str]:
        return sorted(self._links)

    def status(self) -> dict[str, object]:
        return {
            "connected": self.connected(),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "refused_by_code": dict(sorted(self.refused_by_code.items())),
        }

    # -- refusals -----------------------------------------------------------------------

    def _count(self, code: str) -> None:
        self.refused_by_code[code] = self.refused_by_code.get(code, 0) + 1

    def refuse(self, peer: str, code: str, detail: str = "", count: bool = True) -> None:
        if count:
            self._count(code)
        log.warning("peer.refused", extra={"fields": {"node": self.me.node_id, "peer": peer,
                                                      "code": code, "detail": detail[:200]}})

    # -- dialing ------------------------------------------------------------------------

    async def _dial_loop(self, peer_id: str) -> None:
        host, port = self.peers[peer_id]
        backoff_s = DIAL_BACKOFF_S_MIN
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(HANDSHAKE_S):
                    reader, writer = await asyncio.open_connection(host, port)
                    await self._dial_handshake(peer_id, reader, writer)
                backoff_s = DIAL_BACKOFF_S_MIN
                await self._run(peer_id, reader, writer)
            except wire.PeerError as exc:
                self.refuse(peer_id, exc.code, str(exc))
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(backoff_s * (1 + self.rng.random()))
            backoff_s = min(backoff_s * 2, DIAL_BACKOFF_S_MAX)

    async def _dial_handshake(self, peer_id: str, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        nonce_d = os.urandom(wire.NONCE_BYTES)
        writer.write(wire.frame(wire.hello(self.me, nonce_d)))
        payload = await read_frame(reader, wire.HANDSHAKE_BYTES_MAX)
        nonce_l = wire.read_challenge(self.me, payload, peer_id, nonce_d)
        writer.write(wire.frame(wire.auth(self.me, peer_id, nonce_d, nonce_l)))
        await writer.drain()

    # -- accepting ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        try:
            async with asyncio.timeout(HANDSHAKE_S):
                dialer = await self._accept_handshake(reader, writer)
        except wire.PeerError as exc:
            self.refuse(address, exc.code, str(exc))
            writer.close()
            return
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            writer.close()
            return
        try:
            await self._run(dialer, reader, writer)
        except wire.PeerError as exc:
            self.refuse(dialer, exc.code, str(exc))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _accept_handshake(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> str:
        dialer, nonce_d = wire.read_hello(self.me, await read_frame(
            reader, wire.HANDSHAKE_BYTES_MAX))
        nonce_l = os.urandom(wire.NONCE_BYTES)
        writer.write(wire.frame(wire.challenge(self.me, dialer, nonce_d, nonce_l)))
        await writer.drain()
        payload = await read_frame(reader, wire.HANDSHAKE_BYTES_MAX)
        wire.read_auth(self.me, payload, dialer, nonce_d, nonce_l)
        return dialer

    # -- a live link --------------------------------------------------------------------

    async def _run(self, peer_id: str, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        link = _Link(peer_id, writer)
        old = self._links.get(peer_id)
        if old is not None:
            old.writer.close()
        self._links[peer_id] = link
        pump = asyncio.get_running_loop().create_task(link.pump())
        log.info("peer.up", extra={"fields": {"node": self.me.node_id, "peer": peer_id}})
        try:
            while not pump.done():
                payload = await read_frame(reader, wire.FRAME_BYTES_MAX)
                self.frames_in += 1
                self._deliver(peer_id, payload)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if self._links.get(peer_id) is link:
                del self._links[peer_id]
                log.info("peer.down", extra={"fields": {"node": self.me.node_id,
                                                        "peer": peer_id}})

    def _deliver(self, peer_id: str, payload: bytes) -> None:
        try:
            message = wire.decode_peer_message(payload)
        except wire.FrameError as exc:
            self.refuse(peer_id, exc.code, str(exc))
            return
        try:
            self.on_message(peer_id, message)
        except Exception:  # a bug in the node, not the peer's fault: keep the link
            self._count(CODE_NODE)
            log.exception("peer.message_failed", extra={"fields": {"peer": peer_id}})
