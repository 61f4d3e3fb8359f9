"""Block format: deterministic encoding, hash over the header, strict decoding, commits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from aggregator import block as block_mod
from aggregator.block import Block, Commit, Header
from aggregator.merkle import EMPTY_ROOT
from edge import crypto
from edge.portable import cbor
from tests.aggregator.helpers import key

HEADER = Header(
    "gl-test",
    2,
    1_763_760_000,
    b"\x01" * 32,
    b"\x02" * 32,
    b"\x03" * 32,
    7,
    b"\x04" * 32,
    3,
    "node-0",
)


def test_header_round_trip_and_hash() -> None:
    raw = HEADER.encode()
    assert block_mod.decode_header(raw) == HEADER
    assert HEADER.hash() == hashlib.sha256(raw).digest()
    assert sorted(cbor.decode(raw)) == list(range(11))  # type: ignore[call-overload]


def test_block_round_trip_keeps_the_header_bytes() -> None:
    commit = Commit(1, b"\x05" * 32, (("node-0", b"s" * 64),))
    block = Block(HEADER, (b"tx1", b"tx2"), commit)
    decoded = block_mod.decode_block(block.encode())
    assert decoded.header == HEADER and decoded.txs == block.txs
    assert decoded.last_commit == commit and decoded.hash() == HEADER.hash()
    assert decoded.encode() == block.encode()


def test_txs_root_is_rfc9162() -> None:
    assert block_mod.txs_root([]) == EMPTY_ROOT
    one = block_mod.txs_root([b"a"])
    assert one == hashlib.sha256(b"\x00a").digest()
    assert block_mod.txs_root([b"a", b"b"]) != block_mod.txs_root([b"b", b"a"])


@pytest.mark.parametrize(
    "change",
    [
        {"version": 2},
        {"chain_id": "bad id!"},
        {"prev_hash": b"short"},
        {"height": -1},
    ],
)
def test_bad_headers_raise_format_errors(change: dict[str, object]) -> None:
    raw = replace(HEADER, **change).encode()  # type: ignore[arg-type]
    with pytest.raises(block_mod.BlockFormatError):
        block_mod.decode_header(raw)


def test_bad_blocks_raise_block_errors() -> None:
    for raw in (
        b"",
        b"\x80",
        cbor.encode([HEADER.encode(), [1], None]),
        cbor.encode([HEADER.encode(), [], [1, 2]]),
        cbor.encode({}),
    ):
        with pytest.raises(block_mod.BlockError):
            block_mod.decode_block(raw)


def test_commit_needs_more_than_two_thirds() -> None:
    keys = [key(i) for i in range(4)]
    validators = {f"n{i}": (k.public_key(), 1) for i, k in enumerate(keys)}
    block_hash = HEADER.hash()
    signers = [(f"n{i}", k.sign) for i, k in enumerate(keys)]
    good = block_mod.sign_commit("gl-test", 2, block_hash, signers[:3])
    block_mod.verify_commit(good, "gl-test", validators, crypto.verify)
    weak = block_mod.sign_commit("gl-test", 2, block_hash, signers[:2])
    with pytest.raises(block_mod.CommitError):
        block_mod.verify_commit(weak, "gl-test", validators, crypto.verify)
    repeated = replace(good, signatures=good.signatures[:1] * 3)
    with pytest.raises(block_mod.CommitError):
        block_mod.verify_commit(repeated, "gl-test", validators, crypto.verify)
    other_chain = block_mod.sign_commit("gl-other", 2, block_hash, signers)
    with pytest.raises(block_mod.CommitError):
        block_mod.verify_commit(other_chain, "gl-test", validators, crypto.verify)
    stranger = block_mod.sign_commit("gl-test", 2, block_hash, [("n9", keys[0].sign)])
    with pytest.raises(block_mod.CommitError):
        block_mod.verify_commit(stranger, "gl-test", validators, crypto.verify)


def test_json_views_are_plain_data() -> None:
    commit = Commit(1, b"\x05" * 32, (("node-0", b"s" * 64),))
    view = Block(HEADER, (b"tx1",), commit).to_json()
    assert json.loads(json.dumps(view)) == view
    assert view["hash"] == HEADER.hash().hex()
    assert view["header"]["log_size"] == 7  # type: ignore[index]
    assert view["txs"] == [{"hash": hashlib.sha256(b"tx1").hexdigest(), "bytes": 3}]
