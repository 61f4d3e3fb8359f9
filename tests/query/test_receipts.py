"""Receipt bundles checked offline: a real node's receipts verify, every tampered field
fails with the code of the part that broke, every changed byte fails, published RFC 9162
vectors pass the same inclusion check, a BFT commit certificate verifies (over a version
2 header alone, and over the whole block for a version 1 header), and `gridledger verify`
says the same on the command line."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aggregator import block as block_mod
from aggregator.consensus.messages import PRECOMMIT
from aggregator.consensus.messages import sign_bytes as consensus_sign_bytes
from aggregator.query.receipts import (
    ReceiptError,
    ReceiptInclusionError,
    Trust,
    check_inclusion,
    parse_bundle,
    trust_from_genesis,
    verify_receipt,
)
from edge import crypto
from edge.portable import cose
from gridledger.cli import main as gridledger_main
from tests.ledger.test_merkle_vectors import INCLUSION, LEAVES, ROOTS
from tests.query.conftest import SEED
from tests.query.live import LiveNode

Bundle = dict[str, Any]


@pytest.fixture(scope="module")
def trust(live: LiveNode) -> Trust:
    return trust_from_genesis(live.opened.genesis)


@pytest.fixture(scope="module")
def mixed(live: LiveNode) -> Bundle:
    """gw-mix/1: one batch, two meters, so two leaves."""
    found: Bundle = live.http("GET", "/v1/readings/gw-mix/1/receipt", user="audit").json()
    return found


@pytest.fixture(scope="module")
def with_certificate(mixed: Bundle) -> Bundle:
    """The same receipt naming its certificate explicitly (as for an enrolled device)."""
    bundle = copy.deepcopy(mixed)
    bundle["certificate"] = cose.parse(bytes.fromhex(mixed["batch"])).kcwt.hex()  # type: ignore[union-attr]
    return bundle


CLUSTER_KEYS = {f"v{i}": crypto.SigningKey.from_bytes(bytes([i + 1]) * 32) for i in range(4)}


def _cluster_trust(trust: Trust) -> Trust:
    return Trust(trust.chain_id, trust.registrar_public_key,
                 {n: (k.public_key(), 1) for n, k in CLUSTER_KEYS.items()})


def _bft_commit(chain_id: str, height: int, block_hash: bytes, value_id: bytes,
                signers: list[str], round_: int = 2) -> dict[str, Any]:
    message = consensus_sign_bytes(chain_id, height, round_, PRECOMMIT, value_id, -1)
    signatures = tuple((n, CLUSTER_KEYS[n].sign(message)) for n in signers)
    return block_mod.Commit(height, block_hash, signatures, round_, value_id).to_json()


@pytest.fixture(scope="module")
def bft(live: LiveNode, with_certificate: Bundle, trust: Trust) -> tuple[Bundle, Trust]:
    """The receipt as a cluster gives it: the same block with a version 2 header (it fixes
    the last commit too) and precommits of three of four validators over its hash."""
    height = with_certificate["commit"]["height"]
    block = live.on_loop(lambda: live.api.reader.block(height))
    header = block.header.bound_to(block.last_commit).encode()
    block_hash = hashlib.sha256(header).digest()
    commit = _bft_commit(trust.chain_id, height, block_hash, block_hash, ["v0", "v1", "v3"])
    bundle = dict(copy.deepcopy(with_certificate), header=header.hex(), commit=commit)
    return bundle, _cluster_trust(trust)


def _flip_hex(text: str, at: int = -1) -> str:
    digit = text[at]
    return text[:at] + ("0" if digit != "0" else "1") + (text[at + 1:] if at != -1 else "")


def _set(path: tuple[Any, ...], value: Callable[[Any], Any]) -> Callable[[Bundle], None]:
    def change(bundle: Bundle) -> None:
        target = bundle
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]])
    return change


def _drop_leaf(bundle: Bundle) -> None:
    bundle["leaves"].pop()


def _swap_leaves(bundle: Bundle) -> None:
    bundle["leaves"].reverse()


def _repeat_signature(bundle: Bundle) -> None:
    bundle["commit"]["signatures"].append(bundle["commit"]["signatures"][0])


def _flip_in_batch_payload(bundle: Bundle) -> None:
    batch = bytes.fromhex(bundle["batch"])
    message = cose.parse(batch)
    at = batch.index(message.payload) + len(message.payload) - 1  # last byte of 512.5 W
    bundle["batch"] = (batch[:at] + bytes([batch[at] ^ 0x01]) + batch[at + 1:]).hex()


TAMPERING: list[tuple[str, Callable[[Bundle], None], str]] = [
    ("format", _set(("format",), lambda v: "gridledger-receipt/2"), "receipt.format"),
    ("extra key", lambda b: b.__setitem__("note", "x"), "receipt.format"),
    ("upper-case hex", _set(("header",), str.upper), "receipt.format"),
    ("odd hex", _set(("header",), lambda v: v[:-1]), "receipt.format"),
    ("chain id", _set(("chain_id",), lambda v: "gl-other"), "receipt.header"),
    ("header byte", _set(("header",), lambda v: _flip_hex(v, 20)), "receipt.header"),
    ("header log root", _set(("header",), lambda v: _flip_hex(v)), "receipt.commit"),
    ("commit height", _set(("commit", "height"), lambda v: v + 1), "receipt.commit"),
    ("commit hash", _set(("commit", "block_hash"), _flip_hex), "receipt.commit"),
    ("commit signature", _set(("commit", "signatures", 0, "signature"), _flip_hex),
     "receipt.commit"),
    ("commit signer", _set(("commit", "signatures", 0, "node_id"), lambda v: "node-9"),
     "receipt.commit"),
    ("no signatures", _set(("commit", "signatures"), lambda v: []), "receipt.commit"),
    ("repeated signature", _repeat_signature, "receipt.commit"),
    ("block with a solo commit", _set(("block",), lambda v: "00"), "receipt.commit"),
    ("device id", _set(("device_id",), lambda v: "gw-b"), "receipt.batch"),
    ("seq", _set(("seq",), lambda v: v + 1), "receipt.batch"),
    ("batch truncated", _set(("batch",), lambda v: v[:-2]), "receipt.batch"),
    ("batch value", _flip_in_batch_payload, "receipt.signature"),
    ("batch signature", _set(("batch",), _flip_hex), "receipt.signature"),
    ("certificate", _set(("certificate",), lambda v: _flip_hex(v, -10)), "receipt.certificate"),
    ("certificate of another device", None, "receipt.certificate"),  # type: ignore[list-item]
    ("leaf index", _set(("leaves", 0, "index"), lambda v: v + 1), "receipt.inclusion"),
    ("leaf meter", _set(("leaves", 0, "meter"), lambda v: "M-B1"), "receipt.inclusion"),
    ("proof hash", _set(("leaves", 1, "proof", 0), _flip_hex), "receipt.inclusion"),
    ("proof shortened", _set(("leaves", 1, "proof"), lambda v: v[:-1]), "receipt.inclusion"),
    ("leaf dropped", _drop_leaf, "receipt.inclusion"),
    ("leaves swapped", _swap_leaves, "receipt.inclusion"),
]


BFT_TAMPERING: list[tuple[str, Callable[[Bundle], None], str]] = [
    ("commit value id", _set(("commit", "value_id"), _flip_hex), "receipt.commit"),
    ("commit round", _set(("commit", "round"), lambda v: v + 1), "receipt.commit"),
    ("commit without round", lambda b: [b["commit"].pop(k) for k in ("round", "value_id")],
     "receipt.commit"),
    ("whole block added", _set(("block",), lambda v: "80"), "receipt.commit"),
    ("header version 1", None, "receipt.commit"),  # type: ignore[list-item]
]
BFT_MESSAGES = {
    "commit value id": "value id is not the header's hash",
    "whole block added": "needs only the header",
    "header version 1": "block does not hash to the commit's value id",
    "commit round": "does not verify",
}


def _header_v1(bundle: Bundle) -> None:
    """The same block's version 1 header: its hash no longer fixes the last commit."""
    header = block_mod.decode_header(bytes.fromhex(bundle["header"]))
    old = block_mod.Header(**{**header.__dict__, "version": 1, "last_commit_hash": b""})
    bundle["header"] = old.encode().hex()
    bundle["commit"]["block_hash"] = old.hash().hex()


def test_a_real_receipt_verifies(with_certificate: Bundle, mixed: Bundle, trust: Trust) -> None:
    for bundle in (mixed, with_certificate):
        found = verify_receipt(json.dumps(bundle), trust, crypto.verify)
        assert (found.device_id, found.seq, found.meters) == ("gw-mix", 1, ("M-A1", "M-B1"))
        assert found.signers == ("node-0",) and found.signed_power == found.total_power == 1


@pytest.mark.parametrize("name, change, code", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_each_tampered_field_fails_with_its_code(
    live: LiveNode, with_certificate: Bundle, trust: Trust, name: str,
    change: Callable[[Bundle], None] | None, code: str,
) -> None:
    bundle = copy.deepcopy(with_certificate)
    if change is None:  # a valid certificate, but of another device
        bundle["certificate"] = live.gateways["gw-a"].certificate.hex()
    else:
        change(bundle)
    with pytest.raises(ReceiptError) as raised:
        verify_receipt(json.dumps(bundle), trust, crypto.verify)
    assert raised.value.code == code, str(raised.value)


def test_a_bft_receipt_is_the_header_and_its_certificate(bft: tuple[Bundle, Trust]) -> None:
    bundle, cluster = bft
    assert bundle["block"] is None
    assert len(json.dumps(bundle)) < 8 * 1024
    verified = verify_receipt(json.dumps(bundle), cluster, crypto.verify)
    assert verified.signers == ("v0", "v1", "v3")
    assert verified.signed_power == 3 and verified.total_power == 4


@pytest.mark.parametrize("name, change, code", TAMPERING + BFT_TAMPERING,
                         ids=[t[0] for t in TAMPERING + BFT_TAMPERING])
def test_each_tampered_field_of_a_bft_receipt_fails_with_its_code(
    live: LiveNode, bft: tuple[Bundle, Trust], name: str,
    change: Callable[[Bundle], None] | None, code: str,
) -> None:
    bundle, cluster = copy.deepcopy(bft[0]), bft[1]
    if name == "certificate of another device":
        bundle["certificate"] = live.gateways["gw-a"].certificate.hex()
    elif change is None:
        _header_v1(bundle)
    else:
        change(bundle)
    with pytest.raises(ReceiptError) as raised:
        verify_receipt(json.dumps(bundle), cluster, crypto.verify)
    assert raised.value.code == code, str(raised.value)
    assert BFT_MESSAGES.get(name, "") in str(raised.value)


@pytest.mark.parametrize("kind", ["solo", "bft"])
def test_every_changed_byte_fails(with_certificate: Bundle, trust: Trust,
                                  bft: tuple[Bundle, Trust], kind: str) -> None:
    if kind == "bft":
        with_certificate, trust = bft
    text = json.dumps(with_certificate, sort_keys=True, separators=(",", ":")).encode()
    verify_receipt(text, trust, crypto.verify)
    rng = random.Random(SEED)
    printable = bytes(range(0x20, 0x7f))
    codes: dict[str, int] = {}
    for at in range(len(text)):
        replacement = rng.choice([b for b in printable if b != text[at]])
        changed = text[:at] + bytes([replacement]) + text[at + 1:]
        try:
            verify_receipt(changed, trust, crypto.verify)
        except ReceiptError as exc:
            codes[exc.code] = codes.get(exc.code, 0) + 1
        else:
            raise AssertionError(f"seed {SEED}: byte {at} {text[at]!r} -> {replacement!r} "
                                 f"still verifies")
    assert set(codes) >= {"receipt.format", "receipt.commit", "receipt.inclusion",
                          "receipt.signature"}, codes


def test_rfc9162_inclusion_vectors_pass_the_receipt_check() -> None:
    for index, size, path in INCLUSION:
        check_inclusion(LEAVES[index], index, size, path, ROOTS[size])
        with pytest.raises(ReceiptInclusionError):
            check_inclusion(LEAVES[index] + b"\x00", index, size, path, ROOTS[size])
        if path:
            with pytest.raises(ReceiptInclusionError):
                check_inclusion(LEAVES[index], index, size, path[:-1], ROOTS[size])


def test_a_bft_commit_certificate_needs_more_than_two_thirds(
        bft: tuple[Bundle, Trust]) -> None:
    bundle, cluster = bft
    commit = bundle["commit"]
    block_hash = bytes.fromhex(commit["block_hash"])
    for signers in (["v0", "v1"], ["v0"], []):
        fewer = dict(bundle, commit=_bft_commit(cluster.chain_id, commit["height"],
                                                block_hash, block_hash, signers))
        with pytest.raises(ReceiptError) as raised:
            verify_receipt(json.dumps(fewer), cluster, crypto.verify)
        assert raised.value.code == "receipt.commit", str(raised.value)
        assert "not more than 2/3" in str(raised.value)


def test_a_version_1_bft_receipt_carries_its_block(
        live: LiveNode, mixed: Bundle, trust: Trust) -> None:
    """A BFT chain written before version 2 headers: the precommits signed SHA-256 of the
    whole block, so its receipt carries the block and the verifier hashes it."""
    height = mixed["commit"]["height"]
    block = live.on_loop(lambda: live.api.reader.block(height)).encode()
    cluster = _cluster_trust(trust)
    value_id = hashlib.sha256(block).digest()
    block_hash = bytes.fromhex(mixed["commit"]["block_hash"])

    def bundle(signers: list[str]) -> Bundle:
        commit = _bft_commit(trust.chain_id, height, block_hash, value_id, signers)
        return dict(mixed, commit=commit, block=block.hex())

    verified = verify_receipt(json.dumps(bundle(["v0", "v1", "v3"])), cluster, crypto.verify)
    assert verified.signed_power == 3 and verified.total_power == 4
    for signers, altered in ((["v0", "v1"], {}), (["v0", "v1", "v2"], {"block": None}),
                             (["v0", "v1", "v2"], {"block": block[:-1].hex()})):
        with pytest.raises(ReceiptError) as raised:
            verify_receipt(json.dumps(dict(bundle(signers), **altered)), cluster,
                           crypto.verify)
        assert raised.value.code == "receipt.commit", str(raised.value)
    assert parse_bundle(json.dumps(bundle(["v0"]))).commit.round == 2


def test_gridledger_verify_command(live: LiveNode, mixed: Bundle, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(mixed))
    genesis = str(live.genesis_path)
    assert gridledger_main(["verify", str(receipt), "--genesis", genesis]) == 0
    shown = capsys.readouterr().out
    assert "verified" in shown and "gw-mix/1" in shown and "M-A1 M-B1" in shown
    signed = live.http("GET", "/v1/readings/gw-mix/1/receipt?format=signjson", user="audit")
    receipt.write_bytes(signed.body)
    assert gridledger_main(["verify", str(receipt), "--genesis", genesis]) == 0
    capsys.readouterr()
    receipt.write_text(json.dumps(dict(mixed, seq=2)))
    assert gridledger_main(["verify", str(receipt), "--genesis", genesis]) == 2
    assert capsys.readouterr().err.startswith("error [receipt.batch]: batch is gw-mix/1")
