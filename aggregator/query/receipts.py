"""Verifiable receipts: one JSON bundle that proves a signed batch is in the ledger.

Theory of operation
-------------------
A receipt bundle carries everything needed to check, offline and trusting only the
genesis file (chain id, registrar key, validator keys and voting powers), that a batch a
device signed was committed:

    {"format": "gridledger-receipt/1",
     "chain_id": "gl-local",
     "device_id": "gw-1", "seq": 7,
     "batch": hex of the COSE_Sign1 exactly as the device signed it,
     "certificate": hex of the device certificate (CWT) the chain verified it with,
                    or null when the batch carries it (kcwt),
     "leaves": [{"meter": "M-1", "index": 41, "proof": [hex, ...]}, ...],
     "header": hex of the committing block's header bytes (`aggregator.block`),
     "commit": {"height": 5, "block_hash": hex,
                "signatures": [{"node_id": "node-0", "signature": hex}, ...]},
     "block": null, or hex of the whole encoded block for a version 1 block with a
              BFT commit}

A solo commit is signed over the block hash (SHA-256 of the header).  A BFT commit
certificate (`round` and `value_id` in the commit) is made of precommits for the
block's value id (`aggregator.block.value_id`).  For a version 2 header, what the BFT
engine writes, the value id is the block hash: the header fixes the block's txs (txs
root) and last commit (last_commit_hash), so the header and the commit are the whole
proof and `block` is null.  Only a block of a BFT chain written before version 2 was
signed as SHA-256 of the whole encoded block; its bundle carries that block, and the
verifier hashes it to the value id and finds the header in it.

`verify_receipt(bundle, trust)` runs the checks in this order; the first failure raises
its own error, whose message says which part of the bundle broke:

 1. shape: known keys only, lowercase hex, integers in range       receipt.format
 2. the header decodes and names the genesis chain                  receipt.header
 3. the commit names this header's height and hash (and for BFT,     receipt.commit
    a value id equal to that hash; for a version 1 header, of the
    block with the header inside it), and validators of more than
    2/3 of the power signed it (each signature must verify; an
    unknown or repeated signer fails)
 4. the batch parses, is from `device_id` with `seq`                receipt.batch
 5. the certificate chains to the registrar and is valid at the     receipt.certificate
    block time, is for this device and lists the batch's meters
 6. the batch signature verifies under the certificate's key        receipt.signature
 7. one leaf per meter group, in order: the leaf data               receipt.inclusion
    [device id, seq, meter, SHA-256(batch)] (`app.leaf_bytes`) is
    included at its index in the tree of the header's log size and
    root (RFC 9162 §2.1.3.2)

Revocation is not checked offline: the validators checked it when they executed the
block, and their commit is what the verifier trusts.  A bundle made for a cluster has
more signatures in its commit and nothing else changes.

Hex must be lowercase and JSON integers plain, so that no two spellings of a bundle
verify alike: any changed byte either fails to parse or changes a checked value.

Limits
------
    BUNDLE_BYTES_MAX    64 MiB + 64 KiB  a version 1 BFT bundle's block in hex (a block is
                                 at most 32 MiB); any other bundle (a batch <= 17 KiB,
                                 32 leaves of 64 hashes, a header, 64 signatures) stays
                                 under 64 KiB.
    LEAVES_MAX          32       one leaf per meter group (batch.MAX_METERS).

Errors
------
    RemoteProtocolError
    └── ReceiptError                 receipt.invalid
        ├── ReceiptFormatError       receipt.format
        ├── ReceiptHeaderError       receipt.header
        ├── ReceiptCommitError       receipt.commit
        ├── ReceiptBatchError        receipt.batch
        ├── ReceiptCertificateError  receipt.certificate
        ├── ReceiptSignatureError    receipt.signature
        └── ReceiptInclusionError    receipt.inclusion
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aggregator import block as block_mod
from aggregator.merkle import ProofError, leaf_hash, verify_inclusion
from edge.portable import batch as batch_mod
from edge.portable import cbor, cose, cwt
from edge.portable.errors import GridLedgerError, RemoteProtocolError
from edge.portable.verify import check_meters

FORMAT = "gridledger-receipt/1"
BUNDLE_BYTES_MAX = 2 * block_mod.BLOCK_BYTES_MAX + 64 * 1024
LEAVES_MAX = 32
UINT63_MAX = (1 << 63) - 1
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_KEYS = frozenset({"format", "chain_id", "device_id", "seq", "batch", "certificate",
                   "leaves", "header", "commit", "block"})
_LEAF_KEYS = frozenset({"meter", "index", "proof"})
_COMMIT_KEYS = frozenset({"height", "block_hash", "signatures"})
_BFT_COMMIT_KEYS = _COMMIT_KEYS | {"round", "value_id"}
_SIGNATURE_KEYS = frozenset({"node_id", "signature"})

VerifyFn = Callable[[bytes, bytes, bytes], bool]


class ReceiptError(RemoteProtocolError):
    code = "receipt.invalid"


class ReceiptFormatError(ReceiptError):
    code = "receipt.format"


class ReceiptHeaderError(ReceiptError):
    code = "receipt.header"


class ReceiptCommitError(ReceiptError):
    code = "receipt.commit"


class ReceiptBatchError(ReceiptError):
    code = "receipt.batch"


class ReceiptCertificateError(ReceiptError):
    code = "receipt.certificate"


class ReceiptSignatureError(ReceiptError):
    code = "receipt.signature"


class ReceiptInclusionError(ReceiptError):
    code = "receipt.inclusion"


@dataclass(frozen=True)
class Trust:
    """What a verifier trusts: the genesis file's chain id, registrar and validators."""

    chain_id: str
    registrar_public_key: bytes
    validators: Mapping[str, tuple[bytes, int]]   # node id -> (public key, voting power)


@dataclass(frozen=True)
class Leaf:
    meter: str
    index: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Bundle:
    chain_id: str
    device_id: str
    seq: int
    batch: bytes
    certificate: bytes | None
    leaves: tuple[Leaf, ...]
    header: bytes
    commit: block_mod.Commit
    block: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "chain_id": self.chain_id,
            "device_id": self.device_id,
            "seq": self.seq,
            "batch": self.batch.hex(),
            "certificate": None if self.certificate is None else self.certificate.hex(),
            "leaves": [{"meter": leaf.meter, "index": leaf.index,
                        "proof": [h.hex() for h in leaf.proof]} for leaf in self.leaves],
            "header": self.header.hex(),
            "commit": self.commit.to_json(),
            "block": None if self.block is None else self.block.hex(),
        }

    def dumps(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Verified:
    """What a receipt proves, for printing."""

    device_id: str
    seq: int
    meters: tuple[str, ...]
    height: int
    block_hash: bytes
    block_time_s: int
    log_size: int
    log_root: bytes
    signers: tuple[str, ...]
    signed_power: int
    total_power: int


# -- parsing -----------------------------------------------------------------------------


def _fail(what: str) -> ReceiptFormatError:
    return ReceiptFormatError(f"bundle: {what}")


def _object(value: object, keys: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        raise _fail(f"{what} must be an object with exactly {sorted(keys)}")
    return value


def _hex(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        raise _fail(f"{what} must be lowercase hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise _fail(f"{what} must be {size} bytes")
    return raw


def _uint(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT63_MAX:
        raise _fail(f"{what} must be an integer in 0..2^63-1")
    return value


def _text(value: object, what: str) -> str:
    if not batch_mod.valid_id(value):
        raise _fail(f"{what} must be an id (1..64 of [A-Za-z0-9._:-])")
    return str(value)


def _leaf(value: object, number: int) -> Leaf:
    found = _object(value, _LEAF_KEYS, f"leaves[{number}]")
    proof = found["proof"]
    if not isinstance(proof, list) or len(proof) > 64:
        raise _fail(f"leaves[{number}].proof must be a list of at most 64 hashes")
    hashes = tuple(_hex(h, f"leaves[{number}].proof[{i}]", 32) for i, h in enumerate(proof))
    return Leaf(_text(found["meter"], f"leaves[{number}].meter"),
                _uint(found["index"], f"leaves[{number}].index"), hashes)


def _commit(value: object) -> block_mod.Commit:
    bft = isinstance(value, dict) and "round" in value
    found = _object(value, _BFT_COMMIT_KEYS if bft else _COMMIT_KEYS, "commit")
    rows = found["signatures"]
    if not isinstance(rows, list) or len(rows) > block_mod.SIGNATURES_MAX:
        raise _fail(f"commit.signatures must be a list of at most {block_mod.SIGNATURES_MAX}")
    signatures = []
    for i, row in enumerate(rows):
        entry = _object(row, _SIGNATURE_KEYS, f"commit.signatures[{i}]")
        signatures.append((_text(entry["node_id"], f"commit.signatures[{i}].node_id"),
                           _hex(entry["signature"], f"commit.signatures[{i}].signature")))
    return block_mod.Commit(_uint(found["height"], "commit.height"),
                            _hex(found["block_hash"], "commit.block_hash", 32),
                            tuple(signatures),
                            _uint(found["round"], "commit.round") if bft else None,
                            _hex(found["value_id"], "commit.value_id", 32) if bft else b"")


def parse_bundle(data: bytes | str | Mapping[str, Any]) -> Bundle:
    """A bundle from its JSON text (or decoded object); ReceiptFormatError if malformed."""
    if isinstance(data, bytes | str):
        if len(data) > BUNDLE_BYTES_MAX:
            raise _fail(f"over {BUNDLE_BYTES_MAX} bytes")
        try:
            data = json.loads(data, parse_constant=_no_constant, parse_float=_no_float)
        except (ValueError, RecursionError) as exc:
            raise _fail(f"not JSON ({exc})") from None
    found = _object(data, _KEYS, "the receipt")
    if found["format"] != FORMAT:
        raise _fail(f"format must be {FORMAT!r}")
    leaves = found["leaves"]
    if not isinstance(leaves, list) or not 1 <= len(leaves) <= LEAVES_MAX:
        raise _fail(f"leaves must be a list of 1..{LEAVES_MAX}")
    certificate, whole = found["certificate"], found["block"]
    return Bundle(
        chain_id=_text(found["chain_id"], "chain_id"),
        device_id=_text(found["device_id"], "device_id"),
        seq=_uint(found["seq"], "seq"),
        batch=_hex(found["batch"], "batch"),
        certificate=None if certificate is None else _hex(certificate, "certificate"),
        leaves=tuple(_leaf(leaf, i) for i, leaf in enumerate(leaves)),
        header=_hex(found["header"], "header"),
        commit=_commit(found["commit"]),
        block=None if whole is None else _hex(whole, "block"),
    )


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _no_float(text: str) -> None:
    raise ValueError(f"no fractions in a receipt: {text}")


# -- verifying ---------------------------------------------------------------------------


def verify_receipt(data: bytes | str | Mapping[str, Any], trust: Trust,
                   verify_fn: VerifyFn) -> Verified:
    """Check a bundle against the genesis trust; the ReceiptError subclass says what broke."""
    bundle = parse_bundle(data)
    header = _check_header(bundle, trust)
    signers, power = _check_commit(bundle, header, trust, verify_fn)
    message, batch = _check_batch(bundle)
    certificate = _check_certificate(bundle, message, batch, trust, header.time_s, verify_fn)
    _check_signature(message, certificate, verify_fn)
    _check_leaves(bundle, batch, header)
    total = sum(weight for _, weight in trust.validators.values())
    return Verified(bundle.device_id, bundle.seq, tuple(g.meter_id for g in batch.meters),
                    header.height, hashlib.sha256(bundle.header).digest(), header.time_s,
                    header.log_size, header.log_root, signers, power, total)


def _check_header(bundle: Bundle, trust: Trust) -> block_mod.Header:
    if bundle.chain_id != trust.chain_id:
        raise ReceiptHeaderError(f"receipt is for chain {bundle.chain_id!r}, the genesis "
                                 f"for {trust.chain_id!r}")
    try:
        header = block_mod.decode_header(bundle.header)
    except GridLedgerError as exc:
        raise ReceiptHeaderError(f"block header: [{exc.code}] {exc}") from None
    if header.chain_id != trust.chain_id:
        raise ReceiptHeaderError(f"block header names chain {header.chain_id!r}")
    if header.encode() != bundle.header:
        raise ReceiptHeaderError("block header is not in its deterministic encoding")
    return header


def _check_commit(bundle: Bundle, header: block_mod.Header, trust: Trust,
                  verify_fn: VerifyFn) -> tuple[tuple[str, ...], int]:
    commit = bundle.commit
    if commit.height != header.height:
        raise ReceiptCommitError(f"commit is for height {commit.height}, the header is "
                                 f"{header.height}")
    if commit.block_hash != hashlib.sha256(bundle.header).digest():
        raise ReceiptCommitError("commit names another block hash than the header's")
    _check_value(bundle, header)
    try:
        block_mod.verify_commit(commit, trust.chain_id, trust.validators, verify_fn)
    except GridLedgerError as exc:
        raise ReceiptCommitError(f"commit certificate: [{exc.code}] {exc}") from None
    signers = tuple(node for node, _ in commit.signatures)
    return signers, sum(trust.validators[node][1] for node in signers)


def needs_block(header: block_mod.Header, commit: block_mod.Commit) -> bool:
    """Whether a bundle must carry the whole block: a BFT commit of a version 1 header."""
    return commit.round is not None and header.version < block_mod.VERSION


def _check_value(bundle: Bundle, header: block_mod.Header) -> None:
    """A BFT commit signs the value id: the block hash for a version 2 header (it fixes
    the whole block), SHA-256 of the whole block, which holds the header, for version 1."""
    commit = bundle.commit
    if not needs_block(header, commit):
        if bundle.block is not None:
            raise ReceiptCommitError("the block comes with a commit that needs only the "
                                     "header")
        if commit.round is not None and commit.value_id != commit.block_hash:
            raise ReceiptCommitError("the commit's value id is not the header's hash")
        return
    if bundle.block is None or hashlib.sha256(bundle.block).digest() != commit.value_id:
        raise ReceiptCommitError("the block does not hash to the commit's value id")
    try:
        inner = block_mod.decode_block(bundle.block).raw_header()
    except GridLedgerError as exc:
        raise ReceiptCommitError(f"block: [{exc.code}] {exc}") from None
    if inner != bundle.header:
        raise ReceiptCommitError("the committed block holds another header")


def _check_batch(bundle: Bundle) -> tuple[cose.Sign1, batch_mod.Batch]:
    try:
        message, batch = batch_mod.open_message(bundle.batch)
    except GridLedgerError as exc:
        raise ReceiptBatchError(f"signed batch: [{exc.code}] {exc}") from None
    if (batch.device_id, batch.seq) != (bundle.device_id, bundle.seq):
        raise ReceiptBatchError(f"batch is {batch.device_id}/{batch.seq}, the receipt says "
                                f"{bundle.device_id}/{bundle.seq}")
    return message, batch


def _check_certificate(bundle: Bundle, message: cose.Sign1, batch: batch_mod.Batch,
                       trust: Trust, at_s: int, verify_fn: VerifyFn) -> cwt.DeviceCertificate:
    raw = bundle.certificate if bundle.certificate is not None else message.kcwt
    if raw is None:
        raise ReceiptCertificateError("no device certificate in the receipt or the batch")
    try:
        certificate = cwt.verify(raw, trust.registrar_public_key, at_s, verify_fn)
        if certificate.device_id != batch.device_id:
            raise ReceiptCertificateError(f"certificate is for {certificate.device_id}")
        check_meters(batch, certificate)
    except ReceiptCertificateError:
        raise
    except GridLedgerError as exc:
        raise ReceiptCertificateError(f"device certificate: [{exc.code}] {exc}") from None
    return certificate


def _check_signature(message: cose.Sign1, certificate: cwt.DeviceCertificate,
                     verify_fn: VerifyFn) -> None:
    try:
        cose.verify(message, certificate.public_key, verify_fn)
    except GridLedgerError as exc:
        raise ReceiptSignatureError(f"device signature: [{exc.code}] {exc}") from None


def _check_leaves(bundle: Bundle, batch: batch_mod.Batch, header: block_mod.Header) -> None:
    meters = [group.meter_id for group in batch.meters]
    if [leaf.meter for leaf in bundle.leaves] != meters:
        raise ReceiptInclusionError(f"leaves name meters {[x.meter for x in bundle.leaves]}, "
                                    f"the batch {meters}")
    batch_hash = hashlib.sha256(bundle.batch).digest()
    for leaf in bundle.leaves:
        data = leaf_data(batch.device_id, batch.seq, leaf.meter, batch_hash)
        check_inclusion(data, leaf.index, header.log_size, leaf.proof, header.log_root,
                        f"leaf {leaf.index} ({leaf.meter})")


def check_inclusion(data: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes,
                    what: str = "leaf") -> None:
    """RFC 9162 §2.1.3.2 for leaf data `data`; ReceiptInclusionError naming `what`."""
    try:
        verify_inclusion(leaf_hash(data), index, size, list(proof), root)
    except ProofError as exc:
        raise ReceiptInclusionError(f"{what}: [{exc.code}] {exc}") from None


def leaf_data(device_id: str, seq: int, meter_id: str, batch_hash: bytes) -> bytes:
    """The readings-log leaf of one meter group (the same bytes as `app.leaf_bytes`)."""
    return cbor.encode([device_id, seq, meter_id, batch_hash])


def trust_from_genesis(genesis: Any) -> Trust:
    """A Trust from a `gridledger.genesis.Genesis`."""
    validators = {v.node_id: (v.public_key, v.power) for v in genesis.validators}
    return Trust(genesis.chain_id, genesis.registrar_public_key, validators)


def consistency_json(first: int, second: int, first_root: bytes, second_root: bytes,
                     proof: Sequence[bytes]) -> dict[str, Any]:
    return {"first": first, "second": second, "first_root": first_root.hex(),
            "second_root": second_root.hex(), "proof": [h.hex() for h in proof]}
