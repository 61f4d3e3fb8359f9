"""Garbage in: every parser of the query side raises its documented error, nothing else."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.query import confidential as conf
from aggregator.query import documents as docs
from aggregator.query import tablejson as tj
from aggregator.query.accounts import Principal
from aggregator.query.errors import (
    ConfidentialError,
    DocumentRecordError,
    SignJsonError,
    TokenError,
)
from aggregator.query.tokens import TokenIssuer, TokenVerifier
from edge.crypto import SigningKey
from tests.query.conftest import NOW_S, SEED

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
_rng = random.Random(SEED)
KEY = SigningKey.from_bytes(_rng.randbytes(31).rjust(32, b"\1"))
TOKEN = TokenIssuer(KEY, "node-1", "gl-test", random_bytes=_rng.randbytes).issue(
    Principal("sup", "supplier", devices=frozenset({"gw-1"})), NOW_S).access_token
VERIFIER = TokenVerifier({"node-1": KEY.public_key()}, "gl-test")
RING = conf.new_key_ring(_rng.randbytes)
SEALED = conf.seal(RING, "r1", conf.CustomerFields("A", "B", "C"), _rng.randbytes).to_bytes()
RECORD = docs.sign_record(docs.DocumentRecord(bytes(32), "verification", "M1", NOW_S,
                                              NOW_S + 1000), "lab", KEY.sign)
SIGNED = tj.sign_json({"a": [1, 2]}, KEY.sign, "node-1", "x", NOW_S)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


@FUZZ
@given(st.text(max_size=400))
def test_token_text(text: str) -> None:
    with pytest.raises(TokenError):
        VERIFIER.verify(text, NOW_S)


@FUZZ
@given(mutated(TOKEN.encode()))
def test_token_mutated(raw: bytes) -> None:
    token = raw.decode("latin-1")
    try:
        VERIFIER.verify(token, NOW_S)
    except TokenError:
        return
    # Only unused base64url bits may change without effect; the claims stay the same.
    assert token.split(".")[:2] == TOKEN.split(".")[:2]


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(SEALED)))
def test_sealed_records(raw: bytes) -> None:
    try:
        conf.unseal(RING, conf.Sealed.from_bytes(raw))
    except ConfidentialError:
        return
    assert raw == SEALED


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(RECORD)))
def test_document_records(raw: bytes) -> None:
    try:
        docs.verify_record(raw, {"lab": KEY.public_key()})
    except DocumentRecordError:
        return
    assert raw == RECORD


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


@FUZZ
@given(st.dictionaries(st.sampled_from(["Type", "protected", "payload", "signature", "x"]),
                       JSON, max_size=5))
def test_sign_json_garbage(doc: dict[str, Any]) -> None:
    with pytest.raises(SignJsonError):
        tj.verify_sign_json({"Type": "SignJson", **doc} if "Type" not in doc else doc,
                            {"node-1": KEY.public_key()})


@FUZZ
@given(st.sampled_from(["protected", "payload", "signature"]), st.data())
def test_sign_json_mutated(field: str, data: st.DataObject) -> None:
    text = data.draw(mutated(SIGNED[field].encode())).decode("latin-1")
    if text == SIGNED[field]:
        return
    with pytest.raises(SignJsonError):
        tj.verify_sign_json({**SIGNED, field: text}, {"node-1": KEY.public_key()})
