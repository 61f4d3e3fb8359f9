"""`edge provision --bundle`: the exact files for a board, which boot under the MicroPython
unix port and publish a batch that verifies (certificate listing the meters) on CPython."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from gridledger.cli import main
from tests import mpy
from tests.agent import harness
from tests.agent.conftest import Mosquitto, wait_until
from tests.agent.test_firmware import MPY_LIB


@pytest.mark.micropython
def test_bundle_boots_and_its_batches_verify(tmp_path: Path, mosquitto: Mosquitto,
                                             sims: harness.Sims) -> None:
    identity = harness.make_identity(tmp_path)
    pty = sims.start(tmp_path, "--profile", "sdm630", "--pty", "--units", "3")
    p1 = sims.start(tmp_path, "--profile", "dsmr5", "--pty", "--interval-s", "0.5")
    bundle = tmp_path / "bundle"
    status = main(["edge", "provision", "--device-id", "gw-0002", "--ca-dir",
                   str(identity.directory / "ca"), "--genesis", str(identity.genesis),
                   "--wifi", "site-net:secret", "--mqtt", mosquitto.url, "--meter",
                   f"sdm630@serial://{pty}?unit=3&id=SN-0003", "--meter",
                   f"dsmr5@serial://{p1}?id=E0025000000009", "--interval-s", "1",
                   "--bundle", str(bundle)])
    assert status == 0
    assert stat.S_IMODE((bundle / "device.key").stat().st_mode) == 0o600
    config = json.loads((bundle / "config.json").read_text())
    assert config["device_id"] == "gw-0002" and config["wifi_ssid"] == "site-net"
    assert (bundle / "lib" / "portable" / "agent.py").exists()
    out = tmp_path / "arrivals.jsonl"
    responder = harness.responder(identity, out, tmp_path / "responder.log",
                                  "--mqtt", mosquitto.url).start()
    env = dict(os.environ, GL_FIRMWARE_ROOT=str(bundle),
               MICROPYPATH=f"{bundle}:{bundle / 'lib'}:{MPY_LIB}")
    try:
        wait_until(lambda: "mqtt ready" in responder.text(), 15, "the responder")
        done = subprocess.run([mpy.micropython_binary(), "-X", "heapsize=4m", "-c",
                               "import boot\nimport app\napp.run(3)"],
                              cwd=bundle, env=env, capture_output=True, timeout=60, check=False)
    finally:
        responder.kill()
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    got = harness.arrivals(out)
    assert got and not [a for a in got if "error" in a], got
    assert {a["device"] for a in got} == {"gw-0002"}
    assert all(a["statuses"]["SN-0003"] == "ok" for a in got)
    assert "ok" in {a["statuses"]["E0025000000009"] for a in got}, got
