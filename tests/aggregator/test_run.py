"""`gridledger aggregator run` as a process: ingest over CoAP, commit, SIGTERM, restart."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiocoap
import pytest

from aggregator import tx
from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import receipt as receipt_mod
from gridledger import genesis as genesis_mod
from tests.ports import free_port

DEADLINE_S = 60.0


def wait_for(predicate: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"node exited {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RunningNode:
    def __init__(self, data_dir: Path, ca_dir: Path) -> None:
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port(socket.SOCK_STREAM)
        self.mqtt_port = mqtt_port = free_port(socket.SOCK_STREAM)
        self.log = data_dir.parent / "node.log"
        command = [str(Path(sys.executable).parent / "gridledger"), "aggregator", "run",
                   "--data-dir", str(data_dir), "--ca-dir", str(ca_dir),
                   "--coap", f"127.0.0.1:{self.coap_port}",
                   "--http", f"127.0.0.1:{self.http_port}",
                   "--embedded-mqtt", f"127.0.0.1:{mqtt_port}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.status() is not None, "HTTP /v1/status", self.proc)

    def status(self) -> dict[str, object] | None:
        url = f"http://127.0.0.1:{self.http_port}/v1/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return dict(json.loads(answer.read()))
        except OSError:
            return None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE_S)


@pytest.fixture
def registrar(tmp_path: Path) -> Registrar:
    return Registrar.init(tmp_path / "ca", "test-registrar")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[RunningNode]]:
    started: list[RunningNode] = []
    yield started
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


def gridledger() -> str:
    return str(Path(sys.executable).parent / "gridledger")


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def last_confirmed(state_dir: Path) -> int:
    """The agent's last seq confirmed by a valid receipt, from `edge status --json`."""
    done = subprocess.run([gridledger(), "edge", "status", "--state-dir", str(state_dir),
                           "--json"], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0 or not done.stdout:
        return 0
    return int(json.loads(done.stdout)["queue"]["last_confirmed"])


def test_pi_agent_delivers_through_the_embedded_broker_and_gets_receipts(
    tmp_path: Path, registrar: Registrar, nodes: list[RunningNode]
) -> None:
    data_dir = tmp_path / "node"
    node = RunningNode(data_dir, tmp_path / "ca")
    nodes.append(node)
    issued = registrar.issue("gw-mqtt-1", int(time.time()) - 60, meters=("M-7",), days=1)
    assert issued.device_key is not None
    (tmp_path / "gw.cwt").write_bytes(issued.certificate)
    crypto.write_private_key(tmp_path / "gw.key", issued.device_key)
    meter = subprocess.Popen([gridledger(), "sim", "meter", "--profile", "sdm120", "--tcp",
                              "127.0.0.1:0", "--seed", "4"], stdout=subprocess.PIPE, text=True)
    state = tmp_path / "state"
    agent = None
    try:
        address = first_line(meter)
        agent_log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 (closed below)
        agent = subprocess.Popen(
            [gridledger(), "edge", "run", "--device-id", "gw-mqtt-1",
             "--key", str(tmp_path / "gw.key"), "--cert", str(tmp_path / "gw.cwt"),
             "--genesis", str(data_dir / "genesis.json"),
             "--meter", f"sdm120@tcp://{address}?unit=1&id=M-7",
             "--mqtt", f"mqtt://127.0.0.1:{node.mqtt_port}", "--interval-s", "0.3",
             "--clock", "synced", "--state-dir", str(state)],
            stdout=agent_log, stderr=subprocess.STDOUT)
        agent_log.close()
        # The embedded broker speaks MQTT 3.1.1 only: the agent falls back and delivers.
        wait_for(lambda: last_confirmed(state) >= 3, "three batches confirmed by receipts",
                 agent)
        status = node.status() or {}
        assert int(str(status.get("batches_committed", 0))) >= 3
        assert "mqtt_protocol_fallback" in (tmp_path / "agent.log").read_text()
    finally:
        for proc in (agent, meter):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=DEADLINE_S)
        if meter.stdout is not None:
            meter.stdout.close()
    assert node.stop() == 0


def signed_batch(registrar: Registrar, seq: int) -> bytes:
    now_s = int(time.time())
    issued = registrar.issue("gw-run-1", now_s - 60, meters=("M-1",), days=1)
    assert issued.device_key is not None
    group = batch_mod.MeterGroup("M-1", now_s, [batch_mod.Record("1-0:1.8.0", 3600000, "J")])
    batch = batch_mod.Batch("gw-run-1", seq, now_s, True, [group])
    return batch_mod.sign(batch, issued.device_key.sign, issued.certificate)


async def post(port: int, message: bytes) -> aiocoap.Message:
    context = await aiocoap.Context.create_client_context()
    try:
        request = aiocoap.Message(code=aiocoap.POST, payload=message,
                                  uri=f"coap://127.0.0.1:{port}/gl/v1/up", content_format=18)
        return await asyncio.wait_for(context.request(request).response, DEADLINE_S)
    finally:
        await context.shutdown()


async def get_receipt(port: int) -> bytes:
    context = await aiocoap.Context.create_client_context()
    try:
        request = aiocoap.Message(code=aiocoap.GET,
                                  uri=f"coap://127.0.0.1:{port}/gl/v1/ack/gw-run-1")
        answer = await asyncio.wait_for(context.request(request).response, DEADLINE_S)
        return bytes(answer.payload)
    finally:
        await context.shutdown()


def test_run_commits_over_coap_stops_on_sigterm_and_resumes(
    tmp_path: Path, registrar: Registrar, nodes: list[RunningNode]
) -> None:
    data_dir = tmp_path / "node"
    node = RunningNode(data_dir, tmp_path / "ca")
    nodes.append(node)
    answer = asyncio.run(post(node.coap_port, signed_batch(registrar, 1)))
    assert str(answer.code) == "2.04 Changed", answer.payload
    wait_for(lambda: (node.status() or {}).get("batches_committed") == 1, "a commit", node.proc)
    genesis = genesis_mod.load(data_dir / "genesis.json")
    receipt = asyncio.run(get_receipt(node.coap_port))
    _, device, entries = receipt_mod.verify(receipt, genesis.node_keys(), crypto.verify)
    assert device == "gw-run-1" and entries[0].committed and entries[0].seq == 1
    assert node.stop() == 0

    again = RunningNode(data_dir, tmp_path / "ca")
    nodes.append(again)
    status = again.status() or {}
    assert status.get("height") == 1 and status.get("batches_committed") == 1
    tampered = bytearray(signed_batch(registrar, 2))
    tampered[-1] ^= 1
    refused = asyncio.run(post(again.coap_port, bytes(tampered)))
    assert str(refused.code).startswith("4.01"), refused.code
    assert b"cose.signature" in refused.payload
    assert again.stop() == 0



def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([gridledger(), *argv], capture_output=True, text=True, timeout=60,
                          check=False)


def test_registrar_enrolls_and_revokes_on_chain_through_the_node(
    tmp_path: Path, registrar: Registrar, nodes: list[RunningNode]
) -> None:
    node = RunningNode(tmp_path / "node", tmp_path / "ca")
    nodes.append(node)
    url = f"http://127.0.0.1:{node.http_port}"
    cert = tmp_path / "gw.cwt"
    issued = run_cli("certs", "issue", "--dir", str(tmp_path / "ca"), "--device-id",
                     "gw-run-1", "--meter", "M-1", "--out", str(cert), "--key-out",
                     str(tmp_path / "gw.key"))
    assert issued.returncode == 0, issued.stderr
    enrolled = run_cli("certs", "enroll", "--dir", str(tmp_path / "ca"), "--cert", str(cert),
                       "--profile", "M-1=sdm120", "--node", url)
    assert enrolled.returncode == 0, enrolled.stderr
    wait_for(lambda: (node.status() or {}).get("devices") == 1, "the enrollment", node.proc)
    # An enrollment naming an unknown profile is admitted, then refused by execution.
    unknown = run_cli("certs", "enroll", "--dir", str(tmp_path / "ca"), "--cert", str(cert),
                      "--profile", "M-1=no_such_profile", "--node", url)
    assert unknown.returncode == 0, unknown.stderr
    wait_for(lambda: dict((node.status() or {}).get("block_rejects_by_code") or {})
             .get("tx.profile") == 1, "the bad enrollment refused in its block", node.proc)
    revoked = run_cli("certs", "revoke", "--dir", str(tmp_path / "ca"), "--device-id",
                      "gw-run-1", "--reason", "test", "--node", url)
    assert revoked.returncode == 0, revoked.stderr
    message = signed_batch(registrar, 1)
    wait_for(lambda: str(asyncio.run(post(node.coap_port, message)).code).startswith("4.03"),
             "batches of the revoked device refused", node.proc)
    assert node.stop() == 0


def test_registry_door_refuses_what_the_registrar_did_not_sign(
    tmp_path: Path, registrar: Registrar, nodes: list[RunningNode]
) -> None:
    node = RunningNode(tmp_path / "node", tmp_path / "ca")
    nodes.append(node)
    url = f"http://127.0.0.1:{node.http_port}/v1/registry"
    other = Registrar.init(tmp_path / "other-ca", "someone-else")
    forged = tx.make_revocation("gw-run-1", int(time.time()), "", other.public_key,
                                other.key.sign)
    cases = ((b"\x00\x01", "cbor."), (tx.encode(tx.BATCH, b"x"), "registry.kind"),
             (forged, "tx."),
             (bytes(9000), "http.too_large"))
    for body, code in cases:
        request = urllib.request.Request(url, data=body, method="POST")
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read())
            assert exc.code in (400, 413) and answer["error"].startswith(code), answer
        else:
            raise AssertionError(f"{body[:8]!r} was accepted")
    assert node.stop() == 0


def test_busy_embedded_broker_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("aggregator", "run", "--data-dir", str(tmp_path / "node"),
                       "--coap", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
                       "--http", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
                       "--embedded-mqtt", f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error [net.transport]: embedded MQTT broker cannot listen on 127.0.0.1:{port}" \
        in done.stderr
    assert "--mqtt-url" in done.stderr
