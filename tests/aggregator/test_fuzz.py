"""Garbage in: check_tx and execution answer with a documented code, never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import tx
from aggregator.app import FinalizeRequest
from edge.portable import cbor
from tests.aggregator.helpers import NODE_ID, T0, World

# Every code check_tx or execution may give (docs/aggregator.md "Error codes").
PREFIXES = ("ok", "cbor.", "cose.", "batch.", "cert.", "tx.", "rule.", "device.", "registry.",
            "document.")
WORLD = World()
APP = WORLD.app()
VALID = [
    WORLD.batch_tx("gw-1", 1, meters=("M1", "M2")),
    WORLD.batch_tx("gw-1", 2, kcwt=False),
    WORLD.enroll_tx("gw-1", {"M1": "abb_b23"}),
    WORLD.revoke_tx("gw-2"),
    tx.make_document(bytes(32), "verification", "M1", T0 - 10, T0 + 10, NODE_ID.encode(),
                     WORLD.node.sign),
    tx.make_customer("M1", bytes(32), T0, NODE_ID.encode(), WORLD.node.sign),
]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def documented(code: str) -> bool:
    return code.startswith(PREFIXES)


@FUZZ
@given(st.binary(max_size=3000))
def test_check_tx_on_random_bytes(raw: bytes) -> None:
    assert documented(APP.check_tx(raw, T0).code)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_check_tx_on_mutated_transactions(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    for candidate in (bytes(mutated), bytes(mutated[:cut]), bytes(mutated) + b"\x00"):
        assert documented(APP.check_tx(candidate, T0).code)


@FUZZ
@given(st.sampled_from(VALID), st.binary(max_size=200))
def test_check_tx_on_garbage_bodies(raw: bytes, body: bytes) -> None:
    kind = tx.decode(raw).kind
    assert documented(APP.check_tx(cbor.encode([kind, body]), T0).code)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=300)), max_size=6), st.data())
def test_execution_on_garbage_blocks(txs: list[bytes], data: st.DataObject) -> None:
    mutated = []
    for raw in txs:
        if raw and data.draw(st.booleans()):
            flipped = bytearray(raw)
            flipped[data.draw(st.integers(0, len(raw) - 1))] ^= 0xFF
            raw = bytes(flipped)
        mutated.append(raw)
    result = APP.execute(FinalizeRequest(1, T0, tuple(mutated), NODE_ID))
    assert len(result.results) == len(mutated)
    assert all(documented(r.code) for r in result.results)
