"""Simulated meters: load profile, energy integration and faults, with no I/O inside.

A `MeterModel` is one meter (one Modbus unit or one P1 port).  Time comes in as `now_s`
(Unix seconds) and randomness from a seeded `random.Random`, so a seed and a sequence of
times give the same readings on every run.

Load: household consumption with a daily shape (night base load, morning and evening
peaks), a weekly shape (weekends higher and later) and seeded noise; some meters also
have solar panels that export around noon.  Energy registers integrate power over time
(rectangle rule between `advance` calls) and never run backwards unless the `rollback`
fault is applied.  Voltage, current, power factor and frequency follow from the power
with small noise.

Faults per meter (`set_fault(mode, ...)`), applied by the protocol layers:

    silent     never answers
    exception  answers Modbus exception `exception_code` (default 4, device failure)
    crc        answers with a corrupted CRC (RTU, P1) or a garbled PDU (TCP)
    stuck      values frozen at the moment the fault was set
    rollback   energy counters jump back by `fraction` (default 0.5) once
    slow       answers after `delay_s` (default 0.5 s)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from edge.portable.errors import LocalProtocolError
from edge.portable.modbus import ILLEGAL_DATA_ADDRESS, encode_value
from hardware.profiles import Profile, Quantity

FAULT_MODES = ("silent", "exception", "crc", "stuck", "rollback", "slow")
HOUR_S = 3600.0
DAY_S = 86400.0
# Integrating across a long pause in one rectangle would misrepresent the shape;
# longer gaps are cut into steps of this size.
MAX_STEP_S = 300.0


class SimulatorError(LocalProtocolError):
    code = "sim.invalid"


class ModbusRefusal(Exception):
    """A read the simulated meter answers with a Modbus exception code."""

    def __init__(self, exception_code: int) -> None:
        super().__init__(exception_code)
        self.exception_code = exception_code


@dataclass
class FaultSet:
    modes: set[str] = field(default_factory=set)
    exception_code: int = 4
    delay_s: float = 0.5

    def has(self, mode: str) -> bool:
        return mode in self.modes


def daily_shape(now_s: float) -> float:
    """Relative household load at `now_s` (UTC), about 0.3 at night and 1.0 at peaks."""
    hour = (now_s % DAY_S) / HOUR_S
    weekday = int(now_s // DAY_S + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weekend = weekday >= 5
    morning = 0.5 * math.exp(-(((hour - (9.0 if weekend else 7.5)) / 1.2) ** 2))
    evening = 0.7 * math.exp(-(((hour - 19.0) / 2.0) ** 2))
    return (0.3 + morning + evening) * (1.15 if weekend else 1.0)


def solar_shape(now_s: float) -> float:
    hour = (now_s % DAY_S) / HOUR_S
    return max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0))


class MeterModel:
    """One simulated meter following `profile`."""

    def __init__(self, profile: Profile, unit: int, rng: random.Random, now_s: float) -> None:
        self.profile = profile
        self.unit = unit
        self.rng = rng
        self.faults = FaultSet()
        self.peak_w = rng.uniform(0.25, 0.6) * profile.limits.max_power_w / 3.0
        self.solar_w = rng.choice((0.0, 0.0, rng.uniform(0.1, 0.3) * profile.limits.max_power_w))
        self.import_j = [rng.uniform(1e9, 5e10), rng.uniform(1e9, 5e10)]  # tariff 1, 2
        self.export_j = [0.0, 0.0]
        self.gas_m3 = rng.uniform(100.0, 5000.0)
        self.noise = 0.0
        self.last_s = now_s
        self.stuck: dict[str, float] | None = None

    # -- faults ------------------------------------------------------------------------

    def set_fault(self, mode: str, exception_code: int = 4, delay_s: float = 0.5,
                  fraction: float = 0.5, now_s: float | None = None) -> None:
        if mode not in FAULT_MODES:
            raise SimulatorError(f"fault {mode!r} not one of {', '.join(FAULT_MODES)}")
        self.faults.modes.add(mode)
        self.faults.exception_code = exception_code
        self.faults.delay_s = delay_s
        if mode == "stuck":
            self.stuck = self.values(self.last_s if now_s is None else now_s)
        if mode == "rollback":
            self.import_j = [e * (1.0 - fraction) for e in self.import_j]
            self.export_j = [e * (1.0 - fraction) for e in self.export_j]

    def clear_fault(self, mode: str | None = None) -> None:
        if mode is None:
            self.faults.modes.clear()
        else:
            self.faults.modes.discard(mode)
        if not self.faults.has("stuck"):
            self.stuck = None

    # -- physics -----------------------------------------------------------------------

    def net_power_w(self, now_s: float) -> float:
        load = self.peak_w * daily_shape(now_s) * (1.0 + self.noise)
        return load - self.solar_w * solar_shape(now_s)

    def tariff(self, now_s: float) -> int:
        """0 = tariff 1 (night and weekend), 1 = tariff 2 (weekday daytime)."""
        hour = (now_s % DAY_S) / HOUR_S
        weekday = int(now_s // DAY_S + 3) % 7
        return 1 if weekday < 5 and 7.0 <= hour < 23.0 else 0

    def advance(self, now_s: float) -> None:
        """Integrate energy up to `now_s`; time that goes backwards is ignored."""
        while now_s > self.last_s:
            step = min(now_s - self.last_s, MAX_STEP_S)
            self.last_s += step
            power = self.net_power_w(self.last_s)
            t = self.tariff(self.last_s)
            if power >= 0:
                self.import_j[t] += power * step
            else:
                self.export_j[t] -= power * step
            self.gas_m3 += 0.1 * daily_shape(self.last_s) * step / HOUR_S
            self.noise = max(-0.5, min(0.5, 0.7 * self.noise + self.rng.gauss(0.0, 0.05)))

    def values(self, now_s: float) -> dict[str, float]:
        """OBIS -> SI value of every quantity in the profile at `now_s`."""
        self.advance(now_s)
        if self.stuck is not None:
            return dict(self.stuck)
        base = self._physics(now_s)
        out = {q.obis: base.get(q.obis, 0.0) for q in self.profile.quantities if not q.sum_of}
        for q in self.profile.quantities:
            if q.sum_of:
                out[q.obis] = sum(out[o] for o in q.sum_of)
        return out

    def _physics(self, now_s: float) -> dict[str, float]:
        power = self.net_power_w(now_s)
        phases = 3 if "1-0:52.7.0" in {q.obis for q in self.profile.quantities} else 1
        volts = [230.0 + 2.0 * math.sin(now_s / 600.0 + k) + self.noise for k in range(3)]
        pf = 0.93 + 0.05 * math.cos(now_s / 900.0)
        out = {
            "1-0:1.7.0": power if self.profile.protocol == "modbus" else max(power, 0.0),
            "1-0:2.7.0": max(-power, 0.0),
            "1-0:13.7.0": pf,
            "1-0:14.7.0": 50.0 + 0.02 * math.sin(now_s / 60.0),
            "1-0:1.8.0": sum(self.import_j),
            "1-0:2.8.0": sum(self.export_j),
            "1-0:1.8.1": self.import_j[0],
            "1-0:1.8.2": self.import_j[1],
            "1-0:2.8.1": self.export_j[0],
            "1-0:2.8.2": self.export_j[1],
            "0-1:24.2.1": self.gas_m3,
        }
        for k, (v, i, p, f) in enumerate(((32, 31, 21, 33), (52, 51, 41, 53), (72, 71, 61, 73))):
            share = power / phases if k < phases else 0.0
            out[f"1-0:{v}.7.0"] = volts[k]
            out[f"1-0:{i}.7.0"] = abs(share) / volts[k] / pf
            out[f"1-0:{p}.7.0"] = share
            out[f"1-0:{f}.7.0"] = pf
        return out

    # -- registers ---------------------------------------------------------------------

    def read_registers(self, function: int, address: int, count: int, now_s: float) -> list[int]:
        """Registers as the real meter would answer; raises ModbusRefusal like it."""
        image = register_image(self.profile.register_quantities(), self.values(now_s), function)
        if not image:
            raise ModbusRefusal(1)
        low, high = min(image), max(image)
        if address < low or address + count - 1 > high:
            raise ModbusRefusal(ILLEGAL_DATA_ADDRESS)
        return [image.get(a, 0) for a in range(address, address + count)]


def raw_value(q: Quantity, si: float) -> float:
    raw = si / q.scale
    if q.dtype.startswith("float"):
        return raw
    if q.dtype.startswith("uint"):
        raw = max(raw, 0.0)
    bits = 16 * q.register_count
    limit = 1 << (bits if q.dtype.startswith("uint") else bits - 1)
    return max(min(round(raw), limit - 1), -limit)


def register_image(quantities: tuple[Quantity, ...], values: dict[str, float],
                   function: int) -> dict[int, int]:
    image: dict[int, int] = {}
    for q in quantities:
        if q.function != function:
            continue
        words = encode_value(raw_value(q, values[q.obis]), q.dtype, q.word_order, q.byte_order)
        for k, word in enumerate(words):
            image[q.address + k] = word
    return image


class Fleet:
    """The simulated meters behind one TCP server, RTU bus or P1 port, by unit id."""

    def __init__(self, profile: Profile, units: list[int], seed: int, now_s: float) -> None:
        if not units or any(not 1 <= u <= 247 for u in units):
            raise SimulatorError("units must be within 1..247")
        rng = random.Random(seed)
        self.profile = profile
        self.seed = seed
        self.meters = {u: MeterModel(profile, u, random.Random(rng.random()), now_s)
                       for u in units}

    def meter(self, unit: int) -> MeterModel:
        if unit not in self.meters:
            raise SimulatorError(f"no simulated unit {unit}")
        return self.meters[unit]

    def set_fault(self, unit: int, mode: str, exception_code: int = 4, delay_s: float = 0.5,
                  fraction: float = 0.5) -> None:
        self.meter(unit).set_fault(mode, exception_code, delay_s, fraction)

    def clear_fault(self, unit: int, mode: str | None = None) -> None:
        self.meter(unit).clear_fault(mode)
