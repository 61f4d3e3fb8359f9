"""Per-meter health: error counters, offline marking and retry backoff, sans-I/O.

A meter that fails `offline_after` polls in a row is marked offline; it is then probed
once per backoff interval, which doubles from `backoff_min_s` up to `backoff_max_s` with
±20 % jitter from an injected `random.Random` (so that many meters that went offline
together do not come back in lockstep).  While offline the meter costs its bus nothing,
so the other meters on the bus keep their poll rate.  One good answer clears it.
"""

from __future__ import annotations

import random

from edge.meters.result import OK, STATUSES


class MeterHealth:
    def __init__(self, rng: random.Random, offline_after: int = 3,
                 backoff_min_s: float = 2.0, backoff_max_s: float = 300.0) -> None:
        self.rng = rng
        self.offline_after = offline_after
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.counters = dict.fromkeys(STATUSES, 0)
        self.failures_in_row = 0
        self.offline = False
        self.backoff_s = 0.0
        self.retry_at_s = 0.0

    def due(self, now_s: float) -> bool:
        return not self.offline or now_s >= self.retry_at_s

    def record(self, status: str, now_s: float) -> None:
        self.counters[status] += 1
        if status == OK:
            self.failures_in_row = 0
            self.offline = False
            self.backoff_s = 0.0
            return
        self.failures_in_row += 1
        if self.failures_in_row >= self.offline_after:
            self._back_off(now_s)

    def _back_off(self, now_s: float) -> None:
        self.offline = True
        self.backoff_s = min(self.backoff_max_s, max(self.backoff_min_s, 2 * self.backoff_s))
        self.retry_at_s = now_s + self.backoff_s * self.rng.uniform(0.8, 1.2)

    def errors(self) -> int:
        return sum(n for status, n in self.counters.items() if status != OK)
