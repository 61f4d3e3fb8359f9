"""Modbus RTU meters on the board's UART, through the portable codec.

Each meter's register map arrives planned in config.json (blocks of registers, see
config.py).  A read is a portable `ReadTransaction`: write the request, feed what the
UART returns, wait out the deadlines.  A failure becomes one status record (timeout,
crc, exception, truncated, malformed), never an exception out of `read_all`.
"""

from portable import modbus
from portable.batch import MeterGroup, Record
from portable.errors import RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATUS_OF_CODE = {"frame.crc": "crc", "modbus.exception": "exception",
                  "frame.truncated": "truncated", "modbus.timeout": "timeout"}
# 3.5 characters of silence at 9600 baud is 4 ms; the sleep granularity is 1 ms.
SILENCE_MS = 5


def status_of(error: RemoteProtocolError) -> str:
    if isinstance(error, modbus.ResponseTimeoutError):
        return "timeout"
    return STATUS_OF_CODE.get(error.code, "malformed")


class Meters:
    def __init__(self, board: "Any", uart: "Any", meters: "list[dict[str, Any]]",
                 timeout_ms: int) -> None:
        self.board = board
        self.uart = uart
        self.meters = meters
        self.timeout_ms = timeout_ms
        self.counters: dict[str, int] = {}

    def read_all(self, now_s: int) -> list[MeterGroup]:
        return [self.read(meter, now_s) for meter in self.meters]

    def read(self, meter: "dict[str, Any]", now_s: int) -> MeterGroup:
        records: list[Record] = []
        try:
            for function, address, count, quantities in meter["blocks"]:
                registers = self.transact(meter["unit"], function, address, count)
                for obis, unit, offset, dtype, word_order, byte_order, scale in quantities:
                    words = registers[offset:offset + modbus.registers_for(dtype)]
                    value = modbus.decode_value(words, dtype, word_order, byte_order) * scale
                    records.append(Record(obis, _rounded(value, unit), unit))
        except RemoteProtocolError as error:
            status = status_of(error)
            self.counters[status] = self.counters.get(status, 0) + 1
            return MeterGroup(meter["id"], now_s, [Record.status(status)])
        self.counters["ok"] = self.counters.get("ok", 0) + 1
        return MeterGroup(meter["id"], now_s, records)

    def transact(self, unit: int, function: int, address: int, count: int) -> list[int]:
        board = self.board
        start = board.ticks_ms()
        tx = modbus.ReadTransaction(unit, function, address, count, 0.0,
                                    self.timeout_ms / 1000, SILENCE_MS / 1000)
        while self.uart.read():
            pass  # drop a late answer to an earlier request
        self.uart.write(tx.request)
        while not tx.done():
            elapsed_s = board.ticks_diff(board.ticks_ms(), start) / 1000
            data = self.uart.read()
            if data:
                tx.receive(data, elapsed_s)
            else:
                tx.handle_timeout(elapsed_s)
                board.sleep_ms(1)
        if tx.error is not None:
            raise tx.error
        assert tx.registers is not None
        return tx.registers


# Decimal places kept per unit, as edge/readings.py does on the Pi.
DECIMALS_BY_UNIT = {"W": 1, "V": 2, "A": 3, "Hz": 3, "/": 3, "m3": 3, "var": 1, "VA": 1}


def _rounded(value: float, unit: str) -> "int | float":
    if unit == "J":
        return round(value)  # integer joules: the same bytes on every interpreter
    return round(value, DECIMALS_BY_UNIT.get(unit, 3))
