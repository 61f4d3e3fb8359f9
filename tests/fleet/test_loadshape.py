"""Load shapes: daily, weekly and seasonal structure, seeded noise, registers that only
grow unless set back."""

from __future__ import annotations

import random

from simulator.fleet import loadshape
from simulator.fleet.replay import ReplayMeter, Track

MONDAY_S = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a Monday in winter
HOUR_S = 3600.0


def test_commercial_load_follows_opening_hours_and_the_week() -> None:
    noon = loadshape.commercial_shape(MONDAY_S + 12 * HOUR_S)
    night = loadshape.commercial_shape(MONDAY_S + 3 * HOUR_S)
    sunday_noon = loadshape.commercial_shape(MONDAY_S + 6 * 86400 + 12 * HOUR_S)
    assert noon > 0.9 and night < 0.2 and sunday_noon < 0.2


def test_winter_is_heavier_than_summer_and_commercial_sites_cool_in_summer() -> None:
    july_s = MONDAY_S + 190 * 86400
    assert loadshape.season_factor(MONDAY_S, "household") > \
        loadshape.season_factor(july_s, "household")
    assert loadshape.season_factor(july_s, "commercial") > \
        loadshape.season_factor(july_s, "household")


def test_household_evening_peak_exceeds_the_night() -> None:
    assert loadshape.shape(MONDAY_S + 19 * HOUR_S, "household") > \
        2 * loadshape.shape(MONDAY_S + 3 * HOUR_S, "household")


def test_same_seed_same_readings_and_registers_only_grow(seed: int) -> None:
    def readings(kind: str) -> list[list[object]]:
        meter = loadshape.MeterSim("m1", kind, random.Random(seed), MONDAY_S)
        return [[r.value for r in meter.read(MONDAY_S + k * 900.0)] for k in range(1, 200)]

    for kind in loadshape.KINDS:
        first = readings(kind)
        assert first == readings(kind)
        energies = [int(row[0]) for row in first]  # type: ignore[call-overload]
        assert energies == sorted(energies)


def test_set_back_makes_the_register_run_backwards_once(seed: int) -> None:
    meter = loadshape.MeterSim("m1", "household", random.Random(seed), MONDAY_S)
    before = meter.read(MONDAY_S + 600)[0].value
    meter.set_back(0.5)
    after = meter.read(MONDAY_S + 1200)[0].value
    assert isinstance(before, int) and isinstance(after, int) and after < before


def test_a_replayed_track_steps_and_keeps_counting_past_its_end() -> None:
    track = Track("h1", [0.0, 900.0, 1800.0], [1000.0, 1100.0, 1300.0], [1.0, 2.0, 3.0],
                  [230.0, 231.0, 232.0])
    meter = ReplayMeter("gw.m1", track)
    assert meter.read(950.0)[0].value == 1100
    assert meter.read(1800.0)[1].value == 3.0
    lap = meter.read(2700.0 + 900.0)[0].value  # one lap (2700 s) later, second row
    assert lap == 1100 + 300
