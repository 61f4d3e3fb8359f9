"""CRC-16/MODBUS and CRC-16/ARC against published check values and real frames."""

from __future__ import annotations

import pytest

from edge.portable.crc16 import crc16_arc, crc16_modbus


@pytest.mark.parametrize(("data", "crc"), [
    (b"123456789", 0x4B37),            # catalogue check value (reveng CRC-16/MODBUS)
    (bytes.fromhex("010400000002"), 0xCB71),   # SDM voltage read: on the wire 71 CB
    (bytes.fromhex("1103006b0003"), 0x8776),  # the classic 11 03 00 6B 00 03 -> 76 87
    (b"", 0xFFFF),
])
def test_crc16_modbus_vectors(data: bytes, crc: int) -> None:
    assert crc16_modbus(data) == crc


@pytest.mark.parametrize(("data", "crc"), [
    (b"123456789", 0xBB3D),            # catalogue check value (reveng CRC-16/ARC)
    (b"", 0x0000),
    (b"A", 0x30C0),
])
def test_crc16_arc_vectors(data: bytes, crc: int) -> None:
    assert crc16_arc(data) == crc


def test_modbus_crc_of_frame_with_crc_appended_is_zero() -> None:
    frame = bytes.fromhex("01040000000271cb")
    assert crc16_modbus(frame) == 0
