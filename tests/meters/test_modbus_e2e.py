"""Our drivers against our simulator (TCP, RTU on a pty) and against pymodbus's server;
pymodbus's client against our simulator.  Real sockets and pseudo-terminals only."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusSerialClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.meters.bus import BusPool, ModbusBus, rtu_bus, tcp_bus
from edge.meters.poller import ModbusMeter, Poller
from edge.meters.result import CRC, EXCEPTION, MALFORMED, OFFLINE, OK, TIMEOUT, TRUNCATED
from edge.portable import modbus
from edge.portable.errors import LocalProtocolError
from hardware.profiles import Profile, load, load_file
from simulator.model import Fleet, register_image
from simulator.servers import ModbusRtuPtySimulator, ModbusTcpSimulator
from tests.meters.conftest import LOOPBACK, free_port, run

T0 = 1_700_000_000.0
TIMEOUT_S = 0.3  # generous for a loaded 2-core machine; faults make the test wait it out


def fixed_clock() -> float:
    return T0 + 3600.0


def assert_matches_simulator(profile: Profile, fleet: Fleet, unit: int,
                             values: dict[str, float]) -> None:
    truth = fleet.meter(unit).values(fixed_clock())
    assert set(values) == {q.obis for q in profile.quantities}
    for q in profile.quantities:
        # float32 registers keep 24 bits; integer registers keep their resolution
        tolerance = abs(truth[q.obis]) * 1e-6 + q.scale
        assert values[q.obis] == pytest.approx(truth[q.obis], abs=tolerance), q.obis


async def make_bus(kind: str, fleet: Fleet) -> tuple[ModbusBus, ModbusTcpSimulator |
                                                     ModbusRtuPtySimulator]:
    if kind == "tcp":
        server: ModbusTcpSimulator | ModbusRtuPtySimulator = ModbusTcpSimulator(
            fleet, LOOPBACK, 0, clock=fixed_clock)
        await server.start()
        assert isinstance(server, ModbusTcpSimulator)
        return tcp_bus(LOOPBACK, server.port, TIMEOUT_S), server
    server = ModbusRtuPtySimulator(fleet, clock=fixed_clock)
    await server.start()
    # A Linux pty keeps CS8 without parity whatever is asked, and pyserial's later
    # reconfiguration (pymodbus sets the timeout) then fails with EINVAL: 8N1 on a pty.
    return rtu_bus(server.path, fleet.profile.serial.override(framing="8N1"), TIMEOUT_S), server


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
@pytest.mark.parametrize("profile_name", ["sdm120", "sdm630", "abb_b23"])
def test_drivers_read_simulator_exactly(kind: str, profile_name: str, seed: int) -> None:
    profile = load(profile_name)
    fleet = Fleet(profile, [1, 7], seed, T0)

    async def scenario() -> None:
        bus, server = await make_bus(kind, fleet)
        try:
            for unit in (1, 7):
                reading = await ModbusMeter(f"m{unit}", profile, unit, bus).poll()
                assert reading.status == OK, reading.error
                assert_matches_simulator(profile, fleet, unit,
                                         {o: x.v for o, x in reading.values.items()})
                assert all(x.u == profile.quantity(o).unit for o, x in reading.values.items())
            assert bus.requests == 2 * len(ModbusMeter("x", profile, 1, bus).plan)
        finally:
            bus.close()
            await server.shutdown()
    run(scenario())


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_faults_are_counted_and_polling_goes_on(kind: str, seed: int) -> None:
    profile = load("sdm120")
    fleet = Fleet(profile, [1, 2, 3, 4, 5, 6], seed, T0)
    fleet.set_fault(2, "crc")
    fleet.set_fault(3, "exception", exception_code=2)
    fleet.set_fault(4, "silent")
    fleet.set_fault(5, "slow", delay_s=30.0)  # far beyond the timeout: never arrives
    fleet.set_fault(6, "slow", delay_s=TIMEOUT_S / 4)  # slow but within the timeout
    expected = {2: CRC if kind == "rtu" else MALFORMED, 3: EXCEPTION, 4: TIMEOUT, 5: TIMEOUT}

    async def scenario() -> None:
        bus, server = await make_bus(kind, fleet)
        meters = [ModbusMeter(f"m{u}", profile, u, bus, retries=1) for u in range(1, 7)]
        poller = Poller(meters)
        try:
            for _ in range(3):
                readings = {int(r.meter_id[1:]): r for r in await poller.poll_once()}
                assert readings[1].status == OK and readings[6].status == OK
                for unit, status in expected.items():
                    assert readings[unit].status == status, readings[unit].error
            assert meters[0].health.counters[OK] == 3
            assert meters[2].health.counters[EXCEPTION] == 3  # exceptions are not retried
            assert meters[1].health.counters[expected[2]] == 6  # 3 polls x (1 + 1 retry)
            assert all(m.health.offline for m in meters[1:5]) and not meters[5].health.offline
            requests_before = bus.requests
            readings = {int(r.meter_id[1:]): r for r in await poller.poll_once()}
            assert readings[1].status == OK
            assert {readings[u].status for u in expected} == {OFFLINE}
            # offline meters cost the bus nothing until their backoff expires
            assert bus.requests - requests_before == 2 * len(meters[0].plan)
        finally:
            poller.close()
            await server.shutdown()
    run(scenario())


class BadRtuSlave(ModbusRtuPtySimulator):
    """Answers unit 1 properly, unit 2 with half a frame, unit 3 with the wrong function."""

    def _handle(self, unit: int, pdu: bytes) -> None:
        good = modbus.encode_rtu(unit, modbus.encode_read_response(4, [0x4366, 0]))
        if unit == 2:
            self.pty.write(good[:4])
        elif unit == 3:
            self.pty.write(modbus.encode_rtu(unit, modbus.encode_read_response(3, [1, 2])))
        else:
            self.pty.write(good)


def test_short_reads_and_garbled_frames_over_rtu(seed: int) -> None:
    profile = load("sdm120")
    fleet = Fleet(profile, [1, 2, 3], seed, T0)

    async def scenario() -> None:
        slave = BadRtuSlave(fleet)
        await slave.start()
        bus = rtu_bus(slave.path, profile.serial.override(framing="8N1"), TIMEOUT_S)
        try:
            results = {}
            for unit in (1, 2, 3, 1):
                try:
                    await bus.read(unit, 4, 0, 2)
                    results[unit] = OK
                except modbus.FrameError as error:
                    results[unit] = {"frame.truncated": TRUNCATED,
                                     "frame.malformed": MALFORMED}.get(error.code, error.code)
            assert results == {1: OK, 2: TRUNCATED, 3: MALFORMED}
        finally:
            bus.close()
            await slave.shutdown()
    run(scenario())


def test_drivers_against_pymodbus_server(seed: int) -> None:
    profile = load("sdm630")
    meter = Fleet(profile, [1], seed, T0).meter(1)
    truth = meter.values(fixed_clock())
    image = register_image(profile.register_quantities(), truth, 4)
    registers = [image.get(a, 0) for a in range(max(image) + 1)]

    def block(values: list[int], kind: DataType) -> list[SimData]:
        return [SimData(address=0, values=values, datatype=kind)]

    device = SimDevice(id=1, simdata=(block([0], DataType.BITS), block([0], DataType.BITS),
                                      block([0], DataType.REGISTERS),
                                      block(registers, DataType.REGISTERS)))

    async def scenario() -> None:
        port = free_port()
        server = ModbusTcpServer(device, address=(LOOPBACK, port))
        await server.serve_forever(background=True)
        bus = tcp_bus(LOOPBACK, port, 1.0)
        try:
            async def up() -> bool:
                return (await ModbusMeter("m1", profile, 1, bus).poll()).status == OK
            deadline = time.monotonic() + 5.0
            while not await up():
                assert time.monotonic() < deadline, "pymodbus server did not come up"
                await asyncio.sleep(0.02)
            reading = await ModbusMeter("m1", profile, 1, bus).poll()
            for q in profile.quantities:
                assert reading.values[q.obis].v == pytest.approx(
                    truth[q.obis], abs=abs(truth[q.obis]) * 1e-6), q.obis
        finally:
            bus.close()
            await server.shutdown()
    run(scenario())


@pytest.mark.interop
def test_pymodbus_tcp_client_against_our_simulator(seed: int) -> None:
    profile = load("abb_b23")
    fleet = Fleet(profile, [3], seed, T0)
    image = register_image(profile.register_quantities(), fleet.meter(3).values(fixed_clock()), 3)

    async def scenario() -> None:
        server = ModbusTcpSimulator(fleet, LOOPBACK, 0, clock=fixed_clock)
        await server.start()
        client = AsyncModbusTcpClient(LOOPBACK, port=server.port, timeout=1, retries=0)
        try:
            assert await client.connect()
            rr = await client.read_holding_registers(0x5000, count=8, device_id=3)
            assert not rr.isError()
            assert rr.registers == [image[a] for a in range(0x5000, 0x5008)]
            bad = await client.read_holding_registers(0x7000, count=2, device_id=3)
            assert bad.isError() and bad.exception_code == modbus.ILLEGAL_DATA_ADDRESS
            wrong_fc = await client.read_input_registers(0x5000, count=2, device_id=3)
            assert wrong_fc.isError()
        finally:
            client.close()
            await server.shutdown()
    run(scenario())


@pytest.mark.interop
def test_pymodbus_serial_client_against_our_rtu_simulator(seed: int) -> None:
    profile = load("sdm120")
    fleet = Fleet(profile, [1, 2], seed, T0)
    image = register_image(profile.register_quantities(), fleet.meter(2).values(fixed_clock()), 4)

    async def scenario() -> None:
        server = ModbusRtuPtySimulator(fleet, clock=fixed_clock)
        await server.start()

        def talk() -> None:
            client = ModbusSerialClient(server.path, baudrate=9600, timeout=1, retries=0)
            try:
                assert client.connect()
                rr = client.read_input_registers(0x0046, count=6, device_id=2)
                assert not rr.isError()
                assert rr.registers == [image.get(a, 0) for a in range(0x46, 0x4C)]
            finally:
                client.close()
        try:
            await asyncio.to_thread(talk)
        finally:
            await server.shutdown()
    run(scenario())


def test_bus_pool_shares_one_bus_per_line(seed: int) -> None:
    sdm120, sdm630 = load("sdm120"), load("sdm630")

    async def scenario() -> None:
        pool = BusPool(TIMEOUT_S)
        server = ModbusRtuPtySimulator(Fleet(sdm120, [1, 2], seed, T0), clock=fixed_clock)
        await server.start()
        try:
            a = pool.rtu(server.path, sdm120.serial)
            assert pool.rtu(server.path, sdm120.serial) is a
            assert pool.tcp(LOOPBACK, 1) is pool.tcp(LOOPBACK, 1)
            with pytest.raises(LocalProtocolError):
                pool.rtu(server.path, sdm630.serial.override(baud=19200))
            poller = Poller([ModbusMeter(f"m{u}", sdm120, u, a) for u in (1, 2)])
            assert [r.status for r in await poller.poll_once()] == [OK, OK]
        finally:
            pool.close()
            await server.shutdown()
    run(scenario())


SWAPPED = """
[meter]
model = "test meter with swapped words and bytes"
protocol = "modbus"
function = 3
word_order = "little"
byte_order = "little"
max_registers_per_request = 10
max_gap_registers = 2
[limits]
nominal_voltage_v = 230.0
rated_current_a = 10.0
max_power_w = 2300.0
[[quantity]]
obis = "1-0:32.7.0"
name = "voltage"
address = 100
type = "float32"
unit = "V"
min = 0.0
max = 300.0
[[quantity]]
obis = "1-0:1.7.0"
name = "power"
address = 104
type = "int32"
scale = 0.1
unit = "W"
min = -3000.0
max = 3000.0
[[quantity]]
obis = "1-0:1.8.0"
name = "energy"
address = 120
type = "uint64"
scale = 3600.0
unit = "J"
kind = "energy"
min = 0.0
max = 1e15
"""


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_swapped_word_and_byte_order_end_to_end(kind: str, tmp_path: Path, seed: int) -> None:
    path = tmp_path / "swapped.toml"
    path.write_text(SWAPPED)
    profile = load_file(path)
    fleet = Fleet(profile, [4], seed, T0)

    async def scenario() -> None:
        bus, server = await make_bus(kind, fleet)
        try:
            meter = ModbusMeter("m4", profile, 4, bus)
            assert [(b.address, b.count) for b in meter.plan] == [(100, 6), (120, 4)]
            reading = await meter.poll()
            assert reading.status == OK, reading.error
            assert_matches_simulator(profile, fleet, 4, {o: x.v for o, x in reading.values.items()})
        finally:
            bus.close()
            await server.shutdown()
    run(scenario())
