"""Replay of recorded readings: a CSV drives the fleet's meters at any speed.

CSV layout (a header line naming the columns is required; order is free, extra
columns are ignored):

    time          Unix seconds (integer or decimal) or ISO 8601 (2026-01-15T08:00:00Z)
    meter         the recorded meter's id (any text; only grouping uses it)
    energy_j      cumulative import energy in J (or energy_kwh in kWh)
    power_w       active power in W (optional, default 0)
    voltage_v     L1 voltage in V (optional, default 230)

Example:

    time,meter,energy_kwh,power_w,voltage_v
    2026-01-15T00:00:00Z,house-17,10234.511,412.0,231.2
    2026-01-15T00:15:00Z,house-17,10234.614,398.5,230.9

The recorded meters are assigned to the fleet's meters in order of first appearance,
round robin, so a small recording can drive a big fleet.  Model time starts at the
first row's time; a fleet meter reads the last row at or before model time (a step,
as a real register is read).  Past the last row the recording starts again and the
energy keeps counting from where it was, so registers never run backwards.

Limits: ROWS_MAX rows (the recording is held in memory); errors carry the code
sim.replay and the line number.
"""

from __future__ import annotations

import bisect
import csv
import datetime
from dataclasses import dataclass, field
from pathlib import Path

from edge.portable import batch as batch_mod
from edge.portable.errors import LocalProtocolError

ROWS_MAX = 5_000_000
J_PER_KWH = 3.6e6


class ReplayError(LocalProtocolError):
    code = "sim.replay"


@dataclass
class Track:
    """One recorded meter: times (s) and values, sorted by time."""

    name: str
    times_s: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    voltage_v: list[float] = field(default_factory=list)

    def span_s(self) -> float:
        if len(self.times_s) < 2:
            return 1.0
        step_s = (self.times_s[-1] - self.times_s[0]) / (len(self.times_s) - 1)
        return self.times_s[-1] - self.times_s[0] + step_s


@dataclass
class Recording:
    tracks: list[Track]
    start_s: float


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def load(path: Path) -> Recording:
    try:
        with open(path, newline="") as handle:
            return _read(path, csv.DictReader(handle))
    except OSError as exc:
        raise ReplayError(f"{path}: {exc.strerror}") from None


def _read(path: Path, rows: csv.DictReader[str]) -> Recording:
    columns = set(rows.fieldnames or ())
    if not {"time", "meter"} <= columns or not columns & {"energy_j", "energy_kwh"}:
        raise ReplayError(f"{path}: header needs time, meter and energy_j or energy_kwh")
    tracks: dict[str, Track] = {}
    for number, row in enumerate(rows, 2):
        if number - 1 > ROWS_MAX:
            raise ReplayError(f"{path}: more than {ROWS_MAX} rows")
        try:
            _add(tracks, row)
        except (ValueError, TypeError, KeyError) as exc:
            raise ReplayError(f"{path}:{number}: {exc}") from None
    if not tracks:
        raise ReplayError(f"{path}: no rows")
    for track in tracks.values():
        _sort(track)
    start_s = min(t.times_s[0] for t in tracks.values())
    return Recording(list(tracks.values()), start_s)


def _add(tracks: dict[str, Track], row: dict[str, str]) -> None:
    name = row["meter"]
    if not name:
        raise ValueError("empty meter")
    track = tracks.setdefault(name, Track(name))
    energy = row.get("energy_j") or ""
    energy_j = float(energy) if energy else float(row["energy_kwh"]) * J_PER_KWH
    if not energy_j >= 0:
        raise ValueError("energy must be a non-negative number")
    track.times_s.append(_time(row["time"]))
    track.energy_j.append(energy_j)
    track.power_w.append(float(row.get("power_w") or 0.0))
    track.voltage_v.append(float(row.get("voltage_v") or 230.0))


def _sort(track: Track) -> None:
    order = sorted(range(len(track.times_s)), key=track.times_s.__getitem__)
    track.times_s = [track.times_s[i] for i in order]
    track.energy_j = [track.energy_j[i] for i in order]
    track.power_w = [track.power_w[i] for i in order]
    track.voltage_v = [track.voltage_v[i] for i in order]


class ReplayMeter:
    """A fleet meter reading one recorded track."""

    def __init__(self, meter_id: str, track: Track) -> None:
        self.meter_id = meter_id
        self.track = track
        self.offset_j = 0.0
        self.last_j = 0.0

    def _row(self, model_s: float) -> tuple[int, int]:
        """(index of the last row at or before model_s, laps of the recording done)."""
        first = self.track.times_s[0]
        span = self.track.span_s()
        laps = int(max(0.0, model_s - first) // span)
        at = model_s - laps * span
        return max(0, bisect.bisect_right(self.track.times_s, at) - 1), laps

    def read(self, model_s: float) -> list[batch_mod.Record]:
        index, laps = self._row(model_s)
        lap_j = self.track.energy_j[-1] - self.track.energy_j[0]
        energy_j = self.track.energy_j[index] + laps * max(lap_j, 0.0) - self.offset_j
        energy_j = max(energy_j, 0.0)
        self.last_j = energy_j
        return [
            batch_mod.Record.reading("1-0:1.8.0", energy_j, "J"),
            batch_mod.Record.reading("1-0:1.7.0", self.track.power_w[index], "W"),
            batch_mod.Record.reading("1-0:32.7.0", self.track.voltage_v[index], "V"),
        ]

    def set_back(self, fraction: float) -> None:
        self.offset_j += self.last_j * fraction
