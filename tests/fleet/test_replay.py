"""The replay CSV: the documented columns load; bad files are refused with sim.replay
and the line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.registrar import Identity
from simulator.fleet import replay
from simulator.fleet.runner import Fleet, FleetConfig

from .conftest import node_keys

GOOD = """time,meter,energy_kwh,power_w,voltage_v
2026-01-15T00:15:00Z,house-17,10234.614,398.5,230.9
2026-01-15T00:00:00Z,house-17,10234.511,412.0,231.2
1768435200,shop-2,55.0,9000,229.0
"""


def test_rows_group_by_meter_sorted_by_time(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(GOOD)
    recording = replay.load(path)
    house = recording.tracks[0]
    assert house.name == "house-17" and house.times_s == sorted(house.times_s)
    assert house.energy_j[0] == pytest.approx(10234.511 * 3.6e6)
    assert recording.start_s == 1768435200.0


@pytest.mark.parametrize("text, where", [
    ("when,meter,energy_j\n1,a,2\n", "header"),
    ("time,meter,energy_j\n1,a,-5\n", ":2:"),
    ("time,meter,energy_j\nyesterday,a,5\n", ":2:"),
    ("time,meter,energy_j\n", "no rows"),
])
def test_bad_files_are_refused_with_the_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(replay.ReplayError) as caught:
        replay.load(path)
    assert caught.value.code == "sim.replay" and where in str(caught.value)


def test_a_fleet_on_a_recording_starts_at_its_first_row(tmp_path: Path,
                                                        identities: list[Identity]) -> None:
    path = tmp_path / "r.csv"
    path.write_text(GOOD)
    config = FleetConfig(interval_s=900.0, speed=900.0, mqtt_urls=["mqtt://127.0.0.1:1"],
                         replay=path)
    fleet = Fleet(identities[:3], node_keys(), config)
    timing = fleet.cores[0].timing
    assert timing.model_start_s == replay.load(path).start_s
    meters = [m for core in fleet.cores for m in core.meters]
    assert all(isinstance(m, replay.ReplayMeter) for m in meters)
    assert {m.track.name for m in meters} == {"house-17", "shop-2"}  # type: ignore[attr-defined]
