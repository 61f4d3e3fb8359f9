"""Deterministic CBOR: shortest forms, RFC 8949 Appendix A, every rejection, cbor2 interop,
and property tests (decode or raise DecodeError; round trips are identities)."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.portable import cbor
from edge.portable.cbor import Tag
from edge.portable.errors import (
    DecodeError,
    LimitError,
    LocalProtocolError,
    NonCanonicalError,
    TrailingBytesError,
    TruncatedError,
    UnsupportedError,
)

from .helpers import signed_typical_batch

PROPERTY = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- shortest forms at every boundary ---------------------------------------------------

INTEGER_BOUNDARIES = [
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (255, "18ff"),
    (256, "190100"),
    (65535, "19ffff"),
    (65536, "1a00010000"),
    (2**32 - 1, "1affffffff"),
    (2**32, "1b0000000100000000"),
    (2**64 - 1, "1bffffffffffffffff"),
    (-1, "20"),
    (-24, "37"),
    (-25, "3818"),
    (-256, "38ff"),
    (-257, "390100"),
    (-65536, "39ffff"),
    (-65537, "3a00010000"),
    (-(2**32), "3affffffff"),
    (-(2**32) - 1, "3b0000000100000000"),
    (-(2**64), "3bffffffffffffffff"),
]


@pytest.mark.parametrize(("value", "hex_"), INTEGER_BOUNDARIES)
def test_integers_take_the_shortest_head(value: int, hex_: str) -> None:
    assert cbor.encode(value).hex() == hex_
    assert cbor.decode(bytes.fromhex(hex_)) == value


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 65535, 65536])
def test_string_and_container_lengths_take_the_shortest_head(length: int) -> None:
    raw = b"x" * length
    for value, major in ((raw, 2), (raw.decode(), 3), ([0] * length, 4)):
        encoded = cbor.encode(value)
        if length < 24:
            head = bytes([(major << 5) | length])
        elif length < 256:
            head = bytes([(major << 5) | 24, length])
        elif length < 65536:
            head = bytes([(major << 5) | 25]) + struct.pack(">H", length)
        else:
            head = bytes([(major << 5) | 26]) + struct.pack(">I", length)
        assert encoded.startswith(head)
        if len(encoded) <= cbor.MAX_SIZE_BYTES and length <= cbor.MAX_ITEMS:
            assert cbor.decode(encoded) == value


def test_out_of_range_integers_are_local_misuse() -> None:
    for value in (2**64, -(2**64) - 1):
        with pytest.raises(LocalProtocolError):
            cbor.encode(value)


def test_unencodable_objects_are_local_misuse() -> None:
    # Keys the decoder refuses are refused when encoding too, so that every encoding
    # decodes; and tag numbers must be unsigned integers.
    unreadable_keys = ({1.0: 1}, {True: 1}, {None: 1}, {(1,): 1})
    for value in ({1, 2}, object(), 1j, Tag(-1, 0), Tag("x", 0), Tag(True, 0), *unreadable_keys):
        with pytest.raises(LocalProtocolError):
            cbor.encode(value)


FLOATS = [
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.0, "f93c00"),
    (1.5, "f93e00"),
    (65504.0, "f97bff"),
    (5.960464477539063e-8, "f90001"),  # smallest half subnormal
    (6.097555160522461e-5, "f903ff"),  # largest half subnormal
    (6.103515625e-5, "f90400"),  # smallest half normal
    (230.5, "f95b34"),
    (65520.0, "fa477ff000"),  # just above half range
    (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"),
    (1.401298464324817e-45, "fa00000001"),  # smallest single subnormal
    (1.0000001192092896, "fa3f800001"),
    (0.1, "fb3fb999999999999a"),
    (1.1, "fb3ff199999999999a"),
    (1.0e300, "fb7e37e43c8800759c"),
    (float("inf"), "f97c00"),
    (float("-inf"), "f9fc00"),
]


@pytest.mark.parametrize(("value", "hex_"), FLOATS)
def test_floats_take_the_shortest_exact_width(value: float, hex_: str) -> None:
    assert cbor.encode(value).hex() == hex_
    decoded = cbor.decode(bytes.fromhex(hex_))
    assert isinstance(decoded, float)
    assert decoded == value
    assert math.copysign(1.0, decoded) == math.copysign(1.0, value)


def test_every_half_precision_float_round_trips() -> None:
    for bits in range(0x10000):
        encoded = b"\xf9" + struct.pack(">H", bits)
        value = struct.unpack(">e", encoded[1:])[0]
        if value != value:
            continue
        assert cbor.encode(value) == encoded
        assert cbor.decode(encoded) == value


def test_nan_has_one_form() -> None:
    assert cbor.encode(float("nan")) == bytes.fromhex("f97e00")
    assert math.isnan(cbor.decode(bytes.fromhex("f97e00")))  # type: ignore[arg-type]
    for other in ("f97e01", "f9fe00", "fa7fc00000", "fb7ff8000000000000"):
        with pytest.raises(NonCanonicalError) as info:
            cbor.decode(bytes.fromhex(other))
        assert info.value.code == "cbor.noncanonical"


def test_simple_values() -> None:
    assert cbor.encode([False, True, None]).hex() == "83f4f5f6"
    assert cbor.decode(bytes.fromhex("83f4f5f6")) == [False, True, None]


def test_map_keys_sort_bytewise_on_their_encodings() -> None:
    # RFC 8949 §4.2.1: lexicographic order of the encoded keys, so small unsigned ints,
    # then negative ints, then longer ints, then text, with shorter strings of a major
    # type first because their length is in the head.
    value = {"aa": 1, "b": 2, 100: 3, -1: 4, 10: 5, b"z": 6, -100: 7, 24: 8}
    encoded = cbor.encode(value)
    assert encoded.hex() == ("a80a051818081864032004386307417a0661620262616101")
    assert cbor.decode(encoded) == value


def test_tags() -> None:
    assert cbor.encode(Tag(18, [])).hex() == "d280"
    assert cbor.encode(Tag(24, b"")).hex() == "d81840"
    assert cbor.encode(Tag(2**32, 0)).hex() == "db000000010000000000"
    assert cbor.decode(bytes.fromhex("d9d9f700")) == Tag(55799, 0)
    assert repr(Tag(1, 2)) == "Tag(1, 2)"
    assert Tag(1, 2) != (1, 2)


# -- RFC 8949 Appendix A ----------------------------------------------------------------

APPENDIX_A = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (Tag(2, bytes.fromhex("010000000000000000")), "c249010000000000000000"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (Tag(3, bytes.fromhex("010000000000000000")), "c349010000000000000000"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.0, "f93c00"),
    (1.1, "fb3ff199999999999a"),
    (1.5, "f93e00"),
    (65504.0, "f97bff"),
    (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"),
    (1.0e300, "fb7e37e43c8800759c"),
    (5.960464477539063e-8, "f90001"),
    (0.00006103515625, "f90400"),
    (-4.0, "f9c400"),
    (-4.1, "fbc010666666666666"),
    (float("inf"), "f97c00"),
    (float("-inf"), "f9fc00"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (Tag(0, "2013-03-21T20:04:00Z"), "c074323031332d30332d32315432303a30343a30305a"),
    (Tag(1, 1363896240), "c11a514b67b0"),
    (Tag(1, 1363896240.5), "c1fb41d452d9ec200000"),
    (Tag(23, bytes.fromhex("01020304")), "d74401020304"),
    (Tag(24, bytes.fromhex("6449455446")), "d818456449455446"),
    (Tag(32, "http://www.example.com"), "d82076687474703a2f2f7777772e6578616d706c652e636f6d"),
    (b"", "40"),
    (bytes.fromhex("01020304"), "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    (
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
        "a56161614161626142616361436164614461656145",
    ),
]

# Appendix A items outside the subset, with the error the strict decoder gives.
APPENDIX_A_REJECTED = [
    ("f0", UnsupportedError),  # simple(16)
    ("f8ff", UnsupportedError),  # simple(255)
    ("f7", UnsupportedError),  # undefined
    ("5f42010243030405ff", NonCanonicalError),  # indefinite byte string
    ("7f657374726561646d696e67ff", NonCanonicalError),  # indefinite text string
    ("9fff", NonCanonicalError),
    ("9f018202039f0405ffff", NonCanonicalError),
    ("83018202039f0405ff", NonCanonicalError),
    ("bf61610161629f0203ffff", NonCanonicalError),
    ("826161bf61626163ff", NonCanonicalError),
    ("bf6346756ef563416d7421ff", NonCanonicalError),
    ("f97e00f97e00", TrailingBytesError),
]


@pytest.mark.parametrize(("value", "hex_"), APPENDIX_A)
def test_rfc8949_appendix_a(value: object, hex_: str) -> None:
    data = bytes.fromhex(hex_)
    decoded = cbor.decode(data)
    assert decoded == value
    assert cbor.encode(decoded) == data
    assert cbor.encode(value) == data


@pytest.mark.parametrize(("hex_", "error"), APPENDIX_A_REJECTED)
def test_rfc8949_appendix_a_outside_the_subset(hex_: str, error: type[DecodeError]) -> None:
    with pytest.raises(error) as info:
        cbor.decode(bytes.fromhex(hex_))
    assert info.value.code == error.code


# -- rejections -------------------------------------------------------------------------

REJECTIONS = [
    ("", TruncatedError),
    ("18", TruncatedError),
    ("1901", TruncatedError),
    ("62c3", TruncatedError),
    ("8301", TruncatedError),
    ("a1010200", TrailingBytesError),
    ("0000", TrailingBytesError),
    ("1817", NonCanonicalError),  # 23 with a one-byte argument
    ("1900ff", NonCanonicalError),
    ("1a0000ffff", NonCanonicalError),
    ("1b00000000ffffffff", NonCanonicalError),
    ("3817", NonCanonicalError),
    ("5801ff", NonCanonicalError),
    ("9800", NonCanonicalError),
    ("b800", NonCanonicalError),
    ("d81700", NonCanonicalError),
    ("fa3fc00000", NonCanonicalError),  # 1.5 as single
    ("fb3ff8000000000000", NonCanonicalError),  # 1.5 as double
    ("5f40ff", NonCanonicalError),  # indefinite length
    ("ff", NonCanonicalError),  # break outside an indefinite item
    ("a202010102", NonCanonicalError),  # keys 2, 1: unsorted
    ("a201010102", NonCanonicalError),  # key 1 twice
    ("a2616201616101", NonCanonicalError),  # "b" before "a"
    ("a2200101", NonCanonicalError),  # -1 before 1
    ("a1f93c0001", UnsupportedError),  # float key 1.0
    ("a1f501", UnsupportedError),  # key true
    ("a1f601", UnsupportedError),  # key null
    ("a1800001", UnsupportedError),  # array key
    ("a2c10100c1f93c0001", NonCanonicalError),  # keys Tag(1, 1), Tag(1, 1.0): equal values
    ("61ff", DecodeError),  # invalid UTF-8
    ("62c080", DecodeError),  # overlong NUL
    ("63eda080", DecodeError),  # surrogate U+D800
    ("64f4908080", DecodeError),  # above U+10FFFF
    ("62c328", DecodeError),  # bad continuation
    ("e0", UnsupportedError),  # simple(0)
    ("f7", UnsupportedError),  # undefined
    ("f818", UnsupportedError),  # simple in one byte
    ("fc", UnsupportedError),  # reserved
    ("1c", DecodeError),  # reserved additional info
    ("5d", DecodeError),
]


@pytest.mark.parametrize(("hex_", "error"), REJECTIONS)
def test_rejections_raise_their_class_and_code(hex_: str, error: type[DecodeError]) -> None:
    with pytest.raises(error) as info:
        cbor.decode(bytes.fromhex(hex_))
    assert info.value.code == error.code


def test_limits() -> None:
    deep_ok = b"\x81" * cbor.MAX_DEPTH + b"\x00"
    assert cbor.decode(deep_ok) is not None
    with pytest.raises(LimitError) as info:
        cbor.decode(b"\x81" * (cbor.MAX_DEPTH + 1) + b"\x00")
    assert info.value.code == "cbor.limit"
    with pytest.raises(LimitError):
        cbor.decode(b"\x82\x81\x81\x00\x00", max_depth=1)
    items = cbor.MAX_ITEMS
    assert len(cbor.decode(b"\x99" + struct.pack(">H", items) + b"\x00" * items)) == items  # type: ignore[arg-type]
    with pytest.raises(LimitError):
        cbor.decode(b"\x99" + struct.pack(">H", items + 1) + b"\x00" * (items + 1))
    with pytest.raises(LimitError):
        cbor.decode(b"\xa3\x00\x00\x01\x00\x02\x00", max_items=2)
    size = cbor.MAX_SIZE_BYTES
    with pytest.raises(LimitError):
        cbor.decode(b"\x5a" + struct.pack(">I", size) + b"\x00" * size)
    with pytest.raises(LimitError):
        cbor.decode(b"\x00", max_size_bytes=0)
    with pytest.raises(LocalProtocolError):
        cbor.encode(_nested(cbor.MAX_DEPTH + 1))
    with pytest.raises(LocalProtocolError):
        cbor.decode("text")  # type: ignore[arg-type]


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def test_huge_declared_lengths_are_truncated_not_allocated() -> None:
    for hex_ in ("5bffffffffffffffff", "7b0000000100000000", "9a00010000", "ba00010000", "990fff"):
        with pytest.raises((TruncatedError, LimitError)):
            cbor.decode(bytes.fromhex(hex_))


# -- whole, prefixes, trailing bytes ----------------------------------------------------

CODEC_INPUTS = [bytes.fromhex(hex_) for _, hex_ in APPENDIX_A] + [signed_typical_batch()]


@pytest.mark.parametrize("data", CODEC_INPUTS, ids=lambda d: d[:8].hex())
def test_whole_prefixes_and_trailing_bytes(data: bytes) -> None:
    value = cbor.decode(data)
    assert cbor.encode(value) == data
    for end in range(len(data)):
        with pytest.raises(TruncatedError):
            cbor.decode(data[:end])
    for extra in (b"\x00", b"\xff", data):
        with pytest.raises(TrailingBytesError):
            cbor.decode(data + extra)


# -- interop with cbor2 -----------------------------------------------------------------


def _to_cbor2(value: object) -> object:
    if isinstance(value, Tag):
        return cbor2.CBORTag(value.tag, _to_cbor2(value.value))
    if isinstance(value, list):
        return [_to_cbor2(item) for item in value]
    if isinstance(value, dict):
        return {_to_cbor2(k): _to_cbor2(v) for k, v in value.items()}
    return value


def _from_cbor2(value: object) -> object:
    if isinstance(value, cbor2.CBORTag):
        return Tag(value.tag, _from_cbor2(value.value))
    if isinstance(value, (list, tuple)):  # cbor2 6 keeps tag contents immutable
        return [_from_cbor2(item) for item in value]
    if isinstance(value, Mapping):  # dict, or cbor2's frozendict inside a tag
        return {_from_cbor2(k): _from_cbor2(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        raise AssertionError("cbor2 decoded a map as a set")
    return value


def _same(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to NaN and tells -0.0 from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if a != a and b != b:
            return True
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Tag) and isinstance(b, Tag):
        return a.tag == b.tag and _same(a.value, b.value)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _cbor2_decode(data: bytes) -> object:
    # The strategies use tag numbers cbor2 gives no meaning to, so they stay CBORTag.
    return cbor2.loads(data)


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
KEYS = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(KEYS, children, max_size=5)
        | st.builds(Tag, st.sampled_from([18, 61, 999, 65536, 2**40]), children)
    ),
    max_leaves=12,
)


@PROPERTY
@given(VALUES)
def test_cbor2_decodes_our_encoding_and_canonical_agrees(value: object) -> None:
    ours = cbor.encode(value)
    assert _same(_from_cbor2(_cbor2_decode(ours)), value)
    theirs = cbor2.dumps(_to_cbor2(value), canonical=True)
    if _keys_sort_alike(value):
        assert theirs == ours
    assert _same(_from_cbor2(_cbor2_decode(theirs)), value)


def _keys_sort_alike(value: object) -> bool:
    """False when a map holds keys whose encodings differ in length and the shorter one
    sorts bytewise after the longer: there cbor2's canonical mode (RFC 7049 §3.9,
    length first) and RFC 8949 §4.2.1 (bytewise) disagree."""
    if isinstance(value, Tag):
        return _keys_sort_alike(value.value)
    if isinstance(value, list):
        return all(_keys_sort_alike(item) for item in value)
    if isinstance(value, dict):
        keys = [cbor.encode(key) for key in value]
        if sorted(keys) != sorted(keys, key=lambda k: (len(k), k)):
            return False
        return all(_keys_sort_alike(item) for item in value.values())
    return True


def test_cbor2_canonical_order_is_length_first_where_rfc8949_is_bytewise() -> None:
    # Key 24 encodes as 1818 (2 bytes), key -1 as 20 (1 byte).  RFC 8949 §4.2.1 sorts
    # bytewise: 1818 < 20, so 24 comes first.  cbor2 canonical=True sorts the shorter
    # encoding first (the RFC 7049 §3.9 rule).  We follow RFC 8949.
    value = {24: "a", -1: "b"}
    assert cbor.encode(value).hex() == "a218186161206162"
    assert cbor2.dumps(value, canonical=True).hex() == "a220616218186161"
    assert cbor2.loads(cbor.encode(value)) == value


def test_cbor2_agrees_on_the_appendix_a_values() -> None:
    for value, hex_ in APPENDIX_A:
        assert cbor2.dumps(_to_cbor2(value), canonical=True).hex() == hex_


# -- properties -------------------------------------------------------------------------


@PROPERTY
@given(VALUES)
def test_values_round_trip_and_reencoding_is_identity(value: object) -> None:
    encoded = cbor.encode(value)
    decoded = cbor.decode(encoded)
    assert _same(decoded, _normalise(value))
    assert cbor.encode(decoded) == encoded


def _normalise(value: object) -> object:
    if isinstance(value, Tag):
        return Tag(value.tag, _normalise(value.value))
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


@PROPERTY
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)


@PROPERTY
@given(VALUES, st.data())
def test_mutated_encodings_decode_or_raise_decode_error(value: object, data: st.DataObject) -> None:
    encoded = bytearray(cbor.encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.integers(min_value=0, max_value=255))
        if action == "insert" or position == len(encoded):
            encoded.insert(position, byte)
        elif action == "flip":
            encoded[position] ^= byte or 1
        else:
            del encoded[position]
    _decode_or_decode_error(bytes(encoded))


def _decode_or_decode_error(data: bytes) -> None:
    try:
        value = cbor.decode(data)
    except DecodeError as exc:
        assert exc.code.startswith("cbor.")
        return
    assert cbor.encode(value) == data
