"""Meter readings to SenML meter groups: the step between a driver and a batch.

Registers that count (energy in J, gas in m3) travel as sums; energy is rounded to whole
joules so that the bytes do not depend on the interpreter's float width (DESIGN.md asks
for byte-identical batches on CPython and MicroPython).  Other quantities are values
rounded to a resolution no meter we support exceeds.  A failed read becomes a single
status record, so a meter in trouble is visible on the ledger instead of missing.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.portable.batch import MeterGroup, Record

# Decimal places kept per unit: below every supported meter's resolution.
DECIMALS_BY_UNIT = {"W": 1, "V": 2, "A": 3, "Hz": 3, "/": 3, "m3": 3, "var": 1, "VA": 1}
DEFAULT_DECIMALS = 3


def record_for(obis: str, value_si: float, unit: str) -> Record:
    if unit == "J":
        return Record(obis, round(value_si), unit)
    decimals = DECIMALS_BY_UNIT.get(unit, DEFAULT_DECIMALS)
    return Record(obis, round(float(value_si), decimals), unit)


def group_from_values(
    meter_id: str, read_time_s: float, values_si: Mapping[str, tuple[float, str]]
) -> MeterGroup:
    """A group of OBIS -> (SI value, unit) readings, in OBIS order."""
    records = [record_for(obis, v, u) for obis, (v, u) in sorted(values_si.items())]
    return MeterGroup(meter_id, int(read_time_s), records)


def status_group(meter_id: str, read_time_s: float, status: str) -> MeterGroup:
    return MeterGroup(meter_id, int(read_time_s), [Record.status(status)])
