"""Read planning: the fewest Modbus requests that cover a profile's registers.

Quantities are grouped by function code and sorted by address; a quantity joins the
current request when the registers skipped to reach it are at most `max_gap` and the
request stays within `max_count` registers (the meter's limit, at most 125 by
Application Protocol §6.3).  Reading a few unused registers costs two bytes each; a
second request costs a whole round trip plus 3.5 character times of silence on RTU.
Pure functions: no I/O, no time.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.meters.result import Value
from edge.portable.modbus import decode_value
from hardware.profiles import Profile, Quantity


@dataclass(frozen=True)
class ReadBlock:
    function: int
    address: int
    count: int
    quantities: tuple[Quantity, ...]


def plan_reads(quantities: tuple[Quantity, ...], max_gap: int, max_count: int) -> list[ReadBlock]:
    ordered = sorted((q for q in quantities if q.is_register),
                     key=lambda q: (q.function, q.address))
    blocks: list[ReadBlock] = []
    group: list[Quantity] = []
    for q in ordered:
        if group and _fits(group, q, max_gap, max_count):
            group.append(q)
            continue
        if group:
            blocks.append(_block(group))
        group = [q]
    if group:
        blocks.append(_block(group))
    return blocks


def _fits(group: list[Quantity], q: Quantity, max_gap: int, max_count: int) -> bool:
    first, last = group[0], group[-1]
    end = last.address + last.register_count
    return (q.function == first.function and q.address - end <= max_gap
            and q.address + q.register_count - first.address <= max_count)


def _block(group: list[Quantity]) -> ReadBlock:
    start = group[0].address
    end = max(q.address + q.register_count for q in group)
    return ReadBlock(group[0].function, start, end - start, tuple(group))


def plan_for(profile: Profile) -> list[ReadBlock]:
    return plan_reads(profile.register_quantities(), profile.max_gap_registers,
                      profile.max_registers_per_request)


def decode_block(block: ReadBlock, registers: list[int]) -> dict[str, float]:
    """OBIS -> SI value for every quantity of `block` from its registers."""
    out: dict[str, float] = {}
    for q in block.quantities:
        offset = q.address - block.address
        words = registers[offset : offset + q.register_count]
        out[q.obis] = decode_value(words, q.dtype, q.word_order, q.byte_order) * q.scale
    return out


def finish(profile: Profile, raw: dict[str, float]) -> tuple[dict[str, Value], tuple[str, ...]]:
    """SI values with units, derived sums added, and the OBIS codes out of limits."""
    values = {obis: Value(v, profile.quantity(obis).unit) for obis, v in raw.items()}
    for q in profile.quantities:
        if q.sum_of and all(o in values for o in q.sum_of):
            values[q.obis] = Value(sum(values[o].v for o in q.sum_of), q.unit)
    implausible = tuple(sorted(o for o, x in values.items()
                               if not profile.quantity(o).plausible(x.v)))
    return values, implausible
