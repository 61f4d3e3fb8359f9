"""DSMR P1 reader: pyserial in, portable telegram decoder (edge/portable/dsmr.py) out.

The meter pushes; we only listen.  `read(timeout_s)` returns the next whole telegram as
a `MeterReading` (values keyed by the profile's OBIS codes, in SI), or a reading with
status crc / malformed / timeout.  Bad telegrams are counted and the reader goes on with
the next one.  DSMR 4 and 5 telegrams must carry a CRC; one without is malformed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import serial

from edge.meters.health import MeterHealth
from edge.meters.plan import finish
from edge.meters.result import OK, TIMEOUT, MeterConnectError, MeterReading, status_of
from edge.portable import dsmr
from edge.portable.errors import FrameError
from edge.portable.modbus import MalformedFrameError
from hardware.profiles import Profile, SerialSettings

READ_CHUNK_BYTES = 1024
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class P1Reader:
    def __init__(self, meter_id: str, profile: Profile, port: str,
                 serial_settings: SerialSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.meter_id = meter_id
        self.profile = profile
        self.port = port
        self.serial_settings = serial_settings or profile.serial
        self.clock = clock
        self.decoder = dsmr.TelegramDecoder()
        self.health = MeterHealth(random.Random(0))
        self._serial: Any = None

    def open(self) -> None:
        s = self.serial_settings
        try:
            self._serial = serial.Serial(self.port, baudrate=s.baud, bytesize=s.bytesize,
                                         parity=_PARITY[s.parity], stopbits=s.stopbits,
                                         timeout=0.05)
        except (serial.SerialException, OSError) as exc:
            raise MeterConnectError(f"{self.port}: {exc}") from exc
        self._serial.reset_input_buffer()

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def read(self, timeout_s: float) -> MeterReading:
        if self._serial is None:
            self.open()
        deadline = time.monotonic() + timeout_s
        while True:
            reading = self._next()
            if reading is not None:
                self.health.record(reading.status, reading.read_at_s)
                return reading
            if time.monotonic() >= deadline:
                now_s = self.clock()
                self.health.record(TIMEOUT, now_s)
                return MeterReading(self.meter_id, self.profile.name, TIMEOUT, now_s,
                                    error=f"no telegram within {timeout_s} s")
            self.decoder.feed(self._serial.read(READ_CHUNK_BYTES))

    def _next(self) -> MeterReading | None:
        try:
            telegram = self.decoder.next_telegram()
            if telegram is None:
                return None
            return self.reading(telegram)
        except FrameError as error:
            return MeterReading(self.meter_id, self.profile.name, status_of(error),
                                self.clock(), error=str(error))

    def reading(self, telegram: dsmr.Telegram) -> MeterReading:
        if telegram.crc is None and self.profile.dsmr_version != "2.2":
            raise MalformedFrameError("DSMR 4/5 telegram without CRC")
        got = dsmr.reading_values(telegram)
        raw: dict[str, float] = {}
        for q in self.profile.quantities:
            source = q.source or q.obis
            if not q.sum_of and source in got:
                raw[q.obis] = got[source][0]
        values, implausible = finish(self.profile, raw)
        return MeterReading(self.meter_id, self.profile.name, OK, self.clock(), values,
                            implausible=implausible)
