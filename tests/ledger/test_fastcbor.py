"""The node's C-speed CBOR gives the portable codec's bytes on the shapes it is used for."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from aggregator import fastcbor, rules
from aggregator.app import Device
from edge.portable import cbor, cose, receipt
from edge.portable.errors import DecodeError, LocalProtocolError

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.binary(max_size=40),
    st.text(max_size=30), st.floats(allow_nan=True, allow_infinity=True),
)


def _maps(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Maps keyed by one kind each: what `fastcbor.encode` promises to get right."""
    kinds: list[st.SearchStrategy[object]] = [
        st.integers(0, 2**64 - 1), st.integers(-(2**64), -1), st.text(max_size=30),
        st.binary(max_size=30)]
    return st.one_of(*(st.dictionaries(k, children, max_size=6) for k in kinds))


values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=6), _maps(children)),
    max_leaves=30)


@given(values)
def test_encode_matches_the_portable_encoder(obj: object) -> None:
    assert fastcbor.encode(obj) == cbor.encode(obj)


def test_mixed_key_kinds_are_outside_the_promise() -> None:
    """Why the promise is per kind: cbor2 sorts length-first, RFC 8949 bytewise."""
    mixed = {24: 1, -1: 2}
    assert fastcbor.encode(mixed) != cbor.encode(mixed)


@given(st.integers(0, 2**64 - 1), st.binary(max_size=2000))
def test_decode_pair_of_a_canonical_envelope(kind: int, body: bytes) -> None:
    raw = cbor.encode([kind, body])
    assert fastcbor.decode_pair(raw) == [kind, body]


@given(st.binary(max_size=64))
def test_decode_pair_answers_garbage_as_the_portable_decoder(raw: bytes) -> None:
    try:
        expected: object = cbor.decode(raw)
    except DecodeError as exc:
        with pytest.raises(type(exc)):
            fastcbor.decode_pair(raw)
        return
    # compared as bytes: NaN is not equal to itself
    assert cbor.encode(fastcbor.decode_pair(raw)) == cbor.encode(expected)


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
@pytest.mark.parametrize("kind", [0, 1, 5, 23, 24])
def test_decode_pair_at_every_head_length(kind: int, size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert fastcbor.decode_pair(cbor.encode([kind, body])) == [kind, body]


def _portable_or_error(raw: bytes) -> object:
    try:
        return cbor.decode(raw)
    except DecodeError as exc:
        return type(exc)


@given(st.integers(0, 30), st.binary(max_size=300), st.integers(0, 310), st.integers(0, 255),
       st.binary(max_size=3))
def test_decode_pair_near_an_envelope_answers_as_the_portable_decoder(
    kind: int, body: bytes, at: int, byte: int, tail: bytes
) -> None:
    """Envelopes with a byte changed, cut short or extended: the byte-level reading
    must accept exactly what the portable decoder reads as the same pair."""
    raw = bytearray(cbor.encode([kind, body]))
    raw[at % len(raw)] = byte
    for variant in (bytes(raw), bytes(raw[:at % len(raw)]), bytes(raw) + tail):
        expected = _portable_or_error(variant)
        if isinstance(expected, type):
            with pytest.raises(expected):
                fastcbor.decode_pair(variant)
        else:
            assert cbor.encode(fastcbor.decode_pair(variant)) == cbor.encode(expected)


def test_decode_pair_refuses_a_non_canonical_envelope() -> None:
    longhand = bytes([0x82, 0x18, 0x01, 0x41, 0x00])  # kind 1 in two bytes
    with pytest.raises(DecodeError):
        fastcbor.decode_pair(longhand)


def _fixed_signature(data: bytes) -> bytes:
    return bytes(64)


@given(st.text(min_size=1, max_size=40), st.lists(
    st.tuples(st.integers(0, 2**32), st.sampled_from(["committed", "rejected:rule.replay"]),
              st.integers(0, 2**40)), min_size=1, max_size=receipt.MAX_ENTRIES))
def test_receipt_bytes_match_the_portable_receipt(device_id: str, rows: list[tuple[int, str, int]]
                                                  ) -> None:
    entries = [receipt.Entry(seq, status, height) for seq, status, height in rows]
    payload = fastcbor.receipt_payload(device_id, entries)
    assert payload == receipt.encode_payload(device_id, entries)
    fast = fastcbor.sign1(payload, b"node-0", _fixed_signature)
    assert fast == cose.sign1(payload, b"node-0", _fixed_signature)
    assert fast == receipt.sign("node-0", device_id, entries, _fixed_signature)


@given(st.integers(0, 2**64 - 1), st.binary(max_size=600))
def test_pair_is_the_portable_encoding(kind: int, body: bytes) -> None:
    assert fastcbor.pair(kind, body) == cbor.encode([kind, body])


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
def test_pair_and_sign1_at_every_head_length(size: int) -> None:
    body = bytes(size)
    assert fastcbor.pair(1, body) == cbor.encode([1, body])
    signed: list[bytes] = []

    def sign(data: bytes) -> bytes:
        signed.append(data)
        return bytes(64)

    if size > cose.MAX_PAYLOAD_BYTES:
        with pytest.raises(LocalProtocolError):
            fastcbor.sign1(body, b"node-0", sign)
        with pytest.raises(LocalProtocolError):
            cose.sign1(body, b"node-0", sign)
        return
    assert fastcbor.sign1(body, b"node-0", sign) == cose.sign1(body, b"node-0", _fixed_signature)
    assert signed == [cbor.encode(["Signature1", cose.protected_header(b"node-0"), b"", body])]


@given(st.text(max_size=70), st.integers(-(2**64), 2**64 - 1), st.text(max_size=70),
       st.binary(min_size=32, max_size=32))
def test_leaf_is_the_portable_encoding(device_id: str, seq: int, meter_id: str,
                                       batch_hash: bytes) -> None:
    assert (fastcbor.leaf(device_id, seq, meter_id, batch_hash)
            == cbor.encode([device_id, seq, meter_id, batch_hash]))


@given(st.binary(max_size=300), st.binary(min_size=1, max_size=cose.MAX_KID_BYTES))
def test_sign1_signs_the_portable_sig_structure(payload: bytes, kid: bytes) -> None:
    signed: list[bytes] = []

    def sign(data: bytes) -> bytes:
        signed.append(data)
        return bytes(range(64))

    fast = fastcbor.sign1(payload, kid, sign)
    assert signed == [cbor.encode(["Signature1", cose.protected_header(kid), b"", payload])]
    assert fast == cose.sign1(payload, kid, lambda _: bytes(range(64)))


_texts = st.text(max_size=20)
_devices = st.builds(
    Device,
    device_id=_texts,
    certificate=st.binary(max_size=300),
    meters=st.lists(_texts, max_size=4).map(tuple),
    profiles=st.lists(st.tuples(_texts, _texts), max_size=3).map(tuple),
    revoked=st.one_of(st.booleans(), st.integers(0, 1)),  # an int takes the generic path
    registry_time_s=st.integers(-1, 2**40),
    last_seq=st.integers(-1, 2**40),
    last_batch_hash=st.binary(max_size=32),
    last_height=st.integers(0, 2**40),
    registers=st.lists(st.tuples(_texts, _texts, st.one_of(
        st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True), st.booleans())),
        max_size=4).map(tuple),
    batches=st.integers(0, 2**40),
    violations=st.lists(st.tuples(_texts, st.integers(0, 2**32)), max_size=4).map(tuple),
    seen_mask=st.one_of(st.just(rules.SEEN_ALL), st.integers(0, rules.SEEN_ALL)),
)


@given(_devices)
def test_device_record_is_the_portable_encoding(device: Device) -> None:
    assert device.encoded == cbor.encode(device.to_obj())
