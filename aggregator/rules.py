"""Metering rules: small pure functions from a batch and a device's history to violations.

Theory of operation
-------------------
The application runs these at execution (`finalize_block`) on a batch whose signature,
certificate and enrollment have already been checked, in this fixed order:

    check_replay       seq already committed, or older than the window: the batch is
                       REJECTED (not committed) with code rule.replay; a byte-identical
                       copy of the last committed batch is a retry, rejected as
                       rule.duplicate without a violation (delivery is at-least-once).
    check_gap          seqs that left the window without arriving: readings are missing.

Sequence window (the anti-replay window of IPsec, RFC 4303 §3.4.3).  A device's batches
need not arrive in seq order: a gateway keeps up to 64 in flight, CoAP datagrams and
MQTT shared subscriptions reorder them, and in a cluster they reach different
validators.  So each device keeps its highest committed seq and a SEQ_WINDOW-bit mask of
which of the seqs just below it were committed.  A seq above the highest moves the
window up; a seq inside the window that is not yet marked is a late batch, committed
like any other (it does not move the window, and its registers, being older, neither
replace the newer ones nor count as running backwards); a marked seq, or one below the
window, is a replay.  A seq is missing (rule.gap) only when the window moves past it
unmarked: until then it may still arrive.  Gateways number batches from 1, so the first
batch of a device opens its window with the seqs from 1 below it still open: a device's
first batches may arrive in any order too.
    check_backwards    an energy or volume register (a SenML sum, unit J or m3) below the
                       value last committed for the same meter and OBIS code.
    check_plausibility a value outside [min, max] of the meter's profile quantity
                       (`hardware.profiles`); meters without a profile are not judged.
    check_skew         with a synced clock (batch field 4 = 1): sent_at more than
                       SKEW_AHEAD_S after the block time or more than SKEW_BEHIND_S
                       before it, or a read time (bt) more than SKEW_AHEAD_S after it.
    check_verification a meter that has metrological verification certificates (class
                       III records: validity [from, until)) none of which is in force at
                       the read time (bt): its readings come from a meter whose
                       verification expired.  A meter without any record is not judged:
                       "never verified" and "not uploaded yet" look alike.  The periods
                       come from the document records on chain (`aggregator.app`,
                       tx kind 4); the query API shows the result as the readings'
                       verification_lapsed flag.  Weight 0 in the credit score: an
                       expired certificate is the meter owner's doing, not the gateway's.

Every rule returns violation records; only replay rejects.  A batch that breaks the
others is still committed: it is evidence, and the violation records on chain say what
is wrong with it.  All inputs are values; nothing here reads a clock or a store.

Credit score (per device, 0..1000, integers only so every node computes the same):

    penalty = Σ WEIGHTS[code] × count[code]
    score   = 1000 × batches // (batches + penalty)      (1000 when both are 0)

where batches counts the device's committed batches.  A device recovers as it sends
good batches; weights say how many good batches one violation costs: a register running
backwards 20, a replay 10, an implausible value 5, clock skew 2, a gap 1 (gaps are often
the network's fault).  Rejections for bad signatures or unknown devices do not count:
anyone can forge a device id, so they are not the device's doing.

Limits: SEQ_WINDOW = 64 seqs, the most batches a gateway keeps in flight
(receipt.MAX_ENTRIES), so reordering among them never reads as a replay.  A batch
yields at most one violation per rule and meter (≤ 2 × 32 + 3), because
batch.MAX_METERS bounds the groups; the detail text is at most DETAIL_CHARS_MAX.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.portable.batch import SUM_UNITS, Batch

__all__ = [
    "BACKWARDS",
    "CREDIT_MAX",
    "DETAIL_CHARS_MAX",
    "DUPLICATE",
    "GAP",
    "PLAUSIBILITY",
    "REPLAY",
    "SEEN_ALL",
    "SEQ_WINDOW",
    "SKEW",
    "SKEW_AHEAD_S",
    "SKEW_BEHIND_S",
    "VERIFICATION",
    "WEIGHTS",
    "Limits",
    "Registers",
    "Violation",
    "check_backwards",
    "check_gap",
    "check_plausibility",
    "check_replay",
    "check_skew",
    "check_verification",
    "credit_score",
    "next_registers",
    "next_window",
    "penalty",
]

REPLAY = "rule.replay"
DUPLICATE = "rule.duplicate"
GAP = "rule.gap"
BACKWARDS = "rule.backwards"
PLAUSIBILITY = "rule.plausibility"
SKEW = "rule.skew"
VERIFICATION = "rule.verification"

# A synced clock (NTP, GNSS) is within seconds; five minutes leaves room for a gateway
# whose sync just lapsed without calling honest readings skewed.
SKEW_AHEAD_S = 300
# A gateway keeps signed batches while offline and sends them later with their original
# sent_at; a week covers a long outage, older than that is suspicious.
SKEW_BEHIND_S = 7 * 86400
DETAIL_CHARS_MAX = 96
SEQ_WINDOW = 64
SEEN_ALL = (1 << SEQ_WINDOW) - 1
CREDIT_MAX = 1000
WEIGHTS: Mapping[str, int] = {BACKWARDS: 20, REPLAY: 10, PLAUSIBILITY: 5, SKEW: 2, GAP: 1}

Registers = Mapping[tuple[str, str], int | float]
"""Last committed value per (meter id, OBIS code) of a device's registers."""

Limits = Mapping[str, Mapping[str, tuple[float, float]]]
"""Plausibility limits per meter id: OBIS code -> (min, max) from its profile."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: what, by whom, in which batch, for which meter and quantity."""

    code: str
    device_id: str
    seq: int
    meter_id: str = ""
    obis: str = ""
    detail: str = ""

    def to_obj(self) -> list[object]:
        return [self.code, self.device_id, self.seq, self.meter_id, self.obis, self.detail]


def _violation(
    code: str, batch: Batch, detail: str, meter_id: str = "", obis: str = ""
) -> Violation:
    return Violation(code, batch.device_id, batch.seq, meter_id, obis, detail[:DETAIL_CHARS_MAX])


def check_replay(last_seq: int | None, batch: Batch, seen_mask: int = SEEN_ALL
                 ) -> Violation | None:
    """Seq must be above the last committed one, or a late one inside the window: bit
    i of `seen_mask` says whether seq last_seq - 1 - i was committed."""
    if last_seq is None or batch.seq > last_seq:
        return None
    back = last_seq - batch.seq
    if 0 < back <= SEQ_WINDOW and not (seen_mask >> (back - 1)) & 1:
        return None
    return _violation(REPLAY, batch, f"seq {batch.seq} committed already or below the "
                      f"window of {last_seq}")


def next_window(last_seq: int | None, seen_mask: int, seq: int) -> tuple[int, int]:
    """(the mask once `seq` is committed, how many seqs left the window unmarked).

    For a seq above `last_seq` the window moves up by the difference; `last_seq` itself
    was committed, the seqs skipped over were not.  For a late seq its bit is set."""
    if last_seq is None:  # a device's first batch: seqs from 1 below it may still come
        still_open = min(SEQ_WINDOW, max(0, seq - 1))
        return SEEN_ALL & ~((1 << still_open) - 1), 0
    if seq < last_seq:
        return seen_mask | (1 << (last_seq - seq - 1)), 0
    shift = seq - last_seq
    if shift > SEQ_WINDOW:  # the whole window and some skipped seqs fall out
        return 0, (SEQ_WINDOW - seen_mask.bit_count()) + (shift - 1 - SEQ_WINDOW)
    wide = (seen_mask << shift) | (1 << (shift - 1))
    return wide & SEEN_ALL, shift - (wide >> SEQ_WINDOW).bit_count()


def check_gap(missing: int, batch: Batch) -> Violation | None:
    """Seqs that the window moved past without their batch; the detail counts them."""
    if missing <= 0:
        return None
    return _violation(GAP, batch, f"{missing} batches missing below seq "
                      f"{batch.seq - SEQ_WINDOW}")


def check_backwards(registers: Registers, batch: Batch) -> list[Violation]:
    """A register may only grow; one violation per meter (its first offending register)."""
    found = []
    for group in batch.meters:
        for record in group.records:
            if record.unit not in SUM_UNITS or isinstance(record.value, str):
                continue
            last = registers.get((group.meter_id, record.name))
            if last is not None and record.value < last:
                detail = f"{record.name} {record.value} < last {last}"
                found.append(_violation(BACKWARDS, batch, detail, group.meter_id, record.name))
                break
    return found


def check_plausibility(limits: Limits, batch: Batch) -> list[Violation]:
    """Values within the profile's [min, max]; one violation per meter, counting the rest."""
    found = []
    for group in batch.meters:
        bounds = limits.get(group.meter_id)
        if not bounds:
            continue
        bad = [r for r in group.records if _outside(bounds, r.name, r.value)]
        if bad:
            first = bad[0]
            detail = f"{first.name} {first.value} outside {bounds[first.name]} ({len(bad)} values)"
            found.append(_violation(PLAUSIBILITY, batch, detail, group.meter_id, first.name))
    return found


def _outside(bounds: Mapping[str, tuple[float, float]], name: str, value: object) -> bool:
    if name not in bounds or isinstance(value, str):
        return False
    low, high = bounds[name]
    return not low <= value <= high  # type: ignore[operator]


def check_skew(batch: Batch, block_time_s: int) -> list[Violation]:
    """Times of a batch that claims a synced clock must be near the block time."""
    if not batch.clock_synced:
        return []
    found = []
    if batch.sent_at_s > block_time_s + SKEW_AHEAD_S:
        found.append(_violation(SKEW, batch, f"sent_at {batch.sent_at_s - block_time_s} s ahead"))
    elif batch.sent_at_s < block_time_s - SKEW_BEHIND_S:
        found.append(_violation(SKEW, batch, f"sent_at {block_time_s - batch.sent_at_s} s behind"))
    for group in batch.meters:
        if group.read_time_s > block_time_s + SKEW_AHEAD_S:
            ahead = group.read_time_s - block_time_s
            found.append(_violation(SKEW, batch, f"bt {ahead} s ahead", group.meter_id))
    return found


Periods = Mapping[str, Sequence[tuple[int, int]]]
"""Validity [valid_from_s, valid_until_s) of each meter's verification certificates."""


def verification_lapsed(periods: Sequence[tuple[int, int]], at_s: int) -> bool:
    """True when there are periods and none covers `at_s` (a renewal supersedes)."""
    return bool(periods) and not any(start <= at_s < until for start, until in periods)


def check_verification(periods: Periods, batch: Batch) -> list[Violation]:
    """One violation per meter group read while no verification of its meter was in force."""
    return [
        _violation(VERIFICATION, batch, f"no verification in force at bt {group.read_time_s}",
                   group.meter_id)
        for group in batch.meters
        if verification_lapsed(periods.get(group.meter_id, ()), group.read_time_s)
    ]


def next_registers(registers: Registers, batch: Batch) -> dict[tuple[str, str], int | float]:
    """Registers after a committed batch: its values replace the last ones, even lower
    ones, so a replaced or reset meter raises one violation and not one per batch."""
    updated = dict(registers)
    for group in batch.meters:
        for record in group.records:
            if record.unit in SUM_UNITS and not isinstance(record.value, str):
                updated[(group.meter_id, record.name)] = record.value
    return updated


def penalty(counts: Mapping[str, int]) -> int:
    """Σ WEIGHTS[code] × count[code]: how many good batches the violations cost."""
    return sum(WEIGHTS.get(code, 0) * count for code, count in counts.items())


def credit_score(batches: int, counts: Mapping[str, int]) -> int:
    """The formula of the module docstring."""
    penalty_ = penalty(counts)
    if batches + penalty_ == 0:
        return CREDIT_MAX
    return CREDIT_MAX * batches // (batches + penalty_)
