"""Modbus RTU/TCP codec: whole frames, byte by byte, trailing garbage, bad CRC, limits."""

from __future__ import annotations

import struct

import pytest

from edge.portable import modbus
from edge.portable.errors import FrameError, LocalProtocolError

REQUEST = bytes.fromhex("01040000000271cb")  # SDM120: read 2 input registers from 0


def response_frame(unit: int = 1, registers: tuple[int, ...] = (0x4366, 0x8000)) -> bytes:
    return modbus.encode_rtu(unit, modbus.encode_read_response(4, list(registers)))


def test_encode_read_request_matches_known_frame() -> None:
    assert modbus.encode_rtu(1, modbus.encode_read_request(4, 0, 2)) == REQUEST


def test_decode_whole_request() -> None:
    unit, pdu = modbus.decode_rtu(REQUEST)
    assert (unit, modbus.decode_read_request(pdu)) == (1, (4, 0, 2))


@pytest.mark.parametrize("role", ["request", "response"])
def test_stream_whole_bytewise_and_with_trailing_garbage(role: str) -> None:
    frame = REQUEST if role == "request" else response_frame()
    expected = modbus.decode_rtu(frame)
    whole = modbus.RtuDecoder(role)
    whole.feed(frame)
    assert whole.next_frame() == expected
    bytewise = modbus.RtuDecoder(role)
    got = []
    for i in range(len(frame)):
        bytewise.feed(frame[i : i + 1])
        got.append(bytewise.next_frame())
    assert got[:-1] == [None] * (len(frame) - 1) and got[-1] == expected
    trailing = modbus.RtuDecoder(role)
    trailing.feed(frame + b"\x01\x03\x00")  # garbage that looks like a frame start
    assert trailing.next_frame() == expected
    assert trailing.next_frame() is None
    with pytest.raises(modbus.TruncatedFrameError):
        trailing.end_of_frame()
    trailing.feed(frame)
    assert trailing.next_frame() == expected
    noise = modbus.RtuDecoder(role)
    noise.feed(frame + b"\x00\xff\xff")  # garbage no function code explains
    assert noise.next_frame() == expected
    with pytest.raises(FrameError):
        noise.next_frame()
        noise.end_of_frame()
    noise.feed(frame)
    assert noise.next_frame() == expected


def test_two_frames_in_one_chunk() -> None:
    d = modbus.RtuDecoder("response")
    d.feed(response_frame(1) + response_frame(2))
    assert d.next_frame() == (1, bytes.fromhex("040443668000"))
    assert d.next_frame() == (2, bytes.fromhex("040443668000"))


def test_bad_crc_is_reported_and_decoder_goes_on() -> None:
    bad = bytearray(response_frame())
    bad[-1] ^= 0x01
    d = modbus.RtuDecoder("response")
    d.feed(bytes(bad) + response_frame(7))
    with pytest.raises(modbus.CrcError) as info:
        d.next_frame()
    assert info.value.code == "frame.crc"
    assert d.next_frame() == (7, bytes.fromhex("040443668000"))


def test_short_read_is_truncated_at_end_of_frame() -> None:
    d = modbus.RtuDecoder("response")
    d.feed(response_frame()[:5])
    assert d.next_frame() is None
    with pytest.raises(modbus.TruncatedFrameError) as info:
        d.end_of_frame()
    assert info.value.code == "frame.truncated"


def test_exception_response() -> None:
    frame = modbus.encode_rtu(1, modbus.encode_exception(4, 2))
    d = modbus.RtuDecoder("response")
    d.feed(frame)
    _unit, pdu = d.next_frame() or (0, b"")
    with pytest.raises(modbus.ModbusExceptionError) as info:
        modbus.decode_read_response(4, 2, pdu)
    assert (info.value.exception_code, info.value.code) == (2, "modbus.exception")
    assert "illegal data address" in str(info.value)


@pytest.mark.parametrize(("pdu", "error"), [
    (b"\x04", modbus.TruncatedFrameError),
    (b"\x03\x04\x00\x00\x00\x00", modbus.MalformedFrameError),   # wrong function
    (b"\x04\x06\x00\x00\x00\x00", modbus.MalformedFrameError),   # byte count lies
    (b"\x04\x04\x00\x00\x00", modbus.MalformedFrameError),       # short data
    (b"\x84\x02\x00", modbus.MalformedFrameError),               # long exception
])
def test_garbled_responses(pdu: bytes, error: type[FrameError]) -> None:
    with pytest.raises(error):
        modbus.decode_read_response(4, 2, pdu)


def test_unknown_function_cannot_be_framed() -> None:
    d = modbus.RtuDecoder("request")
    d.feed(b"\x01\x2b\x0e\x01")
    with pytest.raises(modbus.UnsupportedFunctionError):
        d.next_frame()
    assert d.buffered() == 0


def test_overlong_garbage_hits_limit() -> None:
    d = modbus.RtuDecoder("response")
    d.feed(b"\x01\x03\xff" + b"\x00" * 300)
    with pytest.raises(modbus.FrameLimitError):
        d.next_frame()


def test_mbap_roundtrip_bytewise_and_limits() -> None:
    frame = modbus.encode_mbap(0x1234, 5, modbus.encode_read_request(3, 0x5000, 8))
    assert frame[:7] == bytes.fromhex("12340000000605")
    d = modbus.MbapDecoder()
    got = []
    for b in frame + frame[:3]:
        d.feed(bytes([b]))
        got.append(d.next_frame())
    assert [g for g in got if g] == [(0x1234, 5, frame[7:])]
    bad = modbus.MbapDecoder()
    bad.feed(struct.pack(">HHHB", 1, 7, 6, 1) + b"\x03\x00\x00\x00\x01")
    with pytest.raises(modbus.MalformedFrameError):
        bad.next_frame()
    big = modbus.MbapDecoder()
    big.feed(struct.pack(">HHHB", 1, 0, 400, 1))
    with pytest.raises(modbus.FrameLimitError):
        big.next_frame()


@pytest.mark.parametrize("dtype", sorted(modbus.DATA_TYPES))
@pytest.mark.parametrize("word_order", modbus.ORDERS)
@pytest.mark.parametrize("byte_order", modbus.ORDERS)
def test_value_roundtrip(dtype: str, word_order: str, byte_order: str) -> None:
    value = -1234.5 if dtype.startswith("float") else (123 if dtype.startswith("u") else -123)
    words = modbus.encode_value(value, dtype, word_order, byte_order)
    assert len(words) == modbus.registers_for(dtype)
    assert modbus.decode_value(words, dtype, word_order, byte_order) == value


def test_word_and_byte_order_layouts() -> None:
    assert modbus.encode_value(230.0, "float32", "big", "big") == [0x4366, 0x0000]
    assert modbus.encode_value(0x01020304, "uint32", "little", "big") == [0x0304, 0x0102]
    assert modbus.encode_value(0x01020304, "uint32", "big", "little") == [0x0201, 0x0403]


def test_local_misuse_is_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        modbus.encode_read_request(4, 0, 126)
    with pytest.raises(LocalProtocolError):
        modbus.encode_read_request(5, 0, 1)
    with pytest.raises(LocalProtocolError):
        modbus.decode_value([1], "float32", "big", "big")


# -- ReadTransaction: the master's side with timers as data ----------------------------


def transaction(now_s: float = 100.0) -> modbus.ReadTransaction:
    return modbus.ReadTransaction(1, 4, 0, 2, now_s, timeout_s=0.5, silence_s=0.004)


def test_transaction_whole_and_bytewise() -> None:
    t = transaction()
    assert t.request == REQUEST and t.next_deadline() == 100.5
    t.receive(response_frame(), 100.1)
    assert t.done() and t.registers == [0x4366, 0x8000]
    b = transaction()
    for i, byte in enumerate(response_frame()):
        assert not b.done()
        b.receive(bytes([byte]), 100.0 + i * 0.001)
        assert b.done() or b.next_deadline() == pytest.approx(100.0 + i * 0.001 + 0.004)
    assert b.registers == [0x4366, 0x8000]


def test_transaction_skips_late_answer_of_other_unit() -> None:
    t = transaction()
    t.receive(response_frame(unit=9) + response_frame(unit=1), 100.1)
    assert t.registers == [0x4366, 0x8000]


def test_transaction_short_read_ends_at_silence() -> None:
    t = transaction()
    t.receive(response_frame()[:6], 100.1)
    assert t.next_deadline() == pytest.approx(100.104)
    t.handle_timeout(100.102)
    assert not t.done()
    t.handle_timeout(100.104)
    assert isinstance(t.error, modbus.TruncatedFrameError)


@pytest.mark.parametrize(("answer", "error"), [
    (modbus.encode_rtu(1, modbus.encode_exception(4, 2)), modbus.ModbusExceptionError),
    (response_frame()[:-1] + b"\x00", modbus.CrcError),
    (modbus.encode_rtu(1, modbus.encode_read_response(3, [1, 2])), modbus.MalformedFrameError),
])
def test_transaction_errors(answer: bytes, error: type[FrameError]) -> None:
    t = transaction()
    t.receive(answer, 100.1)
    assert isinstance(t.error, error)


def test_transaction_timeout() -> None:
    t = transaction()
    t.handle_timeout(100.4)
    assert not t.done()
    t.handle_timeout(100.5)
    assert isinstance(t.error, modbus.ResponseTimeoutError)
    assert t.error.code == "meter.timeout"
