"""TableJson, CSV and JSON from one table; SignJson signing, verification and tampering."""

from __future__ import annotations

import base64
import csv
import io
import json
import random
from typing import Any

import jwt
import pytest

from aggregator.query import tablejson as tj
from aggregator.query.errors import SignJsonError, TableError
from aggregator.query.tablejson import Column, Table
from edge.crypto import SigningKey
from tests.query.conftest import NOW_S

COLUMNS = (
    Column("meter", "string", "meter serial"),
    Column("read_at_s", "timestamp", "time the meter was read", "s"),
    Column("energy_import_J", "integer", "import energy register 1-0:1.8.0", "J"),
    Column("power_W", "number", "active power 1-0:1.7.0", "W"),
    Column("clock_synced", "boolean", "device clock synchronised"),
    Column("leaf_hash", "bytes", "RFC 9162 leaf hash"),
)
ROWS = (
    ("SDM630-17", NOW_S, 36_000_000, 512.5, True, b"\x01\xab"),
    ("=HYPERLINK(\"x\")", NOW_S + 10, 36_000_100, None, False, None),
)


@pytest.fixture
def table() -> Table:
    return Table("readings", "readings of meter SDM630-17", NOW_S, COLUMNS, ROWS)


def test_tablejson_shape(table: Table) -> None:
    doc = tj.to_tablejson(table)
    assert list(doc) == ["Type", "Property", "Structure", "Cell"]
    assert doc["Type"] == "readings"
    assert doc["Property"] == {"description": "readings of meter SDM630-17",
                               "timestamp": "2026-09-21T14:13:20Z", "count": 2}
    assert doc["Structure"][2] == {"name": "energy_import_J", "type": "integer",
                                   "description": "import energy register 1-0:1.8.0",
                                   "unit": "J"}
    assert [s["name"] for s in doc["Structure"]] == doc["Cell"]["fields"]
    assert doc["Cell"]["encoding"] == "json-rows"
    assert doc["Cell"]["rows"][0] == ["SDM630-17", NOW_S, 36_000_000, 512.5, True, "01ab"]
    assert doc["Cell"]["rows"][1][3] is None
    body, media = tj.render(table, "tablejson")
    assert media == "application/json" and json.loads(body) == doc


def test_plain_json(table: Table) -> None:
    rows = tj.to_json_rows(table)
    assert rows[0] == {"meter": "SDM630-17", "read_at_s": NOW_S, "energy_import_J": 36_000_000,
                       "power_W": 512.5, "clock_synced": True, "leaf_hash": "01ab"}
    body, _ = tj.render(table, "json")
    assert json.loads(body) == rows


def test_csv(table: Table) -> None:
    body, media = tj.render(table, "csv")
    assert media.startswith("text/csv")
    text = body.decode()
    assert text.endswith("\r\n")
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == [c.name for c in COLUMNS]
    assert parsed[1] == ["SDM630-17", str(NOW_S), "36000000", "512.5", "true", "01ab"]
    assert parsed[2][0] == "'=HYPERLINK(\"x\")"  # formula neutralised
    assert parsed[2][3:] == ["", "false", ""]


def test_unknown_format(table: Table) -> None:
    with pytest.raises(TableError):
        tj.render(table, "xml")


@pytest.mark.parametrize(
    ("columns", "rows"),
    [
        ((), ()),
        ((Column("a", "string", ""), Column("a", "string", "")), ()),
        ((Column("bad name", "string", ""),), ()),
        ((Column("a", "date", ""),), ()),
        ((Column("a", "integer", ""),), (("1",),)),
        ((Column("a", "integer", ""),), ((True,),)),
        ((Column("a", "number", ""),), ((float("nan"),),)),
        ((Column("a", "boolean", ""),), ((1,),)),
        ((Column("a", "string", ""),), (("x", "y"),)),
        ((Column("a", "bytes", ""),), (("00",),)),
    ],
)
def test_invalid_tables(columns: tuple[Column, ...], rows: tuple[tuple[Any, ...], ...]) -> None:
    with pytest.raises(TableError):
        Table("t", "", NOW_S, columns, rows)


def test_row_limit() -> None:
    with pytest.raises(TableError):
        Table("t", "", NOW_S, (Column("a", "integer", ""),),
              tuple((i,) for i in range(tj.ROWS_MAX + 1)))


# -- SignJson ----------------------------------------------------------------------------


@pytest.fixture
def node_key(rng: random.Random) -> SigningKey:
    return SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\6"))


RECEIPT = {"device": "gw-1", "seq": 7, "leaf_index": 41, "proof": ["ab" * 32, "cd" * 32]}


def test_sign_json_round_trip(node_key: SigningKey) -> None:
    doc = tj.sign_json(RECEIPT, node_key.sign, "node-1", "receipt of gw-1/7", NOW_S)
    assert set(doc) == {"Type", "Property", "protected", "payload", "signature"}
    assert doc["Type"] == "SignJson"
    assert tj.verify_sign_json(doc, {"node-1": node_key.public_key()}) == RECEIPT
    header = json.loads(base64.urlsafe_b64decode(doc["protected"] + "=="))
    assert header == {"alg": "ES256", "kid": "node-1", "iat": NOW_S, "cty": "json"}


def test_sign_json_is_a_standard_jws(node_key: SigningKey) -> None:
    doc = tj.sign_json(RECEIPT, node_key.sign, "node-1", "receipt", NOW_S)
    compact = f"{doc['protected']}.{doc['payload']}.{doc['signature']}"
    payload = jwt.api_jws.PyJWS().decode(compact, node_key.to_pem(), algorithms=["ES256"])
    assert json.loads(payload) == RECEIPT


def test_sign_json_tampering(node_key: SigningKey, rng: random.Random) -> None:
    keys = {"node-1": node_key.public_key()}
    doc = tj.sign_json(RECEIPT, node_key.sign, "node-1", "receipt", NOW_S)
    for field in ("protected", "payload", "signature"):
        for _ in range(10):
            text = list(doc[field])
            i = rng.randrange(len(text))
            text[i] = "A" if text[i] != "A" else "B"
            with pytest.raises(SignJsonError):
                tj.verify_sign_json({**doc, field: "".join(text)}, keys)
    other_payload = tj.sign_json({**RECEIPT, "seq": 8}, node_key.sign, "node-1", "", NOW_S)
    with pytest.raises(SignJsonError) as caught:
        tj.verify_sign_json({**doc, "payload": other_payload["payload"]}, keys)
    assert caught.value.code == "signjson.signature"
    last = doc["signature"][-1]
    loose = doc["signature"][:-1] + chr(ord(last) ^ 1)  # flips an unused low bit only
    with pytest.raises(SignJsonError):
        tj.verify_sign_json({**doc, "signature": loose}, keys)
    # Property is descriptive and unsigned: changing it does not matter.
    assert tj.verify_sign_json({**doc, "Property": {}}, keys) == RECEIPT


def test_sign_json_refusals(node_key: SigningKey, rng: random.Random) -> None:
    keys = {"node-1": node_key.public_key()}
    doc = tj.sign_json(RECEIPT, node_key.sign, "node-1", "", NOW_S)
    other = SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\7"))
    with pytest.raises(SignJsonError) as caught:
        tj.verify_sign_json(doc, {"node-1": other.public_key()})
    assert caught.value.code == "signjson.signature"
    with pytest.raises(SignJsonError):
        tj.verify_sign_json(doc, {"node-2": node_key.public_key()})
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"node-1"}').decode().rstrip("=")
    with pytest.raises(SignJsonError) as caught:
        tj.verify_sign_json({**doc, "protected": none_header}, keys)
    assert caught.value.code == "signjson.alg"
    list_kid = base64.urlsafe_b64encode(b'{"alg":"ES256","kid":[1]}').decode().rstrip("=")
    for bad in ({**doc, "Type": "TableJson"}, {**doc, "protected": 5},
                {**doc, "protected": list_kid}, {**doc, "signature": "***"}, {}):
        with pytest.raises(SignJsonError):
            tj.verify_sign_json(bad, keys)
