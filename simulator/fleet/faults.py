"""Fault specifications for a simulated fleet: parse a SPEC, plan which device gets what.

SPEC syntax
-----------
A comma-separated list of `KIND[:AMOUNT[:PARAM]]`; AMOUNT is a count of devices (`3`)
or a share of the fleet (`5%`), default 1 device.  Durations are model seconds (the
unit of --interval; --speed shortens them on the wall clock).

    offline:AMOUNT[:SECONDS]    the gateway loses its uplink once for SECONDS (default 5
                                intervals), keeps reading and queueing, then drains its
                                queue in seq order                 -> all committed
    drift:AMOUNT[:SECONDS]      the gateway's clock is off by SECONDS (default 400; may be
                                negative) while it says it is synced
                                                                   -> committed (rule.skew
                                                                      on chain past 300 s)
    tamper:AMOUNT               once, a copy of a genuine batch with one signature byte
                                flipped goes out just before the genuine batch
                                                                   -> cose.signature, and
                                                                      no signed receipt
    replay:AMOUNT               once, an older committed batch is sent again byte for byte
                                                                   -> committed receipt at
                                                                      the original height
    rollback:AMOUNT             once, the seq counter is set back (restored backup): a new
                                batch signed with an already committed seq
                                                                   -> rejected rule.replay
    backwards:AMOUNT[:FRACTION] once, a meter's import register is set back by FRACTION
                                (default 0.5)                      -> committed (rule.backwards
                                                                      on chain)
    clone:AMOUNT                a second gateway with the same identity and its own seq
                                counter from 1 joins two intervals in
                                                                   -> its batches rejected
                                                                      rule.replay
    burst:AMOUNT                at every top of the model hour AMOUNT of the fleet sends an
                                extra batch at the same instant    -> all committed

Each device gets at most one of the per-device faults (all but burst), chosen with the
fleet's seeded `random.Random`; a one-shot fault fires at a seeded time between the
second interval and 60 % of the run (the first 10 intervals without --duration), so
its consequence is settled before the drain ends.

Errors: FaultSpecError (code sim.faults) for anything that does not parse or does not
fit the fleet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edge.portable.errors import LocalProtocolError

OFFLINE = "offline"
DRIFT = "drift"
TAMPER = "tamper"
REPLAY = "replay"
ROLLBACK = "rollback"
BACKWARDS = "backwards"
CLONE = "clone"
BURST = "burst"
PER_DEVICE = (OFFLINE, DRIFT, TAMPER, REPLAY, ROLLBACK, BACKWARDS, CLONE)
KINDS = (*PER_DEVICE, BURST)
# A spec longer than this is a mistake, not a test plan.
SPEC_CHARS_MAX = 1024
DEFAULT_OFFLINE_INTERVALS = 5
DEFAULT_DRIFT_S = 400.0
DEFAULT_BACKWARDS_FRACTION = 0.5
DRIFT_S_MAX = 10 * 365 * 86400.0


class FaultSpecError(LocalProtocolError):
    code = "sim.faults"


@dataclass(frozen=True)
class FaultItem:
    kind: str
    count: int | None       # a number of devices, or None when `share` is given
    share: float | None     # a fraction of the fleet in [0, 1]
    param: float | None

    def devices(self, fleet_size: int) -> int:
        if self.share is not None:
            return round(self.share * fleet_size)
        return self.count if self.count is not None else 1


@dataclass(frozen=True)
class DeviceFault:
    """One device's fault: what, when (model seconds after the start) and its parameter."""

    kind: str
    at_s: float
    param: float


@dataclass
class FaultPlan:
    by_device: dict[int, DeviceFault] = field(default_factory=dict)
    burst_devices: frozenset[int] = frozenset()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for fault in self.by_device.values():
            out[fault.kind] = out.get(fault.kind, 0) + 1
        if self.burst_devices:
            out[BURST] = len(self.burst_devices)
        return out


def parse(spec: str) -> list[FaultItem]:
    if len(spec) > SPEC_CHARS_MAX:
        raise FaultSpecError(f"fault spec longer than {SPEC_CHARS_MAX} characters")
    items = [_item(part.strip()) for part in spec.split(",") if part.strip()]
    kinds = [item.kind for item in items]
    for kind in kinds:
        if kinds.count(kind) > 1:
            raise FaultSpecError(f"fault {kind!r} given twice")
    return items


def _item(text: str) -> FaultItem:
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise FaultSpecError(f"fault {kind!r}: not one of {', '.join(KINDS)}")
    amount, _, param_text = rest.partition(":")
    count, share = _amount(kind, amount)
    param = None
    if param_text:
        try:
            param = float(param_text.rstrip("s"))
        except ValueError:
            raise FaultSpecError(
                f"fault {text!r}: parameter {param_text!r} is not a number") from None
        _check_param(kind, param)
    return FaultItem(kind, count, share, param)


def _amount(kind: str, text: str) -> tuple[int | None, float | None]:
    if not text:
        return 1, None
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100.0
            if not 0.0 <= share <= 1.0:
                raise ValueError(text)
            return None, share
        count = int(text)
        if count < 0:
            raise ValueError(text)
        return count, None
    except ValueError:
        raise FaultSpecError(f"fault {kind!r}: amount {text!r} is not N or N%") from None


def _check_param(kind: str, param: float) -> None:
    if kind == OFFLINE and not param > 0:
        raise FaultSpecError("offline: SECONDS must be positive")
    if kind == DRIFT and not abs(param) <= DRIFT_S_MAX:
        raise FaultSpecError(f"drift: SECONDS must be within ±{DRIFT_S_MAX:.0f}")
    if kind == BACKWARDS and not 0.0 < param < 1.0:
        raise FaultSpecError("backwards: FRACTION must be in (0, 1)")
    if kind in (TAMPER, REPLAY, ROLLBACK, CLONE, BURST):
        raise FaultSpecError(f"{kind}: takes no parameter")


def plan(items: list[FaultItem], fleet_size: int, interval_s: float, duration_s: float | None,
         rng: random.Random) -> FaultPlan:
    """Which device gets which fault and when; FaultSpecError if they do not fit."""
    wanted = [(item, item.devices(fleet_size)) for item in items if item.kind != BURST]
    total = sum(n for _, n in wanted)
    if total > fleet_size:
        raise FaultSpecError(f"faults need {total} distinct devices, the fleet has {fleet_size}")
    order = list(range(fleet_size))
    rng.shuffle(order)
    start_s = 2 * interval_s
    end_s = max(start_s + interval_s, 0.6 * duration_s if duration_s else 10 * interval_s)
    out = FaultPlan()
    taken = 0
    for item, n in wanted:
        for device in order[taken:taken + n]:
            at_s = start_s if item.kind == CLONE else rng.uniform(start_s, end_s)
            out.by_device[device] = DeviceFault(item.kind, at_s, _param(item, interval_s))
        taken += n
    for item in items:
        if item.kind == BURST:
            chosen = rng.sample(range(fleet_size), min(fleet_size, item.devices(fleet_size)))
            out.burst_devices = frozenset(chosen)
    return out


def _param(item: FaultItem, interval_s: float) -> float:
    if item.param is not None:
        return item.param
    if item.kind == OFFLINE:
        return DEFAULT_OFFLINE_INTERVALS * interval_s
    if item.kind == DRIFT:
        return DEFAULT_DRIFT_S
    if item.kind == BACKWARDS:
        return DEFAULT_BACKWARDS_FRACTION
    return 0.0
