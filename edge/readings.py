"""Meter readings to SenML meter groups: the step between a driver and a batch.

Values are rounded for the wire by the portable core (`batch.rounded`), the same rule the
ESP32 firmware applies, so both give the same bytes.  A failed read becomes a single
status record, so a meter in trouble is visible on the ledger instead of missing.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.portable.batch import MeterGroup, Record


def group_from_values(
    meter_id: str, read_time_s: float, values_si: Mapping[str, tuple[float, str]]
) -> MeterGroup:
    """A group of OBIS -> (SI value, unit) readings, in OBIS order."""
    records = [Record.reading(obis, v, u) for obis, (v, u) in sorted(values_si.items())]
    return MeterGroup(meter_id, int(read_time_s), records)


def status_group(meter_id: str, read_time_s: float, status: str) -> MeterGroup:
    return MeterGroup(meter_id, int(read_time_s), [Record.status(status)])
