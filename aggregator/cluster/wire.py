"""Node-to-node wire protocol: frames, the link handshake and peer messages (sans-I/O).

Theory of operation
-------------------
Validators talk over TCP.  Each link carries frames

    length: u32 big-endian | payload: deterministic CBOR array [kind, ...]

A link is mutually authenticated before anything else crosses it, by a challenge and
response signed with the node keys of the genesis file (ES256):

    dialer   -> HELLO      [0, version, chain_id, genesis_hash, dialer_id, nonce_d]
    listener -> CHALLENGE  [1, listener_id, nonce_l, sig_l]
    dialer   -> AUTH       [2, sig_d]

    sig_x = sign_x(CBOR ["gridledger-link", chain_id, genesis_hash, role_x, dialer_id,
                         listener_id, nonce_d, nonce_l])      role "dialer" / "listener"

Both nonces are 32 fresh random bytes, so a recorded handshake does not verify on a new
connection (a replay), and the role in the signed bytes stops a reflection of one side's
signature to the other.  The listener refuses a dialer id not in genesis before it signs
anything; the dialer checks that the listener is the validator it dialed.  After AUTH
every frame on the link is from that validator; consensus messages are signed by their
author besides (relayed votes keep their author's signature).  Links are not encrypted:
readings and blocks are public ledger data.

Peer messages after the handshake (`aggregator.consensus.engine`):

    CONSENSUS  [3, proposal or vote bytes]      TX     [4, tx bytes]
    STATUS     [5, next height]                 BLOCK  [6, block bytes, certificate bytes]

Limits
------
    FRAME_BYTES_MAX       VALUE_BYTES_MAX + 64 KiB   a proposal carries a whole block
    HANDSHAKE_BYTES_MAX   1024    frames before authentication: nothing big from strangers
    NONCE_BYTES           32

Errors
------
    RemoteProtocolError
    └── PeerError                cluster.peer
        ├── FrameError           cluster.frame         not a frame or message of this format
        │   └── FrameLimitError  cluster.frame_limit   over a size limit
        └── HandshakeError       cluster.auth          bad signature, chain or state
            └── UnknownPeerError cluster.unknown_peer  a node id not in genesis
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from aggregator.consensus.engine import BlockMsg, ConsensusMsg, PeerMessage, StatusMsg, TxMsg
from aggregator.consensus.messages import VALUE_BYTES_MAX
from edge.portable import cbor
from edge.portable.errors import DecodeError, RemoteProtocolError

__all__ = [
    "FRAME_BYTES_MAX",
    "HANDSHAKE_BYTES_MAX",
    "FrameBuffer",
    "FrameError",
    "FrameLimitError",
    "HandshakeError",
    "PeerError",
    "UnknownPeerError",
    "decode_peer_message",
    "encode_peer_message",
    "frame",
]

VERSION = 1
FRAME_BYTES_MAX = VALUE_BYTES_MAX + 64 * 1024
HANDSHAKE_BYTES_MAX = 1024
NONCE_BYTES = 32
LINK_DOMAIN = "gridledger-link"
HELLO, CHALLENGE, AUTH, CONSENSUS, TX, STATUS, BLOCK = range(7)
_LENGTH = struct.Struct(">I")

SignFn = Callable[[bytes], bytes]
VerifyFn = Callable[[bytes, bytes, bytes], bool]


class PeerError(RemoteProtocolError):
    code = "cluster.peer"


class FrameError(PeerError):
    code = "cluster.frame"


class FrameLimitError(FrameError):
    code = "cluster.frame_limit"


class HandshakeError(PeerError):
    code = "cluster.auth"


class UnknownPeerError(HandshakeError):
    code = "cluster.unknown_peer"


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


class FrameBuffer:
    """Bytes in, whole frame payloads out; FrameLimitError when a length is over `limit`
    (the link must then close: there is no way to find the next frame)."""

    def __init__(self, limit: int = FRAME_BYTES_MAX) -> None:
        self.limit = limit
        self._data = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._data += data
        out: list[bytes] = []
        while len(self._data) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._data)
            if length > self.limit:
                raise FrameLimitError(f"frame of {length} bytes > {self.limit}")
            if len(self._data) < _LENGTH.size + length:
                break
            out.append(bytes(self._data[_LENGTH.size:_LENGTH.size + length]))
            del self._data[:_LENGTH.size + length]
        return out


def _decode(payload: bytes, limit: int) -> list[object]:
    if len(payload) > limit:
        raise FrameLimitError(f"payload of {len(payload)} bytes > {limit}")
    try:
        obj = cbor.decode(payload, max_size_bytes=limit)
    except DecodeError as exc:
        raise FrameError(f"not CBOR: {exc}") from None
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], int):
        raise FrameError("a frame is [kind, ...]")
    return obj


# -- peer messages ---------------------------------------------------------------------


def encode_peer_message(message: PeerMessage) -> bytes:
    if isinstance(message, ConsensusMsg):
        return cbor.encode([CONSENSUS, message.raw])
    if isinstance(message, TxMsg):
        return cbor.encode([TX, message.tx])
    if isinstance(message, StatusMsg):
        return cbor.encode([STATUS, message.height])
    return cbor.encode([BLOCK, message.value, message.certificate])


def decode_peer_message(payload: bytes) -> PeerMessage:
    obj = _decode(payload, FRAME_BYTES_MAX)
    kind, fields = obj[0], obj[1:]
    if kind in (CONSENSUS, TX) and len(fields) == 1 and isinstance(fields[0], bytes):
        return ConsensusMsg(fields[0]) if kind == CONSENSUS else TxMsg(fields[0])
    if kind == STATUS and len(fields) == 1 and _uint(fields[0]):
        assert isinstance(fields[0], int)
        return StatusMsg(fields[0])
    if kind == BLOCK and len(fields) == 2 and all(isinstance(f, bytes) for f in fields):
        value, certificate = fields
        assert isinstance(value, bytes) and isinstance(certificate, bytes)
        return BlockMsg(value, certificate)
    raise FrameError(f"not a peer message of kind {kind}")


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


# -- the handshake ---------------------------------------------------------------------


@dataclass(frozen=True)
class LinkIdentity:
    """What both ends must share: the chain, its genesis and the validators' keys."""

    chain_id: str
    genesis_hash: bytes
    node_id: str
    sign: SignFn
    verify: VerifyFn
    keys: dict[str, bytes]  # node id -> public key, from genesis


def _transcript(me: LinkIdentity, role: str, dialer: str, listener: str,
                nonce_d: bytes, nonce_l: bytes) -> bytes:
    return cbor.encode([LINK_DOMAIN, me.chain_id, me.genesis_hash, role, dialer, listener,
                        nonce_d, nonce_l])


def hello(me: LinkIdentity, nonce_d: bytes) -> bytes:
    return cbor.encode([HELLO, VERSION, me.chain_id, me.genesis_hash, me.node_id, nonce_d])


def read_hello(me: LinkIdentity, payload: bytes) -> tuple[str, bytes]:
    """The listener's check of HELLO: (dialer id, dialer nonce)."""
    obj = _decode(payload, HANDSHAKE_BYTES_MAX)
    if len(obj) != 6 or obj[0] != HELLO or obj[1] != VERSION:
        raise HandshakeError("expected HELLO of this version")
    _, _, chain_id, genesis_hash, dialer, nonce = obj
    if chain_id != me.chain_id or genesis_hash != me.genesis_hash:
        raise HandshakeError("another chain or genesis")
    if not isinstance(dialer, str) or dialer not in me.keys or dialer == me.node_id:
        raise UnknownPeerError(f"node {str(dialer)[:64]!r} is not a validator of this chain")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise HandshakeError("nonce must be 32 bytes")
    return dialer, nonce


def challenge(me: LinkIdentity, dialer: str, nonce_d: bytes, nonce_l: bytes) -> bytes:
    sig = me.sign(_transcript(me, "listener", dialer, me.node_id, nonce_d, nonce_l))
    return cbor.encode([CHALLENGE, me.node_id, nonce_l, sig])


def read_challenge(me: LinkIdentity, payload: bytes, expected: str, nonce_d: bytes) -> bytes:
    """The dialer's check of CHALLENGE; returns the listener's nonce."""
    obj = _decode(payload, HANDSHAKE_BYTES_MAX)
    if len(obj) != 4 or obj[0] != CHALLENGE:
        raise HandshakeError("expected CHALLENGE")
    _, listener, nonce_l, sig = obj
    if listener != expected:
        raise HandshakeError(f"dialed {expected}, answered by another node")
    if not isinstance(nonce_l, bytes) or len(nonce_l) != NONCE_BYTES or \
            not isinstance(sig, bytes):
        raise HandshakeError("nonce or signature malformed")
    signed = _transcript(me, "listener", me.node_id, expected, nonce_d, nonce_l)
    if not me.verify(me.keys[expected], signed, sig):
        raise HandshakeError(f"{expected}'s signature does not verify")
    return nonce_l


def auth(me: LinkIdentity, listener: str, nonce_d: bytes, nonce_l: bytes) -> bytes:
    sig = me.sign(_transcript(me, "dialer", me.node_id, listener, nonce_d, nonce_l))
    return cbor.encode([AUTH, sig])


def read_auth(me: LinkIdentity, payload: bytes, dialer: str, nonce_d: bytes,
              nonce_l: bytes) -> None:
    obj = _decode(payload, HANDSHAKE_BYTES_MAX)
    if len(obj) != 2 or obj[0] != AUTH or not isinstance(obj[1], bytes):
        raise HandshakeError("expected AUTH")
    signed = _transcript(me, "dialer", dialer, me.node_id, nonce_d, nonce_l)
    if not me.verify(me.keys[dialer], signed, obj[1]):
        raise HandshakeError(f"{dialer}'s signature does not verify (a replay or a forgery)")
