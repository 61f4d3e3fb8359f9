"""Polling: one `MeterReading` per meter per round, buses in parallel, meters on a bus
in turn, offline meters skipped until their backoff expires.

A `ModbusMeter` reads its planned blocks (plan.py) through its bus (bus.py); a request
that fails with timeout, crc, truncated or malformed is retried up to `retries` times,
an exception answer is not (the meter meant it).  A meter being probed after going
offline gets one try, so a dead meter costs its bus at most one timeout per backoff.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from edge.meters.bus import ModbusBus
from edge.meters.health import MeterHealth
from edge.meters.plan import decode_block, finish, plan_for
from edge.meters.result import EXCEPTION, OFFLINE, OK, MeterReading, status_of
from edge.portable.errors import RemoteProtocolError
from hardware.profiles import Profile


class ModbusMeter:
    def __init__(self, meter_id: str, profile: Profile, unit: int, bus: ModbusBus,
                 rng: random.Random | None = None, retries: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        self.meter_id = meter_id
        self.profile = profile
        self.unit = unit
        self.bus = bus
        self.plan = plan_for(profile)
        self.health = MeterHealth(rng or random.Random(unit))
        self.retries = retries
        self.clock = clock

    async def poll(self) -> MeterReading:
        now_s = self.clock()
        if not self.health.due(now_s):
            self.health.counters[OFFLINE] += 1
            wait_s = self.health.retry_at_s - now_s
            return MeterReading(self.meter_id, self.profile.name, OFFLINE, now_s,
                                error=f"offline, next try in {wait_s:.1f} s")
        tries = 1 if self.health.offline else 1 + self.retries
        reading = await self._read_all(tries)
        self.health.record(reading.status, self.clock())
        return reading

    async def _read_all(self, tries: int) -> MeterReading:
        raw: dict[str, float] = {}
        read_at_s = self.clock()
        for block in self.plan:
            try:
                registers = await self._read_block(block.function, block.address,
                                                   block.count, tries)
            except RemoteProtocolError as error:
                return MeterReading(self.meter_id, self.profile.name, status_of(error),
                                    read_at_s, error=str(error))
            raw.update(decode_block(block, registers))
        values, implausible = finish(self.profile, raw)
        return MeterReading(self.meter_id, self.profile.name, OK, read_at_s, values,
                            implausible=implausible)

    async def _read_block(self, function: int, address: int, count: int,
                          tries: int) -> list[int]:
        for attempt in range(tries):
            try:
                return await self.bus.read(self.unit, function, address, count)
            except RemoteProtocolError as error:
                if status_of(error) == EXCEPTION or attempt == tries - 1:
                    raise
                self.health.counters[status_of(error)] += 1  # counted, then retried
        raise AssertionError("unreachable")


class Poller:
    """Polls a set of meters: each bus serially, all buses at once."""

    def __init__(self, meters: list[ModbusMeter]) -> None:
        self.meters = meters
        self._by_bus: dict[int, list[ModbusMeter]] = {}
        for m in meters:
            self._by_bus.setdefault(id(m.bus), []).append(m)

    async def poll_once(self) -> list[MeterReading]:
        rounds = await asyncio.gather(*(self._poll_bus(ms) for ms in self._by_bus.values()))
        return [r for batch in rounds for r in batch]

    @staticmethod
    async def _poll_bus(meters: list[ModbusMeter]) -> list[MeterReading]:
        return [await m.poll() for m in meters]

    def close(self) -> None:
        for meters in self._by_bus.values():
            meters[0].bus.close()
