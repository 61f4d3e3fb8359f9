"""Blocks: header, transactions and the commit of the previous block (DESIGN.md "Ledger").

Theory of operation
-------------------
A block is the deterministic CBOR array (RFC 8949 §4.2.1)

    [header: bstr, txs: [bstr, ...], last_commit: Commit / null]

and its hash is SHA-256 over the header bytes.  The header is itself the deterministic
CBOR map

    0 version      uint   1 or 2 (below)
    1 chain_id     text   from the genesis file
    2 height       uint   1 for the first block
    3 time_s       uint   Unix seconds, never below the previous block's time
    4 prev_hash    bstr   hash of block height-1; for height 1 the genesis hash
    5 txs_root     bstr   RFC 9162 Merkle tree hash over the transaction bytes, in order
    6 log_root     bstr   readings-log root after this block's readings
    7 log_size     uint   readings-log size after this block
    8 state_root   bstr   application state root after this block (`app.state_root`)
    9 violations   uint   violation records this block produced
    10 proposer    text   node id of the validator that proposed it
    11 last_commit_hash  bstr  version 2 only: `commit_hash(last_commit)`, SHA-256 of the
                          deterministic CBOR of the block's last commit (of `null` at
                          height 1)

so a header alone fixes everything its block did: the roots are post-execution (the
proposer executes before it proposes, and every validator re-executes in
process_proposal and compares).  Embedding the header as bytes means the hash is over
exactly what was stored or received, never over a re-encoding.

Versions.  A version 2 header also fixes the commit its block carries, so its hash
covers the whole block: txs through txs_root, the last commit through
last_commit_hash.  The BFT engine writes version 2, because its validators sign the
block hash (below).  The solo engine writes version 1: its commit signs the header hash
directly and nothing else needs binding.  Both versions decode, so stored chains of
either kind read and verify unchanged.

A commit is [height, block_hash, [[node id, signature], ...]]: ES256 signatures by
validator node keys (genesis) over the deterministic CBOR of
["gridledger-commit", chain_id, height, block_hash].  Block h carries the commit of block
h-1; the commit of the newest block is kept beside it until the next block carries it.
With the solo engine the single validator's signature is the commit.

A BFT commit (the Tendermint engine, docs/consensus.md) is a commit certificate:

    [height, block_hash, [[node id, signature], ...], round, value_id]

where each signature is the validator's precommit of `value_id` in `round`
(`aggregator.consensus.messages.sign_bytes`, type 2, valid_round -1) and value_id is the
consensus value id of the block (`value_id`): for a version 2 block its hash, so a
header and its commit prove the block without its transactions; for a version 1 block
(chains written before version 2) SHA-256 of the whole encoded block.  The round is
signed because a correct validator may precommit different values at one height in
different rounds.  The three-element form stays what it was, so solo ledgers read and
verify unchanged.

`value_id` is injective over the values it accepts: a version 2 block whose body does
not match its header (txs_root, last_commit_hash) or that is not in its deterministic
encoding gets an id of its own bytes under another domain, which no header hashes to,
and the BFT engine refuses it as a proposal.

Limits
------
    BLOCK_TXS_MAX      16384      above any genesis max_txs we accept; bounds the decoder.
    BLOCK_BYTES_MAX    32 MiB     8 × the default genesis max_bytes (4 MiB) of payload.
    HEADER_BYTES_MAX   1024       the header is ~300 bytes with 64-character ids.
    SIGNATURES_MAX     64         one per validator (genesis.MAX_VALIDATORS).

Errors
------
    RemoteProtocolError
    └── BlockError              block.invalid
        ├── BlockFormatError    block.format   not a block or header of this format
        ├── BlockLimitError     block.limit    over a limit above
        └── CommitError         block.commit   signatures missing, unknown or invalid
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from edge.portable import cbor
from edge.portable.batch import valid_id
from edge.portable.errors import DecodeError, RemoteProtocolError

from .consensus.messages import PRECOMMIT
from .consensus.messages import sign_bytes as consensus_sign_bytes
from .merkle import MerkleLog

__all__ = [
    "BLOCK_BYTES_MAX",
    "BLOCK_TXS_MAX",
    "HEADER_BYTES_MAX",
    "SIGNATURES_MAX",
    "VERSION",
    "VERSION_1",
    "Block",
    "BlockError",
    "BlockFormatError",
    "BlockLimitError",
    "Commit",
    "CommitError",
    "Header",
    "check_body",
    "commit_hash",
    "commit_sign_bytes",
    "decode_block",
    "decode_commit",
    "decode_header",
    "sign_commit",
    "txs_root",
    "value_id",
    "verify_commit",
]

VERSION = 2          # the newest header version; what the BFT engine writes
VERSION_1 = 1        # no last_commit_hash; what the solo engine writes
BLOCK_TXS_MAX = 16384
BLOCK_BYTES_MAX = 32 * 1024 * 1024
HEADER_BYTES_MAX = 1024
SIGNATURES_MAX = 64
HASH_BYTES = 32
COMMIT_DOMAIN = "gridledger-commit"

H_VERSION, H_CHAIN, H_HEIGHT, H_TIME, H_PREV, H_TXS = 0, 1, 2, 3, 4, 5
H_LOG_ROOT, H_LOG_SIZE, H_STATE, H_VIOLATIONS, H_PROPOSER = 6, 7, 8, 9, 10
H_LAST_COMMIT = 11
HEADER_KEYS = {VERSION_1: frozenset(range(11)), VERSION: frozenset(range(12))}
OPAQUE_DOMAIN = b"gridledger-opaque-value\x00"  # ids of values that are no proper block

SignFn = Callable[[bytes], bytes]
VerifyFn = Callable[[bytes, bytes, bytes], bool]


class BlockError(RemoteProtocolError):
    code = "block.invalid"


class BlockFormatError(BlockError):
    code = "block.format"


class BlockLimitError(BlockError):
    code = "block.limit"


class CommitError(BlockError):
    code = "block.commit"


@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    time_s: int
    prev_hash: bytes
    txs_root: bytes
    log_root: bytes
    log_size: int
    state_root: bytes
    violations: int
    proposer: str
    version: int = VERSION_1
    last_commit_hash: bytes = b""  # version 2 only

    def bound_to(self, last_commit: Commit | None) -> Header:
        """This header as version 2, fixing `last_commit` too."""
        return replace(self, version=VERSION, last_commit_hash=commit_hash(last_commit))

    def encode(self) -> bytes:
        fields = self._fields()
        if self.version >= VERSION:
            fields[H_LAST_COMMIT] = self.last_commit_hash
        return cbor.encode(fields)

    def _fields(self) -> dict[int, object]:
        return {
            H_VERSION: self.version,
            H_CHAIN: self.chain_id,
            H_HEIGHT: self.height,
            H_TIME: self.time_s,
            H_PREV: self.prev_hash,
            H_TXS: self.txs_root,
            H_LOG_ROOT: self.log_root,
            H_LOG_SIZE: self.log_size,
            H_STATE: self.state_root,
            H_VIOLATIONS: self.violations,
            H_PROPOSER: self.proposer,
        }

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    def to_json(self) -> dict[str, object]:
        """The header for people and HTTP: hashes in hex, field names as in the table."""
        shown = self._json_v1()
        if self.version >= VERSION:
            shown["last_commit_hash"] = self.last_commit_hash.hex()
        return shown

    def _json_v1(self) -> dict[str, object]:
        return {
            "version": self.version,
            "chain_id": self.chain_id,
            "height": self.height,
            "time_s": self.time_s,
            "prev_hash": self.prev_hash.hex(),
            "txs_root": self.txs_root.hex(),
            "log_root": self.log_root.hex(),
            "log_size": self.log_size,
            "state_root": self.state_root.hex(),
            "violations": self.violations,
            "proposer": self.proposer,
        }


@dataclass(frozen=True)
class Commit:
    """Signatures of validators over one block hash."""

    height: int
    block_hash: bytes
    signatures: tuple[tuple[str, bytes], ...]
    round: int | None = None     # set for a BFT commit certificate
    value_id: bytes = b""        # BFT: the block's value id (`value_id`) the validators signed

    def to_obj(self) -> list[object]:
        obj: list[object] = [self.height, self.block_hash, [[n, s] for n, s in self.signatures]]
        if self.round is not None:
            obj.extend([self.round, self.value_id])
        return obj

    def encode(self) -> bytes:
        return cbor.encode(self.to_obj())

    def to_json(self) -> dict[str, object]:
        signatures = [{"node_id": n, "signature": s.hex()} for n, s in self.signatures]
        shown: dict[str, object] = {"height": self.height, "block_hash": self.block_hash.hex(),
                                    "signatures": signatures}
        if self.round is not None:
            shown.update(round=self.round, value_id=self.value_id.hex())
        return shown


@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[bytes, ...]
    last_commit: Commit | None
    header_bytes: bytes = b""

    @property
    def height(self) -> int:
        return self.header.height

    def hash(self) -> bytes:
        return hashlib.sha256(self.raw_header()).digest()

    def raw_header(self) -> bytes:
        return self.header_bytes or self.header.encode()

    def encode(self) -> bytes:
        commit = None if self.last_commit is None else self.last_commit.to_obj()
        return cbor.encode([self.raw_header(), list(self.txs), commit])

    def to_json(self) -> dict[str, object]:
        """What GET /v1/blocks/{height} shows: hash, header, tx hashes and sizes, commit."""
        return {
            "hash": self.hash().hex(),
            "header": self.header.to_json(),
            "txs": [{"hash": hashlib.sha256(t).hexdigest(), "bytes": len(t)} for t in self.txs],
            "last_commit": None if self.last_commit is None else self.last_commit.to_json(),
        }


def txs_root(txs: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash over the transaction bytes (empty tree for no txs)."""
    log = MerkleLog()
    log.extend(txs)
    return log.root()


# -- decoding --------------------------------------------------------------------------


def _uint(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BlockFormatError(f"{what} must be an unsigned integer")
    return value


def _hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_BYTES:
        raise BlockFormatError(f"{what} must be a {HASH_BYTES}-byte hash")
    return value


def _text_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not valid_id(value):
        raise BlockFormatError(f"{what} must be an id")
    return value


def decode_header(raw: bytes) -> Header:
    if len(raw) > HEADER_BYTES_MAX:
        raise BlockLimitError(f"header of {len(raw)} bytes > {HEADER_BYTES_MAX}")
    try:
        obj = cbor.decode(raw, max_depth=1, max_items=len(HEADER_KEYS[VERSION]))
    except DecodeError as exc:
        raise BlockFormatError(f"header: {exc}") from None
    if not isinstance(obj, dict):
        raise BlockFormatError("header must be a map")
    version = obj.get(H_VERSION)
    if version not in HEADER_KEYS or isinstance(version, bool):
        raise BlockFormatError(f"block version must be {VERSION_1} or {VERSION}")
    if set(obj) != HEADER_KEYS[version]:
        raise BlockFormatError(f"a version {version} header is a map with keys "
                               f"0..{len(HEADER_KEYS[version]) - 1}")
    return Header(
        chain_id=_text_id(obj[H_CHAIN], "chain id"),
        height=_uint(obj[H_HEIGHT], "height"),
        time_s=_uint(obj[H_TIME], "time"),
        prev_hash=_hash(obj[H_PREV], "prev_hash"),
        txs_root=_hash(obj[H_TXS], "txs_root"),
        log_root=_hash(obj[H_LOG_ROOT], "log_root"),
        log_size=_uint(obj[H_LOG_SIZE], "log_size"),
        state_root=_hash(obj[H_STATE], "state_root"),
        violations=_uint(obj[H_VIOLATIONS], "violations"),
        proposer=_text_id(obj[H_PROPOSER], "proposer"),
        version=version,
        last_commit_hash=(_hash(obj[H_LAST_COMMIT], "last_commit_hash")
                          if version >= VERSION else b""),
    )


def decode_commit(obj: object) -> Commit:
    if not isinstance(obj, list) or len(obj) not in (3, 5) or not isinstance(obj[2], list):
        raise BlockFormatError("commit must be [height, block hash, signatures(, round, "
                               "value id)]")
    if len(obj[2]) > SIGNATURES_MAX:
        raise BlockLimitError(f"more than {SIGNATURES_MAX} commit signatures")
    signatures = []
    for row in obj[2]:
        if not isinstance(row, list) or len(row) != 2 or not isinstance(row[1], bytes):
            raise BlockFormatError("commit signature must be [node id, signature]")
        signatures.append((_text_id(row[0], "node id"), row[1]))
    height, block_hash = _uint(obj[0], "commit height"), _hash(obj[1], "commit hash")
    if len(obj) == 3:
        return Commit(height, block_hash, tuple(signatures))
    return Commit(height, block_hash, tuple(signatures), _uint(obj[3], "commit round"),
                  _hash(obj[4], "commit value id"))


def decode_block(raw: bytes) -> Block:
    if len(raw) > BLOCK_BYTES_MAX:
        raise BlockLimitError(f"block of {len(raw)} bytes > {BLOCK_BYTES_MAX}")
    try:
        obj = cbor.decode(raw, max_depth=4, max_items=BLOCK_TXS_MAX, max_size_bytes=BLOCK_BYTES_MAX)
    except DecodeError as exc:
        raise BlockFormatError(f"block: {exc}") from None
    if not isinstance(obj, list) or len(obj) != 3:
        raise BlockFormatError("block must be [header, txs, last_commit]")
    header_bytes, txs, commit = obj
    if not isinstance(header_bytes, bytes) or not isinstance(txs, list):
        raise BlockFormatError("block header must be bytes and txs a list")
    body = tuple(tx for tx in txs if isinstance(tx, bytes))
    if len(body) != len(txs):
        raise BlockFormatError("every transaction must be bytes")
    last_commit = None if commit is None else decode_commit(commit)
    header = decode_header(header_bytes)
    return Block(header, body, last_commit, header_bytes)


# -- identities --------------------------------------------------------------------------


def commit_hash(commit: Commit | None) -> bytes:
    """SHA-256 of a last commit's deterministic CBOR (of `null` for none)."""
    return hashlib.sha256(cbor.encode(None if commit is None else commit.to_obj())).digest()


def check_body(block: Block) -> None:
    """BlockFormatError unless a version 2 header fixes this block's txs and last commit."""
    header = block.header
    if header.version < VERSION:
        return
    if header.last_commit_hash != commit_hash(block.last_commit):
        raise BlockFormatError("the header's last_commit_hash is not the block's last commit")
    if header.txs_root != txs_root(block.txs):
        raise BlockFormatError("the header's txs_root is not the block's transactions")


def value_id(value: bytes, decoded: Block | None = None) -> bytes:
    """The consensus identity of an encoded block (the BFT engine's `identify`).

    Version 2: the block hash, which fixes the whole block (module docstring).  Version 1:
    SHA-256 of the value, as chains written before version 2 were signed.  Anything
    else (not a block, not deterministic, a body its header does not fix): SHA-256 of
    the value under OPAQUE_DOMAIN, an id no header and no version 1 block hashes to.
    `decoded`, when given, is `decode_block(value)`, so that it is not decoded twice.
    """
    try:
        block = decoded if decoded is not None else decode_block(value)
        check_body(block)
    except BlockError:
        return hashlib.sha256(OPAQUE_DOMAIN + value).digest()
    if block.header.version < VERSION:
        return hashlib.sha256(value).digest()
    if block.encode() != value:
        return hashlib.sha256(OPAQUE_DOMAIN + value).digest()
    return block.hash()


# -- commits ---------------------------------------------------------------------------


def commit_sign_bytes(chain_id: str, height: int, block_hash: bytes) -> bytes:
    return cbor.encode([COMMIT_DOMAIN, chain_id, height, block_hash])


def sign_commit(
    chain_id: str, height: int, block_hash: bytes, signers: Sequence[tuple[str, SignFn]]
) -> Commit:
    message = commit_sign_bytes(chain_id, height, block_hash)
    signatures = tuple((node_id, sign(message)) for node_id, sign in signers)
    return Commit(height, block_hash, signatures)


def verify_commit(
    commit: Commit,
    chain_id: str,
    validators: Mapping[str, tuple[bytes, int]],
    verify_fn: VerifyFn,
) -> None:
    """Raise CommitError unless validators of more than 2/3 of the power signed.

    `validators` maps node id to (public key, voting power), as in the genesis file.  A
    BFT commit's signatures are precommits of its value id in its round.
    """
    if commit.round is None:
        message = commit_sign_bytes(chain_id, commit.height, commit.block_hash)
    else:
        message = consensus_sign_bytes(chain_id, commit.height, commit.round, PRECOMMIT,
                                       commit.value_id, -1)
    seen: set[str] = set()
    power = 0
    for node_id, signature in commit.signatures:
        if node_id in seen or node_id not in validators:
            raise CommitError(f"signature of {node_id!r}: unknown or repeated validator")
        public_key, weight = validators[node_id]
        if not verify_fn(public_key, message, signature):
            raise CommitError(f"signature of {node_id} does not verify")
        seen.add(node_id)
        power += weight
    total = sum(weight for _, weight in validators.values())
    if 3 * power <= 2 * total:
        raise CommitError(f"signed power {power} of {total} is not more than 2/3")
