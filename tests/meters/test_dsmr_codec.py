"""DSMR P1 codec: real-format telegrams, incremental feeding, CRC, garbage, dsmr-parser."""

from __future__ import annotations

import time

import pytest
from dsmr_parser import obis_references, telegram_specifications
from dsmr_parser.parsers import TelegramParser

from edge.portable import dsmr, modbus
from hardware.profiles import load
from simulator.model import Fleet
from simulator.protocol import telegram
from tests.meters.samples import DSMR4, DSMR5, DSMR22

KWH_J = 3.6e6


@pytest.mark.parametrize(("raw", "crc"), [(DSMR5, 0x692F), (DSMR4, 0x6CB0), (DSMR22, None)])
def test_our_parser_accepts_real_format_telegrams(raw: bytes, crc: int | None) -> None:
    t = dsmr.decode_telegram(raw)
    assert t.crc == crc
    values = dsmr.reading_values(t)
    assert values["1-0:1.8.1"][1] == "J"
    assert values["1-0:1.7.0"][1] == "W"


def test_values_in_si() -> None:
    v5 = dsmr.reading_values(dsmr.decode_telegram(DSMR5))
    assert v5["1-0:1.8.1"] == pytest.approx((1581.123 * KWH_J, "J"))
    assert v5["1-0:1.7.0"] == pytest.approx((193.0, "W"))
    assert v5["1-0:32.7.0"] == (230.0, "V")
    assert v5["0-1:24.2.1"] == (839.845, "m3")
    assert "0-0:96.1.1" not in v5 and "0-0:96.13.0" not in v5
    v22 = dsmr.reading_values(dsmr.decode_telegram(DSMR22))
    assert v22["0-1:24.3.0"] == (1.001, "m3")  # value on the continuation line


@pytest.mark.parametrize("raw", [DSMR5, DSMR4, DSMR22])
def test_incremental_whole_bytewise_and_trailing(raw: bytes) -> None:
    whole = dsmr.TelegramDecoder()
    whole.feed(b"\x00garbage" + raw)
    assert whole.next_telegram() is not None
    bytewise = dsmr.TelegramDecoder()
    got = []
    for i in range(len(raw)):
        bytewise.feed(raw[i : i + 1])
        got.append(bytewise.next_telegram())
    assert all(g is None for g in got[:-1]) and got[-1] is not None
    trailing = dsmr.TelegramDecoder()
    trailing.feed(raw + raw[:40])
    assert trailing.next_telegram() is not None
    assert trailing.next_telegram() is None
    trailing.feed(raw[40:])
    assert trailing.next_telegram() is not None


def test_wrong_crc_counted_and_next_telegram_parses() -> None:
    bad = DSMR5.replace(b"001581.123", b"001581.124")
    d = dsmr.TelegramDecoder()
    d.feed(bad + DSMR4)
    with pytest.raises(modbus.CrcError) as info:
        d.next_telegram()
    assert info.value.code == "frame.crc"
    assert d.next_telegram() is not None


@pytest.mark.parametrize(("raw", "error"), [
    (b"/X\r\n\r\nnot an obis line\r\n!\r\n", modbus.MalformedFrameError),
    (b"/X\r\n\r\n1-0:1.8.1(0001\r\n!\r\n", modbus.MalformedFrameError),
    (b"/X\r\n\r\n1-0:1.8.1(1*kWh)\r\n!12G4\r\n", modbus.MalformedFrameError),
    (b"/X\r\n\r\n1-0:1.8.1(1*kWh)\r\n!12\r\n", modbus.MalformedFrameError),
    (b"/X\r\n1-0:1.8.1(1*kWh)\r\n!\r\n", modbus.MalformedFrameError),
    (b"/X\r\n\r\n(1)\r\n!\r\n", modbus.MalformedFrameError),
])
def test_garbled_telegrams(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        dsmr.decode_telegram(raw)


def test_size_limit() -> None:
    d = dsmr.TelegramDecoder()
    d.feed(b"/" + b"A" * dsmr.MAX_TELEGRAM_BYTES)
    with pytest.raises(modbus.FrameLimitError):
        d.next_telegram()


def test_encode_roundtrip() -> None:
    raw = dsmr.encode_telegram("XMX5LGBBFG1012463275", ["1-0:1.8.1(000001.000*kWh)"])
    assert dsmr.decode_telegram(raw).objects == {"1-0:1.8.1": [("000001.000", "kWh")]}


SPECS = {"5": telegram_specifications.V5, "4": telegram_specifications.V4,
         "2.2": telegram_specifications.V2_2}


@pytest.mark.interop
@pytest.mark.parametrize(("raw", "version"), [(DSMR5, "5"), (DSMR4, "4"), (DSMR22, "2.2")])
def test_dsmr_parser_accepts_our_samples(raw: bytes, version: str) -> None:
    parser = TelegramParser(SPECS[version], apply_checksum_validation=version != "2.2")
    parsed = parser.parse(raw.decode(), throw_ex=True)
    assert parsed is not None


@pytest.mark.interop
@pytest.mark.parametrize("profile", ["dsmr5", "dsmr4", "dsmr22"])
def test_dsmr_parser_accepts_simulator_telegrams(profile: str, seed: int) -> None:
    p = load(profile)
    meter = Fleet(p, [1], seed, 1.7e9).meter(1)
    parser = TelegramParser(SPECS[p.dsmr_version],
                            apply_checksum_validation=p.dsmr_version != "2.2")
    for hour in range(0, 48, 7):
        raw = telegram(meter, 1.7e9 + hour * 3600.0)
        parsed = parser.parse(raw.decode(), throw_ex=True)
        ours = dsmr.reading_values(dsmr.decode_telegram(raw))
        theirs = parsed[obis_references.ELECTRICITY_USED_TARIFF_1].value
        assert float(theirs) * KWH_J == pytest.approx(ours["1-0:1.8.1"][0])


def test_simulator_crc_fault_breaks_crc(seed: int) -> None:
    meter = Fleet(load("dsmr5"), [1], seed, time.time()).meter(1)
    meter.set_fault("crc")
    with pytest.raises(modbus.CrcError):
        dsmr.decode_telegram(telegram(meter, time.time()))
