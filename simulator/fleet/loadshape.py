"""Load shapes of a simulated fleet's meters: pure functions of model time and a seed.

Theory of operation
-------------------
A meter's active power at model time t (Unix seconds, UTC) is

    P(t) = peak_w × shape(t) × season(t) × (1 + noise)  −  solar_w × sun(t)

`shape` is the household day (`simulator.model.daily_shape`: night base, morning and
evening peaks, weekends higher and later) or the commercial day (a plateau during
opening hours on weekdays, a low base at night and on Sundays, half a day on
Saturdays).  `season` raises winter load (heating, light) for both and adds a summer
cooling bump for commercial sites.  `noise` is an AR(1) process drawn from the meter's
own `random.Random`, so a seed and a sequence of read times give the same readings on
every run and every machine.  Some households export around noon (solar).

The import register integrates max(P, 0) over model time in steps of at most
STEP_S_MAX; it never runs backwards unless `set_back` is called (the fault that a
ledger must catch as rule.backwards).  A read gives the SenML records a gateway
signs: import energy (whole J), power (W) and voltage (V).

Nothing here reads a clock or the global random state.
"""

from __future__ import annotations

import math
import random

from edge.portable import batch as batch_mod
from simulator.model import DAY_S, HOUR_S, daily_shape, solar_shape

HOUSEHOLD = "household"
COMMERCIAL = "commercial"
KINDS = (HOUSEHOLD, COMMERCIAL)
YEAR_S = 365.25 * DAY_S
# Integrating a long pause in one rectangle would flatten the day's shape.
STEP_S_MAX = 300.0
# One in this many meters of a fleet is commercial (shops, offices, small workshops).
COMMERCIAL_EVERY = 8


def _weekday(model_s: float) -> int:
    return int(model_s // DAY_S + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday


def commercial_shape(model_s: float) -> float:
    """Relative commercial load: ~1.0 in weekday opening hours, 0.15–0.2 when closed."""
    hour = (model_s % DAY_S) / HOUR_S
    weekday = _weekday(model_s)
    close = 18.0 if weekday < 5 else 13.0 if weekday == 5 else 0.0
    ramp_up = 1.0 / (1.0 + math.exp(-(hour - 7.5) * 3.0))
    ramp_down = 1.0 / (1.0 + math.exp((hour - close) * 3.0))
    return 0.15 + 0.85 * ramp_up * ramp_down


def season_factor(model_s: float, kind: str) -> float:
    """Winter peak in mid-January (northern hemisphere); commercial sites add cooling."""
    phase = 2.0 * math.pi * ((model_s % YEAR_S) / YEAR_S - 15.0 / 365.25)
    winter = 1.0 + 0.25 * math.cos(phase)
    if kind == COMMERCIAL:
        return winter + 0.2 * max(0.0, -math.cos(phase))
    return winter


def shape(model_s: float, kind: str) -> float:
    day = daily_shape(model_s) if kind == HOUSEHOLD else commercial_shape(model_s)
    return day * season_factor(model_s, kind)


class MeterSim:
    """One simulated meter's state: integrated import register and noise."""

    def __init__(self, meter_id: str, kind: str, rng: random.Random, model_s: float) -> None:
        if kind not in KINDS:
            raise ValueError(f"meter kind {kind!r} not one of {KINDS}")
        self.meter_id = meter_id
        self.kind = kind
        self.rng = rng
        household = kind == HOUSEHOLD
        self.peak_w = rng.uniform(1500.0, 4000.0) if household else rng.uniform(8e3, 40e3)
        self.solar_w = rng.choice((0.0, 0.0, 0.0, rng.uniform(1e3, 4e3))) if household else 0.0
        self.import_j = float(rng.randrange(10**9, 5 * 10**10))
        self.noise = 0.0
        self.last_s = model_s

    def power_w(self, model_s: float) -> float:
        load = self.peak_w * shape(model_s, self.kind) * (1.0 + self.noise)
        return load - self.solar_w * solar_shape(model_s)

    def advance(self, model_s: float) -> None:
        """Integrate up to `model_s`; a time before the last read is ignored."""
        while model_s > self.last_s:
            step_s = min(model_s - self.last_s, STEP_S_MAX)
            self.last_s += step_s
            self.import_j += max(self.power_w(self.last_s), 0.0) * step_s
            self.noise = max(-0.5, min(0.5, 0.7 * self.noise + self.rng.gauss(0.0, 0.05)))

    def set_back(self, fraction: float) -> None:
        """The counter-rollback fault: the import register jumps back by `fraction`."""
        self.import_j *= 1.0 - fraction

    def read(self, model_s: float) -> list[batch_mod.Record]:
        self.advance(model_s)
        power_w = self.power_w(model_s)
        volts = 230.0 + 2.0 * math.sin(model_s / 600.0) + 4.0 * self.noise
        return [
            batch_mod.Record.reading("1-0:1.8.0", self.import_j, "J"),
            batch_mod.Record.reading("1-0:1.7.0", power_w, "W"),
            batch_mod.Record.reading("1-0:32.7.0", volts, "V"),
        ]


def kind_of(meter_index: int) -> str:
    """Which load shape the fleet's meter number `meter_index` follows."""
    return COMMERCIAL if meter_index % COMMERCIAL_EVERY == COMMERCIAL_EVERY - 1 else HOUSEHOLD
