"""Fixtures for the node's network shell: a test registrar, devices, signed batches,
a running `NodeServer` around the in-memory node, and a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiocoap
import pytest

from aggregator.net.server import NetConfig, NodeServer
from aggregator.net.twin import TwinNode
from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from tests.ports import free_port

T = TypeVar("T")
NODE_KEY = crypto.SigningKey.from_bytes(bytes(range(7, 39)))  # test key, not a secret
NODE_ID = "node-0"
METER = "M-0001"
MOSQUITTO = "/usr/sbin/mosquitto"
TEST_DEADLINE_S = 30.0


@dataclass
class Device:
    device_id: str
    key: crypto.SigningKey
    certificate: bytes

    def batch(self, seq: int, energy_j: int = 1_000_000, meter: str = METER) -> batch_mod.Batch:
        now_s = int(time.time())
        records = [
            batch_mod.Record("1-0:1.8.0", energy_j + seq, "J"),
            batch_mod.Record("1-0:1.7.0", 512.5, "W"),
        ]
        group = batch_mod.MeterGroup(meter, now_s - 1, records)
        return batch_mod.Batch(self.device_id, seq, now_s, True, [group])

    def message(self, seq: int, energy_j: int = 1_000_000, meter: str = METER) -> bytes:
        item = self.batch(seq, energy_j, meter)
        return batch_mod.sign(item, self.key.sign, self.certificate)


@dataclass
class Pki:
    registrar: Registrar
    devices: dict[str, Device] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()

    @property
    def public_key(self) -> bytes:
        return self.registrar.public_key

    def device(self, device_id: str) -> Device:
        if device_id not in self.devices:
            issued = self.registrar.issue(device_id, int(time.time()) - 60, meters=(METER,))
            assert issued.device_key is not None
            self.devices[device_id] = Device(device_id, issued.device_key, issued.certificate)
        return self.devices[device_id]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("registrar")
    return Pki(Registrar.init(directory), revoked=frozenset({"gw-revoked"}))


def run(coro: Awaitable[T], timeout_s: float = TEST_DEADLINE_S) -> T:
    """Run one test's coroutine with a deadline, so a hang fails instead of stalling."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def loopback_config(**changes: object) -> NetConfig:
    fields: dict[str, object] = {
        "node_id": NODE_ID, "coap_port": 0, "http_port": 0, "embedded_mqtt_port": 0, "seed": 5,
    }
    fields.update(changes)
    return NetConfig(**fields)  # type: ignore[arg-type]


def make_node(pki: Pki, **changes: object) -> TwinNode:
    fields: dict[str, object] = {"node_id": NODE_ID, "revoked": lambda: pki.revoked}
    fields.update(changes)
    return TwinNode(pki.public_key, NODE_KEY, **fields)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(node: TwinNode, config: NetConfig) -> AsyncIterator[NodeServer]:
    await node.start()
    server = NodeServer(node, config)
    try:
        await server.start()
        yield server
    finally:
        await server.shutdown()
        await node.shutdown()


@contextlib.asynccontextmanager
async def coap_client() -> AsyncIterator[aiocoap.Context]:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        yield context
    finally:
        await context.shutdown()


async def coap_post(
    client: aiocoap.Context, port: int, payload: bytes, content_format: int | None = 18
) -> aiocoap.Message:
    request = aiocoap.Message(
        code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/gl/v1/up", payload=payload
    )
    if content_format is not None:
        request.opt.content_format = content_format
    return await client.request(request).response


# -- Mosquitto -------------------------------------------------------------------------


@dataclass
class Mosquitto:
    port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if shutil.which(MOSQUITTO) is None:
        pytest.skip("mosquitto is not installed")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    broker = Mosquitto(port, config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
