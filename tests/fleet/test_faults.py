"""The fault SPEC: what parses, what is refused with sim.faults, and the seeded plan."""

from __future__ import annotations

import random

import pytest

from simulator.fleet import faults


def test_spec_items_amounts_and_parameters() -> None:
    items = faults.parse("offline:10%:120,drift:3:-400,tamper,burst:25%,backwards:2:0.3")
    by_kind = {item.kind: item for item in items}
    assert by_kind["offline"].share == pytest.approx(0.10)
    assert by_kind["offline"].param == 120
    assert by_kind["drift"].count == 3 and by_kind["drift"].param == -400
    assert by_kind["tamper"].devices(100) == 1
    assert by_kind["burst"].devices(200) == 50
    assert by_kind["backwards"].param == pytest.approx(0.3)
    assert faults.parse("") == []


@pytest.mark.parametrize("spec", [
    "melt:1", "offline:x", "offline:-1", "offline:150%", "offline:1:0", "tamper:1:5",
    "backwards:1:1.5", "drift:1:abc", "tamper,tamper", "x" * 2000,
])
def test_bad_specs_are_refused_with_a_stable_code(spec: str) -> None:
    with pytest.raises(faults.FaultSpecError) as caught:
        faults.parse(spec)
    assert caught.value.code == "sim.faults"


def test_plan_gives_each_device_at_most_one_fault_and_fits_the_window(seed: int) -> None:
    items = faults.parse("offline:5,drift:5,tamper:5,replay:5,rollback:5,clone:5,burst:50%")
    plan = faults.plan(items, 40, 60.0, 600.0, random.Random(seed))
    assert len(plan.by_device) == 30
    assert plan.counts()["burst"] == 20
    for fault in plan.by_device.values():
        assert 120.0 <= fault.at_s <= 360.0
    again = faults.plan(items, 40, 60.0, 600.0, random.Random(seed))
    assert again.by_device == plan.by_device


def test_plan_refuses_more_faulty_devices_than_the_fleet_has() -> None:
    with pytest.raises(faults.FaultSpecError):
        faults.plan(faults.parse("offline:3,drift:3"), 5, 60.0, None, random.Random(1))
