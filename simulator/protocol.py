"""The simulated meters' side of the wire, sans-I/O: Modbus answers and P1 telegrams.

`ModbusResponder.answer(unit, pdu, now_s)` decides what a bus of simulated meters sends
back for one request PDU (Application Protocol V1.1b3 §6.3, §6.4, §7): the register
values, an exception, nothing (unknown unit, `silent` fault, broadcast), when (`slow`
fault) and whether to corrupt it (`crc` fault).  The TCP and RTU shells in servers.py
only move bytes.

`telegram(meter, now_s)` renders a DSMR P1 telegram in the number formats of the
profile's DSMR version (P1 Companion Standard 5.0.2 §6.12, 4.2.2 §6.12, 2.2 §5.8), so
that third-party parsers accept it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.portable import dsmr, modbus
from edge.portable.errors import FrameError
from simulator.model import Fleet, MeterModel, ModbusRefusal


@dataclass(frozen=True)
class Answer:
    pdu: bytes | None  # None: stay silent
    delay_s: float = 0.0
    corrupt: bool = False


class ModbusResponder:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.requests = 0

    def answer(self, unit: int, pdu: bytes, now_s: float) -> Answer:
        self.requests += 1
        meter = self.fleet.meters.get(unit)
        if meter is None or meter.faults.has("silent"):
            return Answer(None)
        delay_s = meter.faults.delay_s if meter.faults.has("slow") else 0.0
        corrupt = meter.faults.has("crc")
        return Answer(self._pdu(meter, pdu, now_s), delay_s, corrupt)

    def _pdu(self, meter: MeterModel, pdu: bytes, now_s: float) -> bytes:
        function = pdu[0] if pdu else 0
        if meter.faults.has("exception"):
            return modbus.encode_exception(function, meter.faults.exception_code)
        try:
            function, address, count = modbus.decode_read_request(pdu)
            registers = meter.read_registers(function, address, count, now_s)
        except modbus.UnsupportedFunctionError:
            return modbus.encode_exception(function, modbus.ILLEGAL_FUNCTION)
        except FrameError:
            return modbus.encode_exception(function, modbus.ILLEGAL_DATA_VALUE)
        except ModbusRefusal as refusal:
            return modbus.encode_exception(function, refusal.exception_code)
        return modbus.encode_read_response(function, registers)


def corrupt_rtu(frame: bytes) -> bytes:
    """The same frame with its CRC bytes inverted."""
    return frame[:-2] + bytes(b ^ 0xFF for b in frame[-2:])


# -- DSMR ------------------------------------------------------------------------------

# DSMR version -> format specs of (energy kWh, power kW, gas m3)
_FORMATS = {
    "5": ("010.3f", "06.3f", "09.3f"),
    "4": ("010.3f", "06.3f", "09.3f"),
    "2.2": ("09.3f", "07.2f", "09.3f"),
}


def _stamp(now_s: float, dst_flag: bool) -> str:
    t = time.gmtime(int(now_s))
    text = "".join(f"{n:02d}" for n in (t.tm_year % 100, t.tm_mon, t.tm_mday, t.tm_hour,
                                         t.tm_min, t.tm_sec))
    return text + "W" if dst_flag else text


def telegram_lines(meter: MeterModel, now_s: float) -> list[str]:
    version = meter.profile.dsmr_version
    energy, power, gas = _FORMATS[version]
    v = meter.values(now_s)
    lines = [] if version == "2.2" else [
        f"1-3:0.2.8({'50' if version == '5' else '42'})",
        f"0-0:1.0.0({_stamp(now_s, True)})",
    ]
    lines.append(f"0-0:96.1.1(45303030343030313539343735343434{meter.unit:02d})")
    for obis in ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2"):
        lines.append(f"{obis}({v.get(obis, 0.0) / 3.6e6:{energy}}*kWh)")
    lines.append(f"0-0:96.14.0({meter.tariff(now_s) + 1:04d})")
    for obis in ("1-0:1.7.0", "1-0:2.7.0"):
        lines.append(f"{obis}({v.get(obis, 0.0) / 1000.0:{power}}*kW)")
    gas_m3 = f"{v['0-1:24.2.1']:{gas}}"
    if version == "2.2":
        lines.append(f"0-1:24.3.0({_stamp(now_s, False)})(08)(60)(1)(0-1:24.2.1)(m3)")
        lines.append(f"({gas_m3})")
        return lines
    lines.append("0-0:96.7.21(00004)")
    lines.append(f"1-0:32.7.0({v.get('1-0:32.7.0', 230.0):05.1f}*V)")
    lines.append(f"1-0:31.7.0({round(v.get('1-0:31.7.0', 0.0)):03d}*A)")
    lines.append("0-1:24.1.0(003)")
    lines.append(f"0-1:24.2.1({_stamp(now_s, True)})({gas_m3}*m3)")
    return lines


def telegram(meter: MeterModel, now_s: float) -> bytes:
    """The telegram `meter` pushes at `now_s` (CRC corrupted under the `crc` fault)."""
    version = meter.profile.dsmr_version
    raw = dsmr.encode_telegram(meter.profile.dsmr_header, telegram_lines(meter, now_s),
                               with_crc=version != "2.2")
    if meter.faults.has("crc"):
        bang = raw.rfind(b"!")
        raw = raw[: bang + 1] + (b"0000" if raw[bang + 1 : bang + 5] != b"0000" else b"FFFF")
        raw += b"\r\n"
    return raw
