"""Meters on the board's UARTs, through the portable codecs: Modbus RTU on RS-485 and
DSMR P1 telegrams.

Each Modbus meter's register map arrives planned in config.json (blocks of registers,
see config.py).  A read is a portable `ReadTransaction`: write the request, feed what the
UART returns, wait out the deadlines.  A failure becomes one status record (timeout,
crc, exception, truncated, malformed), never an exception out of `read_all`.
"""

from portable import dsmr, modbus
from portable.batch import MeterGroup, Record
from portable.errors import FrameError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATUS_OF_CODE = {"frame.crc": "crc", "modbus.exception": "exception",
                  "frame.truncated": "truncated", "modbus.timeout": "timeout"}
# 3.5 characters of silence at 9600 baud is 4 ms; the sleep granularity is 1 ms.
SILENCE_MS = 5
# UART reads per service() call: a 115200-baud P1 port delivers at most ~1 KiB a step.
MAX_READS_PER_SERVICE = 4096


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

        self.p1: dict[str, P1Meter] = {}
        for meter in meters:
            if "p1" in meter:
                self.p1[meter["id"]] = P1Meter(meter, board.uart(meter["uart"]))

    def service(self, now_s: int) -> None:
        """Drain the P1 ports (they push whether we listen or not)."""
        for p1 in self.p1.values():
            p1.service(now_s)

    def read_all(self, now_s: int) -> list[MeterGroup]:
        return [self.p1[m["id"]].read(now_s) if m["id"] in self.p1 else self.read(m, now_s)
                for m in self.meters]

    def read(self, meter: "dict[str, Any]", now_s: int) -> MeterGroup:
        records: list[Record] = []
        try:
            for function, address, count, quantities in meter["blocks"]:
                registers = self.transact(meter["unit"], function, address, count)
                for obis, unit, offset, dtype, word_order, byte_order, scale in quantities:
                    words = registers[offset:offset + modbus.registers_for(dtype)]
                    value = modbus.decode_value(words, dtype, word_order, byte_order) * scale
                    records.append(Record.reading(obis, value, unit))
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


class P1Meter:
    """A DSMR meter's P1 port: keeps the newest whole telegram; a batch takes it."""

    def __init__(self, meter: "dict[str, Any]", uart: "Any") -> None:
        self.meter = meter
        self.uart = uart
        self.decoder = dsmr.TelegramDecoder()
        self.latest: dsmr.Telegram | None = None
        self.latest_s = 0
        self.failed = ""
        self.stale_s = meter["p1"].get("stale_s", 30)

    def service(self, now_s: int) -> None:
        for _ in range(MAX_READS_PER_SERVICE):
            data = self.uart.read()
            if not data:
                break
            self.decoder.feed(data)
        while True:
            try:
                telegram = self.decoder.next_telegram()
            except FrameError as error:
                self.failed = status_of(error)
                continue
            if telegram is None:
                return
            self.latest, self.latest_s, self.failed = telegram, now_s, ""

    def read(self, now_s: int) -> MeterGroup:
        self.service(now_s)
        meter_id = self.meter["id"]
        if self.failed:
            return MeterGroup(meter_id, now_s, [Record.status(self.failed)])
        if self.latest is None or now_s - self.latest_s > self.stale_s:
            return MeterGroup(meter_id, now_s, [Record.status("timeout")])
        try:
            got = dsmr.reading_values(self.latest)
        except FrameError as error:
            return MeterGroup(meter_id, now_s, [Record.status(status_of(error))])
        values: dict[str, float] = {}
        for obis, source, _unit in self.meter["p1"]["quantities"]:
            if source in got:
                values[obis] = got[source][0]
        for obis, parts, _unit in self.meter["p1"]["sums"]:
            if all(part in values for part in parts):
                values[obis] = sum(values[part] for part in parts)
        units = {q[0]: q[2] for q in self.meter["p1"]["quantities"] + self.meter["p1"]["sums"]}
        records = [Record.reading(obis, values[obis], units[obis])
                   for obis in sorted(values)]
        if not records:
            return MeterGroup(meter_id, now_s, [Record.status("malformed")])
        return MeterGroup(meter_id, self.latest_s, records)
