"""Each metering rule on its own: the case it catches and the cases it must let pass."""

from __future__ import annotations

import random

from aggregator import rules
from edge.portable.batch import Batch, MeterGroup, Record

T = 1_763_760_000


def batch(
    seq: int = 5,
    energy: int | float = 1000,
    voltage: float = 230.0,
    sent_at: int = T,
    bt: int = T - 1,
    synced: bool = True,
) -> Batch:
    records = [Record("1-0:1.8.0", energy, "J"), Record("1-0:32.7.0", voltage, "V")]
    return Batch("gw-1", seq, sent_at, synced, [MeterGroup("M1", bt, records)])


def test_replay_catches_equal_and_lower_seq() -> None:
    assert rules.check_replay(5, batch(seq=5)).code == rules.REPLAY  # type: ignore[union-attr]
    assert rules.check_replay(9, batch(seq=5)) is not None  # the window is full by default


def test_replay_passes_first_and_next_seq() -> None:
    assert rules.check_replay(None, batch(seq=0)) is None
    assert rules.check_replay(4, batch(seq=5)) is None


def test_a_late_seq_inside_the_window_is_not_a_replay() -> None:
    mask, missing = rules.next_window(4, rules.SEEN_ALL, 7)  # 5 and 6 still open
    assert missing == 0
    assert rules.check_replay(7, batch(seq=6), mask) is None
    assert rules.check_replay(7, batch(seq=5), mask) is None
    assert rules.check_replay(7, batch(seq=4), mask) is not None  # committed already
    mask, missing = rules.next_window(7, mask, 5)
    assert missing == 0
    assert rules.check_replay(7, batch(seq=5), mask) is not None  # now committed
    assert rules.check_replay(7, batch(seq=6), mask) is None


def test_a_devices_first_batches_may_come_in_any_order() -> None:
    mask, missing = rules.next_window(None, 0, 3)  # 1 and 2 still open
    assert missing == 0
    assert rules.check_replay(3, batch(seq=1), mask) is None
    assert rules.check_replay(3, batch(seq=2), mask) is None
    assert rules.check_replay(3, batch(seq=0), mask) is not None  # gateways start at 1
    mask, _ = rules.next_window(None, 0, 1)
    assert mask == rules.SEEN_ALL


def test_below_the_window_is_a_replay() -> None:
    mask, _ = rules.next_window(0, rules.SEEN_ALL, rules.SEQ_WINDOW + 10)  # 1.. open
    last = rules.SEQ_WINDOW + 10
    assert rules.check_replay(last, batch(seq=last - rules.SEQ_WINDOW), mask) is None
    assert rules.check_replay(last, batch(seq=last - rules.SEQ_WINDOW - 1), mask) is not None


def test_seqs_are_missing_only_once_the_window_passes_them() -> None:
    mask, missing = rules.next_window(1, rules.SEEN_ALL, 5)  # 2, 3, 4 may still come
    assert missing == 0
    mask, missing = rules.next_window(5, mask, 5 + rules.SEQ_WINDOW)  # 2..4 fall out
    assert missing == 3
    last = 5 + rules.SEQ_WINDOW  # its window: 5 committed, 6..last-1 open
    mask, missing = rules.next_window(last, mask, 10**6)
    open_in_window = rules.SEQ_WINDOW - 1
    skipped_below_new_window = (10**6 - rules.SEQ_WINDOW) - (last + 1)
    assert missing == open_in_window + skipped_below_new_window


def test_next_window_matches_a_set_of_seqs() -> None:
    """The mask is a compact set: compare it with a plain one over seeded random walks."""
    rng = random.Random(7)
    for _ in range(200):
        last, mask, committed = 10, rules.SEEN_ALL, set(range(11))
        for _ in range(40):
            seq = max(0, last + rng.randint(-rules.SEQ_WINDOW - 3, 3 * rules.SEQ_WINDOW))
            replay = rules.check_replay(last, batch(seq=seq), mask) is not None
            in_window = seq > last - 1 - rules.SEQ_WINDOW
            assert replay == (seq in committed or not in_window), (last, seq)
            if replay:
                continue
            floor_before = last - rules.SEQ_WINDOW
            mask, missing = rules.next_window(last, mask, seq)
            committed.add(seq)
            last = max(last, seq)
            floor_after = last - rules.SEQ_WINDOW
            gone = set(range(max(floor_before, 0), max(floor_after, 0)))
            assert missing == len(gone - committed)


def test_gap_counts_missing_batches() -> None:
    found = rules.check_gap(3, batch(seq=5 + rules.SEQ_WINDOW))
    assert found is not None and found.code == rules.GAP
    assert "3 batches missing" in found.detail


def test_gap_passes_when_nothing_is_missing() -> None:
    assert rules.check_gap(0, batch(seq=5)) is None


def test_backwards_register() -> None:
    found = rules.check_backwards({("M1", "1-0:1.8.0"): 2000}, batch(energy=1999))
    assert [(v.code, v.meter_id, v.obis) for v in found] == [(rules.BACKWARDS, "M1", "1-0:1.8.0")]


def test_backwards_passes_equal_growing_and_unknown() -> None:
    assert rules.check_backwards({("M1", "1-0:1.8.0"): 1000}, batch(energy=1000)) == []
    assert rules.check_backwards({("M1", "1-0:1.8.0"): 10}, batch(energy=1000)) == []
    assert rules.check_backwards({}, batch(energy=0)) == []
    # Only registers (sums) count: a voltage may fall.
    assert rules.check_backwards({("M1", "1-0:32.7.0"): 240.0}, batch(voltage=1.0)) == []


def test_next_registers_take_the_new_value_even_when_lower() -> None:
    updated = rules.next_registers({("M1", "1-0:1.8.0"): 2000}, batch(energy=5))
    assert updated == {("M1", "1-0:1.8.0"): 5}


def test_plausibility_flags_one_per_meter_and_counts() -> None:
    limits = {"M1": {"1-0:32.7.0": (0.0, 300.0), "1-0:1.8.0": (0.0, 500.0)}}
    found = rules.check_plausibility(limits, batch(voltage=301.0, energy=1000))
    assert len(found) == 1 and found[0].code == rules.PLAUSIBILITY
    assert "(2 values)" in found[0].detail


def test_plausibility_passes_inside_bounds_and_unprofiled_meters() -> None:
    limits = {"M1": {"1-0:32.7.0": (0.0, 300.0)}}
    assert rules.check_plausibility(limits, batch(voltage=300.0)) == []
    assert rules.check_plausibility({}, batch(voltage=1e9)) == []
    assert rules.check_plausibility({"M2": {"1-0:32.7.0": (0.0, 1.0)}}, batch()) == []


def test_skew_ahead_behind_and_read_time() -> None:
    ahead = rules.check_skew(batch(sent_at=T + rules.SKEW_AHEAD_S + 1), T)
    behind = rules.check_skew(batch(sent_at=T - rules.SKEW_BEHIND_S - 1), T)
    read = rules.check_skew(batch(bt=T + rules.SKEW_AHEAD_S + 1), T)
    assert [v.code for v in ahead + behind + read] == [rules.SKEW] * 3
    assert read[0].meter_id == "M1"


def test_skew_passes_within_bounds_and_unsynced_clocks() -> None:
    assert rules.check_skew(batch(sent_at=T + rules.SKEW_AHEAD_S), T) == []
    assert rules.check_skew(batch(sent_at=T - rules.SKEW_BEHIND_S), T) == []
    assert rules.check_skew(batch(sent_at=T + 10**6, synced=False), T) == []


def test_credit_score_formula() -> None:
    assert rules.credit_score(0, {}) == rules.CREDIT_MAX
    assert rules.credit_score(100, {}) == 1000
    assert rules.credit_score(80, {rules.BACKWARDS: 1}) == 800
    assert rules.credit_score(0, {rules.GAP: 3}) == 0
    # Codes without a weight (rejections anyone could forge) cost nothing.
    assert rules.credit_score(10, {"cose.signature": 50}) == 1000


def test_credit_score_recovers_with_good_batches() -> None:
    counts = {rules.PLAUSIBILITY: 1}
    scores = [rules.credit_score(n, counts) for n in (1, 10, 100, 1000)]
    assert scores == sorted(scores) and scores[-1] > 990


def test_violation_detail_is_bounded() -> None:
    found = rules.check_gap(2**62, batch(seq=2**62))
    assert found is not None and len(found.detail) <= rules.DETAIL_CHARS_MAX


def test_verification_flags_a_meter_whose_certificates_all_lapsed() -> None:
    expired = {"M1": [(T - 1000, T - 10)]}
    [found] = rules.check_verification(expired, batch(bt=T - 1))
    assert (found.code, found.meter_id, found.seq) == (rules.VERIFICATION, "M1", 5)
    assert rules.check_verification({"M1": [(T + 10, T + 1000)]}, batch(bt=T - 1))  # not yet


def test_verification_passes_a_renewed_or_unrecorded_meter() -> None:
    renewed = {"M1": [(T - 1000, T - 10), (T - 10, T + 1000)]}
    assert rules.check_verification(renewed, batch(bt=T - 1)) == []
    assert rules.check_verification({}, batch()) == []           # never recorded: not judged
    assert rules.check_verification({"M2": [(0, 1)]}, batch()) == []  # another meter's record
    assert rules.check_verification({"M1": [(T - 1, T)]}, batch(bt=T - 1)) == []
    assert rules.check_verification({"M1": [(T - 1, T)]}, batch(bt=T))   # until is exclusive
