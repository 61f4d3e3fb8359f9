"""Modbus buses: pymodbus clients behind one small interface, with the bus discipline.

A `ModbusBus` is one half-duplex line (an RS-485 port through pyserial) or one Modbus
TCP connection.  It holds one lock, so there is never more than one request on the line,
and keeps the inter-frame gap: 3.5 character times of silence after the last frame
(Serial Line V1.02 §2.5.1.1; fixed 1.75 ms above 19200 baud).  Each request has its own
timeout; pymodbus retries are off because retries are the poller's decision.

Third-party exceptions are mapped here, at the transport boundary: pymodbus reports a
bad CRC or a garbled answer only as "no response", so the bus keeps the raw bytes it
received (pymodbus's packet trace hook) and, after a failure, runs them through our own
codec to say what was wrong: crc, truncated, malformed, or a plain timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from edge.meters.result import MeterConnectError, MeterTimeoutError
from edge.portable import modbus
from edge.portable.errors import FrameError, LocalProtocolError, RemoteProtocolError
from hardware.profiles import SerialSettings

# Above 19200 baud the silence is fixed (Serial Line V1.02 §2.5.1.1).
FIXED_GAP_S = 0.00175
BITS_PER_CHAR = 11  # start + 8 data + parity or second stop + stop
# pymodbus hands the trace hook its whole receive buffer; one ADU is at most 260 bytes.
MAX_KEPT_BYTES = 512


def inter_frame_gap_s(baud: int) -> float:
    return FIXED_GAP_S if baud > 19200 else 3.5 * BITS_PER_CHAR / baud


class ModbusBus:
    """One line or connection; `read` is the only way to talk on it."""

    def __init__(self, name: str, kind: str, timeout_s: float, gap_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.kind = kind  # "rtu" or "tcp"
        self.timeout_s = timeout_s
        self.gap_s = gap_s
        self.clock = clock
        self.lock = asyncio.Lock()
        self.requests = 0
        self._quiet_at_s = 0.0
        self._received = b""
        self.client: Any = None  # a pymodbus async client

    def trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._received = bytes(data[-MAX_KEPT_BYTES:])
        return data

    async def read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        async with self.lock:
            await self._keep_gap()
            try:
                return await self._read(unit, function, address, count)
            finally:
                self._quiet_at_s = self.clock() + self.gap_s

    async def _keep_gap(self) -> None:
        wait_s = self._quiet_at_s - self.clock()
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        client = await self._connected()
        self._received = b""
        self.requests += 1
        call = (client.read_holding_registers if function == modbus.READ_HOLDING
                else client.read_input_registers)
        try:
            response = await asyncio.wait_for(
                call(address, count=count, device_id=unit), self.timeout_s * 1.5)
        except (TimeoutError, ModbusException) as exc:
            raise self._diagnose(unit, function, count, exc) from None
        if response.isError():
            raise modbus.ModbusExceptionError(function, getattr(response, "exception_code", 0))
        if response.function_code != function:
            raise modbus.MalformedFrameError(
                f"asked function {function}, answer has {response.function_code}")
        registers = list(response.registers)
        if len(registers) != count:
            raise modbus.MalformedFrameError(f"asked {count} registers, got {len(registers)}")
        return registers

    async def _connected(self) -> Any:
        if self.client is None:
            raise MeterConnectError(f"{self.name}: bus not open")
        if not self.client.connected:
            try:
                ok = await asyncio.wait_for(self.client.connect(), self.timeout_s * 2)
            except (TimeoutError, OSError, ModbusException):
                ok = False
            if not ok:
                raise MeterConnectError(f"{self.name}: cannot connect")
        return self.client

    def _diagnose(self, unit: int, function: int, count: int,
                  exc: Exception) -> RemoteProtocolError:
        """What the raw bytes say about a failed request (see module docstring)."""
        if isinstance(exc, ConnectionException) and not self._received:
            self.close()
            return MeterConnectError(f"{self.name}: {exc}")
        raw, self._received = self._received, b""
        if not raw:
            return MeterTimeoutError(f"unit {unit}: no answer within {self.timeout_s} s")
        try:
            answered, pdu = self._unwrap(raw)
            if answered != unit:  # a late answer from another unit: ours never came
                return MeterTimeoutError(f"unit {unit}: no answer within {self.timeout_s} s")
            modbus.decode_read_response(function, count, pdu)
        except FrameError as error:
            if self.kind == "tcp":
                self.close()  # the stream may be out of step: start a fresh connection
            return error
        return MeterTimeoutError(f"unit {unit}: answer arrived too late")

    def _unwrap(self, raw: bytes) -> tuple[int, bytes]:
        if self.kind == "rtu":
            decoder = modbus.RtuDecoder("response")
            decoder.feed(raw)
            frame = decoder.next_frame()
            if frame is None:
                raise modbus.TruncatedFrameError(f"{len(raw)} bytes, frame incomplete")
            decoder.end_of_frame()
            return frame
        tcp = modbus.MbapDecoder()
        tcp.feed(raw)
        got = tcp.next_frame()
        if got is None:
            raise modbus.TruncatedFrameError(f"{len(raw)} bytes, frame incomplete")
        return got[1], got[2]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def tcp_bus(host: str, port: int, timeout_s: float = 1.0) -> ModbusBus:
    bus = ModbusBus(f"{host}:{port}", "tcp", timeout_s, 0.0)
    bus.client = AsyncModbusTcpClient(host, port=port, framer=FramerType.SOCKET,
                                      timeout=timeout_s, retries=0, reconnect_delay=0,
                                      trace_packet=bus.trace)
    return bus


def rtu_bus(port: str, serial: SerialSettings, timeout_s: float = 0.5) -> ModbusBus:
    bus = ModbusBus(port, "rtu", timeout_s, inter_frame_gap_s(serial.baud))
    bus.client = AsyncModbusSerialClient(port, framer=FramerType.RTU, baudrate=serial.baud,
                                         bytesize=serial.bytesize, parity=serial.parity,
                                         stopbits=serial.stopbits, timeout=timeout_s,
                                         retries=0, reconnect_delay=0, trace_packet=bus.trace)
    return bus


class BusPool:
    """One bus per serial port or TCP endpoint, so that meters sharing a line share its
    lock and gap.  Create it inside the running event loop (pymodbus needs one)."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self._buses: dict[str, tuple[ModbusBus, SerialSettings | None]] = {}

    def tcp(self, host: str, port: int) -> ModbusBus:
        key = f"tcp:{host}:{port}"
        if key not in self._buses:
            self._buses[key] = (tcp_bus(host, port, self.timeout_s), None)
        return self._buses[key][0]

    def rtu(self, port: str, serial: SerialSettings) -> ModbusBus:
        key = f"rtu:{port}"
        if key not in self._buses:
            self._buses[key] = (rtu_bus(port, serial, self.timeout_s), serial)
        bus, settings = self._buses[key]
        if settings != serial:
            raise LocalProtocolError(f"{port}: meters on one bus need the same serial settings")
        return bus

    def close(self) -> None:
        for bus, _ in self._buses.values():
            bus.close()
        self._buses.clear()
