"""CRC-16 with the reflected polynomial 0x8005 (0xA001), table driven.

Two protocols use this polynomial and differ only in the initial value:

- CRC-16/MODBUS: init 0xFFFF, no final XOR (Modbus over Serial Line V1.02 §2.5.1.2 and
  appendix B).  On the wire the low byte goes first.
- CRC-16/ARC: init 0x0000, no final XOR (DSMR P1 Companion Standard 5.0.2 §6.2, the
  telegram CRC).  Written as four upper-case hex digits.

Check values (the CRC of b"123456789"): MODBUS 0x4B37, ARC 0xBB3D.

Portable: runs on MicroPython, so no typing, dataclasses or f-string "=" here.
"""

_POLY_REFLECTED = 0xA001


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc16_reflected(data: bytes, init: int) -> int:
    """CRC of `data` with polynomial 0xA001 (reflected 0x8005) starting from `init`."""
    crc = init
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_modbus(data: bytes) -> int:
    return crc16_reflected(data, 0xFFFF)


def crc16_arc(data: bytes) -> int:
    return crc16_reflected(data, 0x0000)
