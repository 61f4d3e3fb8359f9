"""Signed consensus messages: proposals and votes, their signing bytes and wire codec.

Every message is signed by its sender's node key (ES256, genesis) over the deterministic
CBOR (RFC 8949 §4.2.1) of

    ["gridledger-consensus", chain_id, height, round, type, value_id, valid_round]

where type is 0 proposal, 1 prevote, 2 precommit; value_id is the value's identity
(null for a nil vote) and valid_round is the proposal's validRound (-1 for votes).  The
round is signed because a correct node may precommit different values at one height in
different rounds (after unlocking): a signature without the round could be counted
towards a commit of a round in which its signer voted otherwise.

A value's identity is SHA-256 of its bytes (`value_id`) unless the application injects
another `IdentifyFn` (the ledger identifies a block by its header hash, so that a
receipt can check a commit from the header alone).  An injected identity must be
collision resistant over the values it may be given: two different values with one id
would be one value to the core.  A proposal's `vid` holds the id it was identified with;
empty means SHA-256.

Wire form (deterministic CBOR arrays):

    proposal  [0, height, round, value: bstr, valid_round, node_id, signature]
    vote      [type, height, round, value_id / null, node_id, signature]

Errors
------
    RemoteProtocolError
    └── ConsensusMessageError      consensus.message     not a message of this format
        └── MessageLimitError      consensus.limit       over a limit below

Limits
------
    VALUE_BYTES_MAX   33 MiB   a block (aggregator.block.BLOCK_BYTES_MAX, 32 MiB) plus its
                               header and commit; the value is opaque here.
    VOTE_BYTES_MAX    512      a vote is ~170 bytes with a 64-character node id.
    ROUND_MAX         2**31-1  rounds grow by one per failed round; far above any reachable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from edge.portable import cbor
from edge.portable.errors import DecodeError, RemoteProtocolError

__all__ = [
    "PRECOMMIT",
    "PREVOTE",
    "PROPOSAL",
    "ConsensusMessageError",
    "IdentifyFn",
    "Message",
    "MessageLimitError",
    "Proposal",
    "SignFn",
    "VerifyFn",
    "Vote",
    "decode_message",
    "encode_message",
    "sign_bytes",
    "sign_proposal",
    "sign_vote",
    "value_id",
]

PROPOSAL, PREVOTE, PRECOMMIT = 0, 1, 2
DOMAIN = "gridledger-consensus"
VALUE_BYTES_MAX = 33 * 1024 * 1024
VOTE_BYTES_MAX = 512
ROUND_MAX = 2**31 - 1
HEIGHT_MAX = 2**63 - 1
ID_BYTES = 32
NODE_ID_CHARS_MAX = 64
SIGNATURE_BYTES = 64

SignFn = Callable[[bytes], bytes]
VerifyFn = Callable[[bytes, bytes, bytes], bool]
IdentifyFn = Callable[[bytes], bytes]


class ConsensusMessageError(RemoteProtocolError):
    code = "consensus.message"


class MessageLimitError(ConsensusMessageError):
    code = "consensus.limit"


def value_id(value: bytes) -> bytes:
    """The identity of a value (a block): SHA-256 of its bytes."""
    return hashlib.sha256(value).digest()


def sign_bytes(
    chain_id: str, height: int, round_: int, type_: int, vid: bytes | None, valid_round: int
) -> bytes:
    return cbor.encode([DOMAIN, chain_id, height, round_, type_, vid, valid_round])


@dataclass(frozen=True)
class Proposal:
    height: int
    round: int
    value: bytes
    valid_round: int
    node_id: str
    signature: bytes
    vid: bytes = field(default=b"", compare=False)  # the identity's id; b"": SHA-256

    @property
    def value_id(self) -> bytes:
        return self.vid or value_id(self.value)

    def signed_bytes(self, chain_id: str) -> bytes:
        return sign_bytes(
            chain_id, self.height, self.round, PROPOSAL, self.value_id, self.valid_round
        )


@dataclass(frozen=True)
class Vote:
    type: int
    height: int
    round: int
    value_id: bytes | None
    node_id: str
    signature: bytes

    def signed_bytes(self, chain_id: str) -> bytes:
        return sign_bytes(chain_id, self.height, self.round, self.type, self.value_id, -1)


Message = Proposal | Vote


def sign_proposal(
    chain_id: str, height: int, round_: int, value: bytes, valid_round: int,
    node_id: str, sign: SignFn, identify: IdentifyFn = value_id,
) -> Proposal:
    unsigned = Proposal(height, round_, value, valid_round, node_id, b"", identify(value))
    signature = sign(unsigned.signed_bytes(chain_id))
    return replace(unsigned, signature=signature)


def sign_vote(
    chain_id: str, type_: int, height: int, round_: int, vid: bytes | None,
    node_id: str, sign: SignFn,
) -> Vote:
    signature = sign(sign_bytes(chain_id, height, round_, type_, vid, -1))
    return Vote(type_, height, round_, vid, node_id, signature)


# -- codec -----------------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    if isinstance(message, Proposal):
        m = message
        return cbor.encode(
            [PROPOSAL, m.height, m.round, m.value, m.valid_round, m.node_id, m.signature]
        )
    v = message
    return cbor.encode([v.type, v.height, v.round, v.value_id, v.node_id, v.signature])


def decode_message(raw: bytes) -> Message:
    """Parse a proposal or vote; ConsensusMessageError for anything else."""
    if len(raw) > VALUE_BYTES_MAX + VOTE_BYTES_MAX:
        raise MessageLimitError(f"message of {len(raw)} bytes is over the limit")
    try:
        obj = cbor.decode(raw, max_size_bytes=VALUE_BYTES_MAX + VOTE_BYTES_MAX)
    except DecodeError as exc:
        raise ConsensusMessageError(f"not CBOR: {exc}") from None
    if not isinstance(obj, list) or not obj:
        raise ConsensusMessageError("not a consensus message")
    if _int(obj[0], PROPOSAL, PRECOMMIT, "type") == PROPOSAL:
        return _proposal(obj)
    if len(raw) > VOTE_BYTES_MAX:
        raise MessageLimitError(f"vote of {len(raw)} bytes is over {VOTE_BYTES_MAX}")
    return _vote(obj)


def _proposal(obj: list[object]) -> Proposal:
    if len(obj) != 7:
        raise ConsensusMessageError("a proposal has 7 fields")
    _, height, round_, value, valid_round, node_id, signature = obj
    if not isinstance(value, bytes) or len(value) > VALUE_BYTES_MAX:
        raise ConsensusMessageError("proposal value must be bytes within the limit")
    r = _int(round_, 0, ROUND_MAX, "round")
    vr = _int(valid_round, -1, r - 1, "valid_round")
    return Proposal(_int(height, 1, HEIGHT_MAX, "height"), r, value, vr,
                    _node(node_id), _signature(signature))


def _vote(obj: list[object]) -> Vote:
    if len(obj) != 6:
        raise ConsensusMessageError("a vote has 6 fields")
    type_, height, round_, vid, node_id, signature = obj
    if vid is not None and (not isinstance(vid, bytes) or len(vid) != ID_BYTES):
        raise ConsensusMessageError("value id must be 32 bytes or null")
    return Vote(_int(type_, PREVOTE, PRECOMMIT, "type"), _int(height, 1, HEIGHT_MAX, "height"),
                _int(round_, 0, ROUND_MAX, "round"), vid, _node(node_id), _signature(signature))


def _int(value: object, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConsensusMessageError(f"{what} must be an integer in {low}..{high}")
    return value


def _node(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= NODE_ID_CHARS_MAX:
        raise ConsensusMessageError("node id must be 1..64 characters")
    return value


def _signature(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != SIGNATURE_BYTES:
        raise ConsensusMessageError("signature must be 64 bytes")
    return value
