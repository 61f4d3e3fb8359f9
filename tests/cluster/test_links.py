"""Validator links over real loopback TCP: the handshake admits genesis validators only;
forged, replayed and malformed peer input is refused, counted and logged with the peer.

The test plays node-a by hand (raw frames) against a `Links` of node-b, which as the
larger id never dials and only accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import struct
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from aggregator.cluster import wire
from aggregator.cluster.links import Links, read_frame
from aggregator.consensus.engine import BlockMsg, ConsensusMsg, PeerMessage, StatusMsg, TxMsg
from edge import crypto
from edge.portable import cbor
from tests.ports import free_port

T = TypeVar("T")
SEED = int(os.environ.get("GL_SEED", random.SystemRandom().randrange(1 << 30)))
KEYS = {n: crypto.SigningKey.from_bytes(bytes([i + 40]) * 32)  # test keys, not secrets
        for i, n in enumerate(("node-a", "node-b", "node-c"))}
PUBLIC = {n: k.public_key() for n, k in KEYS.items()}
GENESIS_HASH = bytes(range(32))


def identity(node_id: str, key: crypto.SigningKey | None = None,
             chain_id: str = "gl-links") -> wire.LinkIdentity:
    return wire.LinkIdentity(chain_id, GENESIS_HASH, node_id, (key or KEYS[node_id]).sign,
                             crypto.verify, PUBLIC)


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 20)
    return asyncio.run(bounded())


class Listener:
    def __init__(self) -> None:
        self.got: list[tuple[str, PeerMessage]] = []
        self.links = Links(identity("node-b"), ("127.0.0.1", free_port()),
                           {"node-a": ("127.0.0.1", 9), "node-c": ("127.0.0.1", 9)},
                           lambda peer, message: self.got.append((peer, message)))

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.links.port)

    async def until(self, condition: object) -> None:
        for _ in range(200):
            if condition():  # type: ignore[operator]
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not met in 2 s")


async def handshake(listener: Listener, me: wire.LinkIdentity,
                    nonce_d: bytes | None = None) -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter, bytes]:
    """Dial as `me`; return the streams and the AUTH frame sent."""
    reader, writer = await listener.connect()
    nonce_d = nonce_d or os.urandom(32)
    writer.write(wire.frame(wire.hello(me, nonce_d)))
    nonce_l = wire.read_challenge(me, await read_frame(reader, 4096), "node-b", nonce_d)
    auth = wire.frame(wire.auth(me, "node-b", nonce_d, nonce_l))
    writer.write(auth)
    await writer.drain()
    return reader, writer, auth


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 2) == b""
    except ConnectionResetError:
        return True


def test_a_validator_links_and_its_frames_arrive() -> None:
    async def scenario() -> None:
        listener = Listener()
        await listener.links.start()
        try:
            _, writer, _ = await handshake(listener, identity("node-a"))
            await listener.until(lambda: listener.links.connected() == ["node-a"])
            for message in (StatusMsg(5), TxMsg(b"tx"), ConsensusMsg(b"m"), BlockMsg(b"v", b"c")):
                writer.write(wire.frame(wire.encode_peer_message(message)))
            await listener.until(lambda: len(listener.got) == 4)
            assert listener.got[0] == ("node-a", StatusMsg(5))
            assert listener.links.refused_by_code == {}
            writer.close()
        finally:
            await listener.links.shutdown()
    run(scenario())


@pytest.mark.parametrize("case", ["stranger", "forged", "replayed", "other-chain"])
def test_bad_handshakes_are_refused_counted_and_logged(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> str:
        listener = Listener()
        await listener.links.start()
        try:
            if case == "stranger":  # a key and id not in genesis
                reader, writer = await listener.connect()
                stranger = wire.LinkIdentity("gl-links", GENESIS_HASH, "node-x",
                                             crypto.SigningKey.generate().sign, crypto.verify,
                                             PUBLIC)
                writer.write(wire.frame(wire.hello(stranger, os.urandom(32))))
            elif case == "forged":  # node-a's id, another key
                forger = identity("node-a", crypto.SigningKey.generate())
                reader, writer = await listener.connect()
                nonce_d = os.urandom(32)
                writer.write(wire.frame(wire.hello(forger, nonce_d)))
                challenge = cbor.decode(await read_frame(reader, 4096))
                assert isinstance(challenge, list)
                writer.write(wire.frame(wire.auth(forger, "node-b", nonce_d, challenge[2])))
            elif case == "replayed":  # a recorded genuine handshake sent again
                nonce_d = os.urandom(32)
                _, first, auth = await handshake(listener, identity("node-a"), nonce_d)
                await listener.until(lambda: listener.links.connected() == ["node-a"])
                first.close()
                reader, writer = await listener.connect()
                writer.write(wire.frame(wire.hello(identity("node-a"), nonce_d)))
                await read_frame(reader, 4096)  # a fresh challenge, ignored by the replayer
                writer.write(auth)
            else:
                reader, writer = await listener.connect()
                other = identity("node-a", chain_id="gl-other")
                writer.write(wire.frame(wire.hello(other, os.urandom(32))))
            assert await closed(reader)
            writer.close()
            await listener.until(lambda: listener.links.refused_by_code)
            assert "node-a" not in listener.links.connected() or case == "replayed"
            return next(iter(listener.links.refused_by_code))
        finally:
            await listener.links.shutdown()

    with caplog.at_level(logging.WARNING, logger="gridledger.cluster"):
        code = run(scenario())
    expected = "cluster.unknown_peer" if case == "stranger" else "cluster.auth"
    assert code == expected, f"GL_SEED={SEED}"
    refused = [r for r in caplog.records if r.getMessage() == "peer.refused"]
    assert refused and refused[0].fields["code"] == expected  # type: ignore[attr-defined]
    assert refused[0].fields["peer"].startswith("127.0.0.1:")  # type: ignore[attr-defined]


def test_malformed_frames_are_counted_and_an_oversized_one_closes_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(SEED)

    async def scenario() -> dict[str, int]:
        listener = Listener()
        await listener.links.start()
        try:
            reader, writer, _ = await handshake(listener, identity("node-a"))
            garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
                       for _ in range(20)]
            for payload in garbage:
                writer.write(wire.frame(payload))
            writer.write(wire.frame(cbor.encode([99, b"unknown kind"])))
            writer.write(wire.frame(wire.encode_peer_message(StatusMsg(7))))
            await listener.until(lambda: ("node-a", StatusMsg(7)) in listener.got)
            writer.write(struct.pack(">I", wire.FRAME_BYTES_MAX + 1))
            assert await closed(reader)
            writer.close()
            await listener.until(lambda: "cluster.frame_limit" in listener.links.refused_by_code)
            return dict(listener.links.refused_by_code)
        finally:
            await listener.links.shutdown()

    with caplog.at_level(logging.WARNING, logger="gridledger.cluster"):
        counted = run(scenario())
    assert counted["cluster.frame_limit"] == 1
    assert 1 <= counted.get("cluster.frame", 0) <= 21, f"GL_SEED={SEED}"
    peers = {r.fields["peer"] for r in caplog.records  # type: ignore[attr-defined]
             if r.getMessage() == "peer.refused"}
    assert peers == {"node-a"}


def test_frame_buffer_whole_byte_by_byte_and_with_trailing_bytes() -> None:
    frames = [wire.frame(wire.encode_peer_message(m))
              for m in (StatusMsg(1), TxMsg(b"x" * 300), BlockMsg(b"v", b"c"))]
    stream = b"".join(frames) + b"\x00\x00"
    whole = wire.FrameBuffer().feed(stream)
    buffer = wire.FrameBuffer()
    one_by_one = [p for i in range(len(stream)) for p in buffer.feed(stream[i:i + 1])]
    assert whole == one_by_one and len(whole) == 3
    with pytest.raises(wire.FrameLimitError):
        wire.FrameBuffer(limit=10).feed(frames[1])


def test_peer_message_decoder_parses_or_raises_its_error() -> None:
    rng = random.Random(SEED)
    valid = [wire.encode_peer_message(m) for m in (StatusMsg(3), TxMsg(b"t"),
                                                   ConsensusMsg(b"c"), BlockMsg(b"v", b"c"))]
    for _ in range(3000):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(wire.FrameError):  # anything else is a bug
            wire.decode_peer_message(bytes(data))
