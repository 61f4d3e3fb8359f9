"""Receipts (signed by node keys) and the genesis file that names those keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge import crypto
from edge.portable import cbor, receipt
from edge.portable.errors import BadSignatureError, RemoteProtocolError
from gridledger import genesis as genesis_mod

NODE_KEY = crypto.SigningKey.from_bytes(bytes(range(1, 33)))  # test vector key, not a secret
OTHER_KEY = crypto.SigningKey.from_bytes(bytes(range(2, 34)))  # test vector key


def make_genesis(**changes: object) -> genesis_mod.Genesis:
    fields: dict[str, object] = {
        "chain_id": "gl-test",
        "genesis_time": 1763760000,
        "registrar_name": "test-registrar",
        "registrar_public_key": OTHER_KEY.public_key(),
        "validators": (genesis_mod.Validator("node-0", NODE_KEY.public_key()),),
    }
    fields.update(changes)
    return genesis_mod.Genesis(**fields)  # type: ignore[arg-type]


def test_receipt_round_trip_with_committed_and_rejected_entries() -> None:
    entries = [receipt.committed(7, 12), receipt.rejected(8, "rule.replay")]
    data = receipt.sign("node-0", "gw-1", entries, NODE_KEY.sign)
    node, device, got = receipt.verify(data, {"node-0": NODE_KEY.public_key()}, crypto.verify)
    assert (node, device, got) == ("node-0", "gw-1", entries)
    assert got[0].committed and got[0].height == 12
    assert got[1].reject_code == "rule.replay"


def test_receipt_from_unknown_node_is_refused() -> None:
    data = receipt.sign("node-9", "gw-1", [receipt.committed(1, 1)], NODE_KEY.sign)
    with pytest.raises(receipt.UnknownNodeError):
        receipt.verify(data, {"node-0": NODE_KEY.public_key()}, crypto.verify)


def test_receipt_signed_by_the_wrong_key_is_refused() -> None:
    data = receipt.sign("node-0", "gw-1", [receipt.committed(1, 1)], OTHER_KEY.sign)
    with pytest.raises(BadSignatureError):
        receipt.verify(data, {"node-0": NODE_KEY.public_key()}, crypto.verify)


@pytest.mark.parametrize("payload", [
    {1: "gw-1"},
    {1: "gw-1", 2: []},
    {1: "gw/1", 2: [[1, "committed", 1]]},
    {1: "gw-1", 2: [[1, "lost", 1]]},
    {1: "gw-1", 2: [[-1, "committed", 1]]},
    {1: "gw-1", 2: [[1, "committed"]]},
    {1: "gw-1", 2: [[1, "committed", 1]] * 65},
])
def test_malformed_receipt_payloads_raise_receipt_error(payload: dict[int, object]) -> None:
    with pytest.raises(receipt.ReceiptError) as info:
        receipt.parse_payload(cbor.encode(payload))
    assert info.value.code == "receipt.invalid"


def test_receipt_garbage_raises_documented_errors() -> None:
    for data in (b"", b"\x00", b"\xd2\x80", bytes(100)):
        with pytest.raises(RemoteProtocolError):
            receipt.verify(data, {"node-0": NODE_KEY.public_key()}, crypto.verify)


def test_genesis_round_trips_through_a_file(tmp_path: Path) -> None:
    genesis = make_genesis()
    path = tmp_path / "genesis.json"
    genesis.dump(path)
    loaded = genesis_mod.load(path)
    assert loaded == genesis
    assert loaded.hash() == genesis.hash()
    assert loaded.node_keys() == {"node-0": NODE_KEY.public_key()}


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(chain_id="bad id"), "chain id"),
    (lambda d: d["registrar"].update(public_key="04" + "00" * 64), "registrar"),
    (lambda d: d.update(validators=[]), "validators"),
    (lambda d: d["validators"].append(dict(d["validators"][0])), "unique"),
    (lambda d: d.update(consensus={"engine": "pow"}), "engine"),
    (lambda d: d.pop("chain_id"), "chain_id"),
])
def test_bad_genesis_is_refused_with_a_reason(change, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(json.dumps(make_genesis().to_json()))
    change(doc)
    with pytest.raises(genesis_mod.GenesisError) as info:
        genesis_mod.from_json(doc)
    assert message in str(info.value)
    assert info.value.code == "genesis.invalid"
