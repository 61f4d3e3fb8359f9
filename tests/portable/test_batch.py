"""The batch envelope: round trips, every validation code, kid binding, SenML JSON,
and the 1 KiB budget of a typical batch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.portable import batch, cbor, cose, p256
from edge.portable.batch import Batch, MeterGroup, Record
from edge.portable.errors import (
    BatchError,
    DecodeError,
    KidMismatchError,
    LocalProtocolError,
    RemoteProtocolError,
)

from .helpers import DEVICE_SECRET, NOW_S, typical_batch

KEY = p256.SigningKey.from_bytes(DEVICE_SECRET)


def _obj() -> dict[Any, Any]:
    obj = typical_batch().to_obj()
    assert isinstance(obj, dict)
    return obj


def test_typical_batch_round_trips() -> None:
    original = typical_batch()
    data = batch.sign(original, KEY.sign)
    message, opened = batch.open_message(data)
    cose.verify(message, KEY.public_key())
    assert opened.device_id == original.device_id
    assert (opened.seq, opened.sent_at_s, opened.clock_synced) == (42, NOW_S, True)
    assert opened.meters == original.meters
    assert opened.encode() == original.encode() == message.payload
    assert opened.reading_count() == 2
    assert [group.status() for group in opened.meters] == ["ok", "ok"]


def test_typical_signed_batch_fits_one_coap_datagram() -> None:
    data = batch.sign(typical_batch(), KEY.sign)
    assert sum(len(group.records) for group in typical_batch().meters) == 14
    assert len(data) < 1024, len(data)


def test_status_records_volume_and_unsynced_clock() -> None:
    groups = [
        MeterGroup("meter-a", NOW_S, [Record.status("timeout")]),
        MeterGroup("gas.1", NOW_S, [Record("0-1:24.2.1", 1234.5, "m3"), Record.status("ok")]),
        MeterGroup("meter-c", NOW_S, [Record("1-0:99.7.0", 3, "W")]),  # unknown OBIS
    ]
    original = Batch("gw:2", 0, 0, False, groups)
    obj = cbor.decode(original.encode())
    assert isinstance(obj, dict)
    assert obj[batch.K_PACK][0] == {-2: "meter-a/", -3: NOW_S, 0: "status", 3: "timeout"}
    assert obj[batch.K_PACK][1][batch.L_S] == 1234.5
    assert obj[batch.K_CLOCK] == 0
    again = Batch.from_obj(obj)
    assert again.meters == groups
    assert again.meters[0].status() == "timeout"
    assert not again.clock_synced


def _set(path: tuple[Any, ...], value: object) -> dict[Any, Any]:
    obj = _obj()
    target: Any = obj
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


_DELETE = object()
P = batch.K_PACK

# (name, path, value, code): the smallest change to a valid batch that breaks one rule.
BAD = [
    ("version 2", (0,), 2, "version"),
    ("version missing", (0,), _DELETE, "version"),
    ("version true", (0,), True, "version"),
    ("version 1.0", (0,), 1.0, "version"),
    ("unknown key", (6,), 0, "field"),
    ("text key", ("seq",), 0, "field"),
    ("device id missing", (1,), _DELETE, "device_id"),
    ("device id empty", (1,), "", "device_id"),
    ("device id with slash", (1,), "gw/1", "device_id"),
    ("device id with +", (1,), "gw+1", "device_id"),
    ("device id too long", (1,), "g" * 65, "device_id"),
    ("device id bytes", (1,), b"gw-0001", "device_id"),
    ("seq negative", (2,), -1, "seq"),
    ("seq 2**63", (2,), 2**63, "seq"),
    ("seq float", (2,), 42.0, "seq"),
    ("seq missing", (2,), _DELETE, "seq"),
    ("sent_at negative", (3,), -1, "time"),
    ("sent_at 2**40", (3,), 2**40, "time"),
    ("sent_at float", (3,), 1.5, "time"),
    ("bt missing", (P, 0, -3), _DELETE, "time"),
    ("bt text", (P, 7, -3), "now", "time"),
    ("clock 2", (4,), 2, "clock"),
    ("clock true", (4,), True, "clock"),
    ("clock missing", (4,), _DELETE, "clock"),
    ("pack missing", (P,), _DELETE, "senml"),
    ("pack empty", (P,), [], "senml"),
    ("pack a map", (P,), {}, "senml"),
    ("record not a map", (P, 1), [0, "x"], "senml"),
    ("unknown SenML label", (P, 1, 6), 1, "senml"),
    ("bt without bn", (P, 1, -3), NOW_S, "senml"),
    ("first record without bn", (P, 0, -2), _DELETE, "meter"),
    ("bn without slash", (P, 0, -2), "ISK5-0001", "meter"),
    ("bn empty id", (P, 0, -2), "/", "meter"),
    ("bn bad id", (P, 0, -2), "a b/", "meter"),
    ("bn twice the same meter", (P, 7, -2), "ISK5-0001/", "meter"),
    ("name missing", (P, 1, 0), _DELETE, "obis"),
    ("name not OBIS", (P, 1, 0), "energy", "obis"),
    ("OBIS group > 255", (P, 1, 0), "1-0:256.8.0", "obis"),
    ("OBIS four groups", (P, 1, 0), "1-0:1.8", "obis"),
    ("OBIS empty group", (P, 1, 0), "1-0:.8.0", "obis"),
    ("OBIS leading zero", (P, 0, 0), "1-0:01.8.0", "obis"),
    ("unit missing", (P, 1, 1), _DELETE, "unit"),
    ("unit kWh", (P, 0, 1), "kWh", "unit"),
    ("unit wrong for OBIS", (P, 2, 1), "V", "unit"),
    ("value missing", (P, 2, 2), _DELETE, "value"),
    ("value text", (P, 2, 2), "1530", "value"),
    ("value true", (P, 2, 2), True, "value"),
    ("value NaN", (P, 2, 2), float("nan"), "value"),
    ("value inf", (P, 2, 2), float("inf"), "value"),
    ("energy as v", (P, 0, 2), 1, "value"),
    ("energy negative", (P, 0, 5), -1, "value"),
    ("vs on a reading", (P, 2, 3), "ok", "value"),
    ("status with unit", (P, 6), {0: "status", 3: "ok", 1: "W"}, "value"),
    ("status code empty", (P, 6), {0: "status", 3: ""}, "value"),
    ("status code too long", (P, 6), {0: "status", 3: "x" * 17}, "value"),
    ("status code upper case", (P, 6), {0: "status", 3: "OK"}, "value"),
    ("status code not text", (P, 6), {0: "status", 3: 1}, "value"),
]


@pytest.mark.parametrize(("name", "path", "value", "code"), BAD, ids=[b[0] for b in BAD])
def test_validation_codes(name: str, path: tuple[Any, ...], value: object, code: str) -> None:
    obj = _set(path, value)
    with pytest.raises(BatchError) as info:
        Batch.from_obj(obj)
    assert info.value.code == "batch." + code, str(info.value)


@pytest.mark.parametrize(
    ("name", "pack", "code"),
    [
        (
            "too many meters",
            [{-2: f"m{i}/", -3: 0, 0: "status", 3: "ok"} for i in range(33)],
            "senml",
        ),
        (
            "too many records",
            [{-2: "m/", -3: 0, 0: "status", 3: "ok"}]
            + [{0: "1-0:1.7.0", 1: "W", 2: i} for i in range(32)],
            "senml",
        ),
        (
            "too many in all",
            [{-2: f"m{i}/", -3: 0, 0: "1-0:1.7.0", 1: "W", 2: 0} for i in range(257)],
            "senml",
        ),
    ],
)
def test_pack_limits(name: str, pack: list[object], code: str) -> None:
    obj = _obj()
    obj[P] = pack
    with pytest.raises(BatchError) as info:
        Batch.from_obj(obj)
    assert info.value.code == "batch." + code


def test_not_a_map() -> None:
    with pytest.raises(BatchError) as info:
        Batch.from_obj([1])
    assert info.value.code == "batch.field"


def test_invalid_batches_are_local_misuse_when_encoding() -> None:
    bad = [
        Batch("gw/1", 1, NOW_S, True, typical_batch().meters),
        Batch("gw", -1, NOW_S, True, typical_batch().meters),
        Batch("gw", 1, NOW_S, True, []),
        Batch("gw", 1, NOW_S, True, [MeterGroup("m", NOW_S, [Record("1-0:1.8.0", -5, "J")])]),
        Batch("gw", 1, NOW_S, True, [MeterGroup("m", NOW_S, [])]),
    ]
    for value in bad:
        with pytest.raises(LocalProtocolError) as info:
            value.encode()
        assert info.value.code.startswith("local.")


def test_kid_mismatch() -> None:
    payload = typical_batch("gw-0001").encode()
    data = cose.sign1(payload, b"gw-0002", KEY.sign)
    with pytest.raises(KidMismatchError) as info:
        batch.open_message(data)
    assert info.value.code == "cose.kid"


def test_payload_errors_keep_their_class() -> None:
    data = cose.sign1(b"\xa1\x01", b"gw-0001", KEY.sign)
    with pytest.raises(DecodeError) as info:
        batch.open_message(data)
    assert info.value.code == "cbor.truncated"
    assert str(info.value).startswith("payload: ")
    data = cose.sign1(cbor.encode([1]), b"gw-0001", KEY.sign)
    with pytest.raises(BatchError):
        batch.open_message(data)


def test_senml_json_both_ways() -> None:
    groups = [*typical_batch().meters, MeterGroup("m3", NOW_S, [Record.status("crc")])]
    pack = batch.groups_to_senml_json(groups)
    assert pack[0] == {
        "bn": "ISK5-0001/",
        "bt": NOW_S - 5,
        "n": "1-0:1.8.0",
        "u": "J",
        "s": 123_456_789_000,
    }
    assert pack[2] == {"n": "1-0:1.7.0", "u": "W", "v": 1530.25}
    assert pack[-1] == {"bn": "m3/", "bt": NOW_S, "n": "status", "vs": "crc"}
    text = json.dumps(pack)
    assert batch.groups_from_senml_json(json.loads(text)) == groups


def test_senml_json_errors() -> None:
    for pack, code in (
        ({"bn": "m/"}, "senml"),
        (["record"], "senml"),
        ([{"bn": "m/", "bt": 0, "n": "status", "vs": "ok", "ut": 5}], "senml"),
        ([{"bn": "m/", "bt": 0, "n": "1-0:1.8.0", "u": "J", "v": 5}], "value"),
    ):
        with pytest.raises(BatchError) as info:
            batch.groups_from_senml_json(pack)
        assert info.value.code == "batch." + code


def test_valid_ids_and_obis() -> None:
    assert batch.valid_id("a.B_c:d-9")
    assert not batch.valid_id(7)
    assert batch.valid_obis("0-1:24.2.1")
    assert batch.valid_obis("0-0:0.0.255")
    for name in (
        "1-0-1:1.8.0",
        "1:0-1.8.0",
        "1-0:1.8.0.0",
        "1-0:1.8.x",
        "1-0:0001.8.0",
        "01-0:1.8.0",
    ):
        assert not batch.valid_obis(name)
    assert repr(Record("1-0:1.7.0", 1, "W")) == "Record('1-0:1.7.0', 1, 'W')"
    assert Record("n", 1) != ("n", 1)
    assert MeterGroup("m", 0, []) != "m"


# -- properties -------------------------------------------------------------------------

BATCH_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats()
    | st.sampled_from(["1-0:1.8.0", "J", "W", "m/", "status", "ok", "gw-0001", "", "1-0:01.8.0"])
    | st.binary(max_size=8)
)
BATCH_VALUES = st.recursive(
    BATCH_LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from([-3, -2, 0, 1, 2, 3, 4, 5, 6, "n"]), children, max_size=6)
    ),
    max_leaves=16,
)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(BATCH_VALUES)
def test_from_obj_returns_a_batch_or_raises_batch_error(obj: object) -> None:
    try:
        value = Batch.from_obj(obj)
    except BatchError as exc:
        assert exc.code.startswith("batch.")
        return
    assert cbor.decode(value.encode()) == obj


@settings(max_examples=250, deadline=None, derandomize=True)
@given(st.data())
def test_mutated_messages_raise_only_remote_protocol_errors(data: st.DataObject) -> None:
    message = bytearray(batch.sign(typical_batch(), KEY.sign))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=0, max_value=len(message) - 1))
        message[index] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        parsed, _ = batch.open_message(bytes(message))
        cose.verify(parsed, KEY.public_key())
    except RemoteProtocolError as exc:
        assert exc.code.split(".")[0] in ("cbor", "cose", "batch")
