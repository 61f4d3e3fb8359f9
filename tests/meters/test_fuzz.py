"""Property tests: every portable decoder either parses or raises a documented FrameError.

Any other exception out of a decoder is a bug (errors.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.portable import dsmr, modbus
from edge.portable.errors import FrameError
from tests.meters.samples import DSMR4, DSMR5, DSMR22

DOCUMENTED = (modbus.CrcError, modbus.TruncatedFrameError, modbus.MalformedFrameError,
              modbus.FrameLimitError, modbus.UnsupportedFunctionError,
              modbus.ModbusExceptionError)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Mutations of valid frames find more paths than random bytes alone.
VALID_RTU = [bytes.fromhex("01040000000271cb"),
             modbus.encode_rtu(1, modbus.encode_read_response(4, [1, 2, 3])),
             modbus.encode_rtu(9, modbus.encode_exception(3, 2))]


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    def mutate(base: bytes, at: int, data: bytes, cut: int) -> bytes:
        at %= len(base) + 1
        return (base[:at] + data + base[at:])[: max(1, len(base) + len(data) - cut)]
    return st.builds(mutate, st.sampled_from(seeds), st.integers(0, 10_000),
                     st.binary(max_size=8), st.integers(0, 8)) | st.binary(max_size=300)


def check(call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except FrameError as error:
        assert isinstance(error, DOCUMENTED), type(error)
        assert error.code.startswith(("frame.", "modbus."))


@FAST
@given(mutated(VALID_RTU))
def test_decode_rtu(data: bytes) -> None:
    check(lambda: modbus.decode_rtu(data))


@FAST
@given(st.sampled_from(["request", "response"]), st.lists(mutated(VALID_RTU), max_size=4))
def test_rtu_stream(role: str, chunks: list[bytes]) -> None:
    d = modbus.RtuDecoder(role)
    for chunk in chunks:
        d.feed(chunk)
        for _ in range(4):
            check(d.next_frame)
    check(d.end_of_frame)
    assert d.buffered() == 0


@FAST
@given(st.sampled_from([3, 4]), st.integers(1, 125), st.binary(max_size=260))
def test_read_response(function: int, count: int, pdu: bytes) -> None:
    check(lambda: modbus.decode_read_response(function, count, pdu))
    check(lambda: modbus.decode_read_request(pdu))


@FAST
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_mbap_stream(chunks: list[bytes]) -> None:
    d = modbus.MbapDecoder()
    for chunk in chunks:
        d.feed(chunk)
        for _ in range(4):
            check(d.next_frame)


@FAST
@given(mutated([DSMR5, DSMR4, DSMR22]))
def test_decode_telegram(data: bytes) -> None:
    def parse() -> None:
        dsmr.reading_values(dsmr.decode_telegram(data))
    check(parse)


@FAST
@given(st.lists(mutated([DSMR5, DSMR22, b"/X\r\n\r\n1-0:1.8.1(1*kWh)\r\n!"]), max_size=4))
def test_telegram_stream(chunks: list[bytes]) -> None:
    d = dsmr.TelegramDecoder()
    for chunk in chunks:
        d.feed(chunk)
        for _ in range(3):
            def step() -> None:
                t = d.next_telegram()
                if t is not None:
                    dsmr.reading_values(t)
            check(step)


@FAST
@given(st.lists(mutated(VALID_RTU), max_size=4), st.floats(0.0, 1.0))
def test_read_transaction(chunks: list[bytes], end_s: float) -> None:
    t = modbus.ReadTransaction(1, 4, 0, 3, 0.0, 0.5, 0.004)
    for k, chunk in enumerate(chunks):
        t.receive(chunk, 0.001 * k)
    t.handle_timeout(end_s)
    if t.error is not None:
        assert isinstance(t.error, (*DOCUMENTED, modbus.ResponseTimeoutError))
    assert t.done() or end_s < 0.5
