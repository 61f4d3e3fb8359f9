"""Profiles load and validate; read planning merges registers; health backs off."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edge.meters.health import MeterHealth
from edge.meters.plan import decode_block, plan_for, plan_reads
from edge.meters.result import OK, TIMEOUT
from edge.portable import modbus
from hardware import profiles


def test_shipped_profiles() -> None:
    names = profiles.names()
    assert {"sdm120", "sdm630", "abb_b23", "dsmr5", "dsmr4", "dsmr22"} <= set(names)
    for name in names:
        p = profiles.load(name)
        assert p.name == name and p.quantities
        for q in p.quantities:
            assert q.unit in profiles.SI_UNITS


def test_sdm120_register_map() -> None:
    p = profiles.load("sdm120")
    energy = p.quantity("1-0:1.8.0")
    assert (energy.address, energy.function, energy.dtype, energy.scale, energy.unit) == (
        0x0048, 4, "float32", 3.6e6, "J")
    assert p.quantity("1-0:32.7.0").address == 0


def test_dsmr_serial_settings() -> None:
    assert profiles.load("dsmr5").serial.framing == "8N1"
    assert profiles.load("dsmr4").serial.framing == "7E1"
    s22 = profiles.load("dsmr22").serial
    assert (s22.baud, s22.framing) == (9600, "7E1")


def test_unknown_profile() -> None:
    with pytest.raises(profiles.UnknownProfileError) as info:
        profiles.load("sdm999")
    assert info.value.code == "profile.unknown"


BASE = """
[meter]
model = "x"
protocol = "modbus"
function = 4
type = "float32"
[limits]
nominal_voltage_v = 230.0
rated_current_a = 10.0
max_power_w = 2300.0
"""


@pytest.mark.parametrize(("body", "complaint"), [
    ('[[quantity]]\nobis = "1-0:1.8"\nname="a"\naddress=0\nunit="J"\nmin=0.0\nmax=1.0\n',
     "OBIS"),
    ('[[quantity]]\nobis = "1-0:1.8.0"\nname="a"\naddress=0\nunit="kWh"\nmin=0.0\nmax=1.0\n',
     "unit"),
    ('[[quantity]]\nobis = "1-0:1.8.0"\nname="a"\naddress=0\nunit="J"\nmin=1.0\nmax=0.0\n',
     "min"),
    ('[[quantity]]\nobis = "1-0:1.8.0"\nname="a"\naddress=0\nunit="J"\nmin=0.0\nmax=1.0\n'
     '[[quantity]]\nobis = "1-0:2.8.0"\nname="b"\naddress=1\nunit="J"\nmin=0.0\nmax=1.0\n',
     "overlaps"),
    ('[[quantity]]\nobis = "1-0:1.8.0"\nname="a"\naddress=0\ntype="float99"\nunit="J"\n'
     'min=0.0\nmax=1.0\n', "type"),
    ('[[quantity]]\nobis = "1-0:1.8.0"\nname="a"\nunit="J"\nmin=0.0\nmax=1.0\n', "address"),
])
def test_invalid_profiles(tmp_path: Path, body: str, complaint: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE + body)
    with pytest.raises(profiles.ProfileError) as info:
        profiles.load_file(path)
    assert complaint in str(info.value)
    assert info.value.code == "profile.invalid"


def test_serial_override() -> None:
    s = profiles.load("dsmr4").serial.override(framing="8N1")
    assert (s.baud, s.framing) == (115200, "8N1")
    with pytest.raises(profiles.ProfileError):
        s.override(framing="9X1")


def test_plan_merges_within_gap_and_limits() -> None:
    sdm630 = profiles.load("sdm630")
    plan = plan_for(sdm630)  # 0x00..0x4B with gaps <= 16 and 80 registers max
    assert [(b.function, b.address, b.count) for b in plan] == [(4, 0x0000, 0x4C)]
    tight = plan_reads(sdm630.register_quantities(), 0, 125)
    assert [b.address for b in tight] == [0x00, 0x1E, 0x34, 0x3E, 0x46]
    small = plan_reads(sdm630.register_quantities(), 16, 20)
    assert all(b.count <= 20 for b in small)
    covered = {q.obis for b in small for q in b.quantities}
    assert covered == {q.obis for q in sdm630.register_quantities()}


def test_plan_keeps_function_codes_apart_and_decodes() -> None:
    abb = profiles.load("abb_b23")
    plan = plan_for(abb)
    # 0x5B16 -> 0x5B2C skips 22 registers, more than the 16 the profile allows
    assert [(b.function, b.address, b.count) for b in plan] == [
        (3, 0x5000, 8), (3, 0x5B00, 0x16), (3, 0x5B2C, 0x5B3B - 0x5B2C)]
    block = plan[0]
    registers = (modbus.encode_value(123456, "uint64", "big", "big")
                 + modbus.encode_value(5, "uint64", "big", "big"))
    values = decode_block(block, registers)
    assert values["1-0:1.8.0"] == pytest.approx(123456 * 36000.0)
    assert values["1-0:2.8.0"] == pytest.approx(5 * 36000.0)


def test_health_offline_backoff_and_recovery(seed: int) -> None:
    h = MeterHealth(random.Random(seed), offline_after=3, backoff_min_s=2.0, backoff_max_s=10.0)
    for t in range(3):
        assert h.due(float(t))
        h.record(TIMEOUT, float(t))
    assert h.offline and not h.due(2.5) and h.due(2.0 + 2.0 * 1.2)
    waits = []
    for _ in range(5):
        now = h.retry_at_s
        h.record(TIMEOUT, now)
        waits.append(h.backoff_s)
    assert waits == [4.0, 8.0, 10.0, 10.0, 10.0]
    h.record(OK, h.retry_at_s)
    assert not h.offline and h.due(0.0)
    assert h.counters[TIMEOUT] == 8 and h.counters[OK] == 1 and h.errors() == 8
