"""The P1 reader against the simulated P1 port on a real pseudo-terminal."""

from __future__ import annotations

import asyncio

import pytest

from edge.meters.p1 import P1Reader
from edge.meters.result import CRC, OK, TIMEOUT
from hardware.profiles import load
from simulator.model import Fleet
from simulator.servers import P1PtyEmitter
from tests.meters.conftest import run

T0 = 1_700_000_000.0
INTERVAL_S = 0.05


def fixed_clock() -> float:
    return T0 + 5000.0


@pytest.mark.parametrize("profile_name", ["dsmr5", "dsmr4", "dsmr22"])
def test_p1_reader_reads_simulated_meter(profile_name: str, seed: int) -> None:
    profile = load(profile_name)
    meter = Fleet(profile, [1], seed, T0).meter(1)
    truth = meter.values(fixed_clock())

    async def scenario() -> None:
        emitter = P1PtyEmitter(meter, INTERVAL_S, clock=fixed_clock)
        await emitter.start()
        # the profile's own settings (7E1 for DSMR 4 and 2.2): a pty ignores them
        reader = P1Reader("p1", profile, emitter.path)
        try:
            reading = await asyncio.to_thread(reader.read, 5.0)
            assert reading.status == OK, reading.error
            assert set(reading.values) == {q.obis for q in profile.quantities}
            for obis, value in reading.values.items():
                q = profile.quantity(obis)
                # telegrams carry kWh with 3 decimals, kW with 2-3, A as an integer
                tolerance = {"J": 3.6e3 * 2, "W": 10.0, "V": 0.05, "A": 0.5, "m3": 1e-3}[q.unit]
                assert value.v == pytest.approx(truth[obis], abs=tolerance), obis
                assert value.u == q.unit
        finally:
            reader.close()
            await emitter.shutdown()
    run(scenario())


def test_p1_crc_and_silence_are_counted_and_reading_goes_on(seed: int) -> None:
    profile = load("dsmr5")
    meter = Fleet(profile, [1], seed, T0).meter(1)

    async def scenario() -> None:
        emitter = P1PtyEmitter(meter, INTERVAL_S, clock=fixed_clock)
        await emitter.start()
        reader = P1Reader("p1", profile, emitter.path)
        try:
            meter.set_fault("crc")
            bad = await asyncio.to_thread(reader.read, 5.0)
            assert (bad.status, bad.values) == (CRC, {})
            meter.clear_fault()
            good = None
            for _ in range(20):  # telegrams already on the line may still carry the bad CRC
                good = await asyncio.to_thread(reader.read, 5.0)
                if good.status == OK:
                    break
            assert good is not None and good.status == OK
            meter.set_fault("silent")
            statuses = []
            for _ in range(10):  # telegrams sent before the fault are still read first
                silent = await asyncio.to_thread(reader.read, INTERVAL_S * 4)
                statuses.append(silent.status)
                if silent.status == TIMEOUT:
                    break
            assert statuses[-1] == TIMEOUT, statuses
            assert reader.health.counters[CRC] >= 1 and reader.health.counters[TIMEOUT] >= 1
            assert reader.health.counters[OK] >= 1
        finally:
            reader.close()
            await emitter.shutdown()
    run(scenario())
