"""The agent's meters: drivers built from meter URLs, one poll of all of them per batch.

Modbus meters are polled through `edge.meters.poller` (buses in parallel, meters on a
bus in turn).  A DSMR meter pushes a telegram every second or so; a thread per P1 port
keeps only the latest reading, so a batch carries fresh values however long the
interval, and the serial buffer never backs up.

Whatever goes wrong with a meter becomes a status record in its group, never an
exception out of `poll`: the drivers map timeouts, CRC errors and exception answers to
status codes, values that would not validate as a batch become "malformed", and any
other exception from a driver (a bug, or a surprise from pyserial) becomes "fault" and
is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from edge.agent.config import MeterSpec
from edge.meters.bus import ModbusBus, rtu_bus, tcp_bus
from edge.meters.health import MeterHealth
from edge.meters.p1 import P1Reader
from edge.meters.poller import ModbusMeter, Poller
from edge.meters.result import MeterReading
from edge.portable import batch as batch_mod
from edge.portable.batch import MeterGroup
from edge.portable.errors import BatchError, GridLedgerError, LocalProtocolError
from edge.readings import group_from_values, status_group
from hardware import profiles

log = logging.getLogger("gridledger.agent")

FAULT = "fault"  # an unexpected exception in a driver (logged with traceback)
MALFORMED = "malformed"
# A P1 reading older than this many telegram intervals is stale (the meter stopped).
P1_STALE_INTERVALS = 3.0


class P1Source:
    """A P1 port read in its own thread; `latest()` is the newest whole telegram."""

    def __init__(self, spec: MeterSpec, profile: profiles.Profile) -> None:
        settings = profile.serial.override(spec.baud, spec.framing)
        self.spec = spec
        self.reader = P1Reader(spec.meter_id, profile, spec.address, settings)
        self.timeout_s = max(spec.timeout_s, 2.5 * profile.dsmr_interval_s)
        self.stale_s = P1_STALE_INTERVALS * profile.dsmr_interval_s
        self._latest: MeterReading | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"p1-{spec.meter_id}",
                                        daemon=True)

    @property
    def health(self) -> MeterHealth:
        return self.reader.health

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._latest = self.reader.read(self.timeout_s)
            except GridLedgerError as exc:
                self._latest = _failed(self.spec, "connect", str(exc))
                self._stop.wait(self.timeout_s)
            except Exception as exc:  # a driver bug must not end the thread
                log.exception("p1_reader_fault", extra={"fields": {"meter": self.spec.meter_id}})
                self._latest = _failed(self.spec, FAULT, repr(exc))
                self._stop.wait(self.timeout_s)

    def latest(self, now_s: float) -> MeterReading:
        reading = self._latest
        if reading is None or now_s - reading.read_at_s > self.stale_s:
            return _failed(self.spec, "timeout", "no recent telegram")
        return reading

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 1)
        self.reader.close()


def _failed(spec: MeterSpec, status: str, error: str) -> MeterReading:
    return MeterReading(spec.meter_id, spec.profile, status, time.time(), error=error)


class MeterSet:
    """All meters of one agent, in configuration order."""

    def __init__(self, specs: list[MeterSpec], clock: Callable[[], float] = time.time) -> None:
        self.specs = specs
        self.clock = clock
        buses: dict[tuple[str, str], ModbusBus] = {}
        self.modbus: list[ModbusMeter] = []
        self.p1: dict[str, P1Source] = {}
        for spec in specs:
            profile = profiles.load(spec.profile)
            if profile.protocol == "dsmr":
                if spec.scheme != "serial":
                    raise LocalProtocolError(f"{spec.meter_id}: a P1 meter is on a serial port")
                self.p1[spec.meter_id] = P1Source(spec, profile)
                continue
            bus = buses.get(spec.bus_key) or _bus(spec, profile)
            buses[spec.bus_key] = bus
            self.modbus.append(ModbusMeter(spec.meter_id, profile, spec.unit, bus))
        self.poller = Poller(self.modbus)
        self.last: dict[str, MeterReading] = {}

    def start(self) -> None:
        for source in self.p1.values():
            source.start()

    async def poll(self) -> list[MeterGroup]:
        """One group per meter, in configuration order; never raises for a meter."""
        readings = {r.meter_id: r for r in await self._poll_modbus()}
        now_s = self.clock()
        for meter_id, source in self.p1.items():
            readings[meter_id] = source.latest(now_s)
        self.last.update(readings)
        return [group_for(readings[spec.meter_id]) for spec in self.specs]

    async def _poll_modbus(self) -> list[MeterReading]:
        if not self.modbus:
            return []
        try:
            return await self.poller.poll_once()
        except Exception as exc:  # a driver bug: every Modbus meter reports it, we go on
            log.exception("modbus_poll_fault")
            return [_failed(s, FAULT, repr(exc)) for s in self.specs
                    if s.meter_id not in self.p1]

    def health(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        healths = {m.meter_id: m.health for m in self.modbus}
        healths.update({k: s.health for k, s in self.p1.items()})
        for spec in self.specs:
            h, last = healths[spec.meter_id], self.last.get(spec.meter_id)
            out[spec.meter_id] = {
                "profile": spec.profile, "status": last.status if last else "not_read",
                "error": last.error if last else "", "offline": h.offline,
                "failures_in_row": h.failures_in_row,
                "counters": {k: v for k, v in h.counters.items() if v}}
        return out

    async def shutdown(self) -> None:
        self.poller.close()
        for source in self.p1.values():
            await asyncio.to_thread(source.shutdown)


def _bus(spec: MeterSpec, profile: profiles.Profile) -> ModbusBus:
    if spec.scheme == "tcp":
        host, _, port = spec.address.rpartition(":")
        return tcp_bus(host, int(port), spec.timeout_s)
    return rtu_bus(spec.address, profile.serial.override(spec.baud, spec.framing),
                   spec.timeout_s)


def group_for(reading: MeterReading) -> MeterGroup:
    """The SenML group of a reading: its values, or one status record."""
    if not reading.ok:
        return status_group(reading.meter_id, reading.read_at_s, _status_code(reading.status))
    values = {obis: (v.v, v.u) for obis, v in reading.values.items()}
    try:
        group = group_from_values(reading.meter_id, reading.read_at_s, values)
        _validate(group)
    except (BatchError, LocalProtocolError, ValueError, OverflowError):
        return status_group(reading.meter_id, reading.read_at_s, MALFORMED)
    return group


def _status_code(status: str) -> str:
    ok = 0 < len(status) <= batch_mod.MAX_STATUS_CHARS and status.isidentifier()
    return status if ok and status.islower() else FAULT


def _validate(group: MeterGroup) -> None:
    """Raise BatchError when the group would not pass Batch validation (NaN, bad unit)."""
    probe = batch_mod.Batch("probe", 0, 0, False, [group])
    batch_mod.Batch.from_obj(probe.to_obj())
