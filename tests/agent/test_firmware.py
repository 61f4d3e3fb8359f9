"""The ESP32 firmware tree boots under the real MicroPython unix port with the Unix board
adapter, reads a simulated RS-485 meter on a pty, and publishes batches to a real
Mosquitto that verify on CPython; receipts empty its flash queue."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge import crypto
from edge.agent.firmware import FIRMWARE_FILES, device_config, meter_map, p1_map
from gridledger import genesis as genesis_mod
from tests import mpy
from tests.agent import harness
from tests.agent.conftest import Mosquitto, free_port, wait_until

FIRMWARE_DIR = mpy.ROOT / "edge" / "firmware"
MPY_LIB = Path(__file__).resolve().parent / "mpy_lib"
BATCHES = 4


def bundle(directory: Path, identity: harness.Identity, port: int, pty: str) -> Path:
    root = directory / "flash"
    root.mkdir()
    for name in FIRMWARE_FILES:
        shutil.copy(FIRMWARE_DIR / name, root / name)
    (root / "device.key").write_text(crypto.read_private_key(identity.key).to_bytes().hex())
    shutil.copy(identity.cert, root / "device.cwt")
    meters = [meter_map("sdm120", 1, "sdm120-1"), meter_map("sdm120", 2, "sdm120-2")]
    uart = {"port": pty, "baud": 9600, "timeout_ms": 300}
    config = device_config(harness.DEVICE, genesis_mod.load(identity.genesis).node_keys(),
                           "127.0.0.1", port, uart, meters, interval_s=1)
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.micropython
def test_firmware_boots_under_micropython_and_batches_verify(
        tmp_path: Path, mosquitto: Mosquitto, sims: harness.Sims) -> None:
    identity = harness.make_identity(tmp_path)
    pty = sims.start(tmp_path, "--profile", "sdm120", "--pty", "--units", "1-2",
                     "--fault", "2:crc")
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log",
                                  "--mqtt", mosquitto.url).start()
    root = bundle(tmp_path, identity, mosquitto.port, pty)
    env = dict(os.environ, GL_FIRMWARE_ROOT=str(root),
               MICROPYPATH=f"{root}:{mpy.EDGE_DIR}:{MPY_LIB}:.frozen")
    try:
        wait_until(lambda: "mqtt ready" in responder.text(), 15, "the responder")
        runs = [subprocess.run([mpy.micropython_binary(), "-X", "heapsize=4m", "-c",
                                f"import boot\nimport app\napp.run({target})"],
                               cwd=root, env=env, capture_output=True, timeout=60, check=False)
                for target in (BATCHES, BATCHES + 2)]  # the second run is after a reboot
    finally:
        responder.kill()
    text = "".join(r.stdout.decode() + r.stderr.decode() for r in runs)
    assert [r.returncode for r in runs] == [0, 0], text
    assert f"booted {harness.DEVICE} last_seq " in text
    got = harness.arrivals(out)
    assert not [a for a in got if "error" in a], got
    shas: dict[int, set[str]] = {}
    for arrival in got:
        shas.setdefault(arrival["seq"], set()).add(arrival["sha256"])
    assert sorted(shas) == list(range(1, max(shas) + 1)) and max(shas) >= BATCHES + 2
    assert all(len(v) == 1 for v in shas.values()), "a seq was reused after the reboot"
    assert all(a["statuses"] == {"sdm120-1": "ok", "sdm120-2": "crc"} for a in got), got
    cycles = re.findall(r"cycle seq (\d+) depth \d+ sign_ms (\d+) heap (\d+)", text)
    assert len(cycles) >= BATCHES
    print("MicroPython sign_ms, heap after cycle:", [(int(s), int(h)) for _, s, h in cycles])


@pytest.mark.micropython
def test_firmware_coap_uplink_and_p1_meter_under_micropython(
        tmp_path: Path, sims: harness.Sims) -> None:
    identity = harness.make_identity(tmp_path)
    pty = sims.start(tmp_path, "--profile", "sdm120", "--pty")
    p1 = sims.start(tmp_path, "--profile", "dsmr5", "--pty", "--interval-s", "0.5")
    port = free_port()
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log",
                                  "--coap-port", str(port)).start()
    root = bundle(tmp_path, identity, 0, pty)
    config = json.loads((root / "config.json").read_text())
    p1_meter = p1_map("dsmr5", "E0025000000001", {"port": p1, "baud": 115200})
    config.update(mqtt_host="", coap_host="127.0.0.1", coap_port=port,
                  meters=[config["meters"][0], p1_meter])
    (root / "config.json").write_text(json.dumps(config))
    env = dict(os.environ, GL_FIRMWARE_ROOT=str(root),
               MICROPYPATH=f"{root}:{mpy.EDGE_DIR}:.frozen")
    try:
        wait_until(lambda: "coap ready" in responder.text(), 15, "the CoAP responder")
        done = subprocess.run([mpy.micropython_binary(), "-X", "heapsize=4m", "-c",
                               "import boot\nimport app\napp.run(3)"],
                              cwd=root, env=env, capture_output=True, timeout=60, check=False)
    finally:
        responder.kill()
    text = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, text
    got = harness.arrivals(out)
    assert not [a for a in got if "error" in a], got
    assert {a["seq"] for a in got} >= {1, 2, 3} and {a["via"] for a in got} == {"coap"}
    assert all(a["statuses"]["sdm120-1"] == "ok" for a in got)
    assert "ok" in {a["statuses"]["E0025000000001"] for a in got}, got
