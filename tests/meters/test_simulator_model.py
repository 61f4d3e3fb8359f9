"""The simulated meters: seeded, energy never runs backwards, faults behave as named."""

from __future__ import annotations

import pytest

from edge.portable import modbus
from hardware.profiles import load
from simulator.model import Fleet, ModbusRefusal, SimulatorError, daily_shape
from simulator.protocol import ModbusResponder

T0 = 1_700_000_000.0


def test_same_seed_same_readings(seed: int) -> None:
    a = Fleet(load("sdm630"), [1, 2], seed, T0)
    b = Fleet(load("sdm630"), [1, 2], seed, T0)
    for t in (T0 + 10, T0 + 3600, T0 + 86400):
        assert a.meter(2).values(t) == b.meter(2).values(t)


def test_energy_integrates_and_never_runs_backwards(seed: int) -> None:
    meter = Fleet(load("sdm120"), [1], seed, T0).meter(1)
    last = meter.values(T0)["1-0:1.8.0"]
    for step in range(1, 200):
        now = T0 + step * 900.0
        energy = meter.values(now)["1-0:1.8.0"]
        assert energy >= last
        last = energy
    assert meter.values(T0)["1-0:1.8.0"] == last  # time going back changes nothing


def test_daily_shape_has_peaks() -> None:
    day = 86400.0 * 19675  # a Monday
    night = daily_shape(day + 3 * 3600)
    evening = daily_shape(day + 19 * 3600)
    assert evening > 2 * night


def test_stuck_and_rollback_faults(seed: int) -> None:
    meter = Fleet(load("sdm120"), [1], seed, T0).meter(1)
    before = meter.values(T0 + 60)
    meter.set_fault("stuck", now_s=T0 + 60)
    assert meter.values(T0 + 3600) == before
    meter.clear_fault("stuck")
    energy = meter.values(T0 + 7200)["1-0:1.8.0"]
    meter.set_fault("rollback", fraction=0.25)
    assert meter.values(T0 + 7200)["1-0:1.8.0"] == pytest.approx(energy * 0.75)


def test_register_map_byte_for_byte(seed: int) -> None:
    fleet = Fleet(load("sdm120"), [1], seed, T0)
    values = fleet.meter(1).values(T0)
    regs = fleet.meter(1).read_registers(4, 0x0048, 2, T0)
    assert modbus.decode_value(regs, "float32", "big", "big") == pytest.approx(
        values["1-0:1.8.0"] / 3.6e6, rel=1e-6)
    with pytest.raises(ModbusRefusal) as info:
        fleet.meter(1).read_registers(4, 0x0100, 2, T0)
    assert info.value.exception_code == modbus.ILLEGAL_DATA_ADDRESS
    with pytest.raises(ModbusRefusal):
        fleet.meter(1).read_registers(3, 0, 2, T0)  # the SDM120 has no holding map here


def test_responder_faults(seed: int) -> None:
    fleet = Fleet(load("sdm120"), [1, 2, 3], seed, T0)
    fleet.set_fault(2, "silent")
    fleet.set_fault(3, "slow", delay_s=0.3)
    r = ModbusResponder(fleet)
    req = modbus.encode_read_request(4, 0, 2)
    assert r.answer(1, req, T0).pdu is not None
    assert r.answer(2, req, T0).pdu is None
    assert r.answer(9, req, T0).pdu is None
    assert r.answer(3, req, T0).delay_s == 0.3
    fleet.set_fault(1, "exception", exception_code=6)
    assert r.answer(1, req, T0).pdu == modbus.encode_exception(4, 6)
    fleet.clear_fault(1)
    assert r.answer(1, b"\x2b\x0e", T0).pdu == modbus.encode_exception(0x2B, 1)
    with pytest.raises(SimulatorError):
        fleet.set_fault(1, "melt")
