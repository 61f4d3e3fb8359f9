"""`edge provision --port`: esptool flashes, mpremote installs umqtt, copies the bundle and
reads the device id back; here both tools are stand-ins on PATH that act on a folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from gridledger.cli import main
from tests.agent import harness

FAKE_MPREMOTE = """#!{python}
import json, os, shutil, sys
board = os.environ["FAKE_BOARD"]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("mpremote " + " ".join(sys.argv[1:]) + "\\n")
args = sys.argv[3:]  # after: connect PORT
if args[:2] == ["fs", "cp"]:
    for source in args[3:-1]:
        target = os.path.join(board, os.path.basename(source))
        (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, target)
elif args[0] == "exec":
    with open(os.path.join(board, "config.json")) as f:
        print(os.environ.get("FAKE_ID") or json.load(f)["device_id"])
"""
FAKE_ESPTOOL = """#!/bin/sh
echo "esptool $*" >> "$FAKE_LOG"
"""


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, board = tmp_path / "bin", tmp_path / "board"
    bin_dir.mkdir()
    board.mkdir()
    (bin_dir / "mpremote").write_text(FAKE_MPREMOTE.format(python=sys.executable))
    (bin_dir / "esptool").write_text(FAKE_ESPTOOL)
    for tool in ("mpremote", "esptool"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BOARD", str(board))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "tools.log"))
    return board


def provision(identity: harness.Identity, tmp_path: Path) -> int:
    firmware = tmp_path / "micropython.bin"
    firmware.write_bytes(b"\x00" * 16)
    return main(["edge", "provision", "--device-id", "gw-0003", "--ca-dir",
                 str(identity.directory / "ca"), "--genesis", str(identity.genesis),
                 "--wifi", "net:pw", "--mqtt", "mqtt://10.0.0.2", "--meter",
                 "sdm120@serial:///uart2?unit=1", "--port", "/dev/ttyUSB0",
                 "--flash", str(firmware)])


def test_port_flashes_copies_and_confirms_the_device_id(tmp_path: Path, tools: Path) -> None:
    identity = harness.make_identity(tmp_path)
    assert provision(identity, tmp_path) == 0
    calls = (tmp_path / "tools.log").read_text().splitlines()
    assert calls[0] == "esptool --port /dev/ttyUSB0 erase_flash"
    assert calls[1].startswith("esptool --port /dev/ttyUSB0 --baud 460800 write_flash")
    assert calls[2] == "mpremote connect /dev/ttyUSB0 mip install umqtt.simple"
    assert calls[3].startswith("mpremote connect /dev/ttyUSB0 fs cp -r ")
    assert json.loads((tools / "config.json").read_text())["device_id"] == "gw-0003"
    assert (tools / "lib" / "portable" / "agent.py").exists() and (tools / "device.key").exists()


def test_port_fails_when_the_board_names_another_device(
        tmp_path: Path, tools: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_ID", "gw-9999")
    assert provision(harness.make_identity(tmp_path), tmp_path) != 0
    assert "provision.failed" in capsys.readouterr().err


def test_bundle_with_a_secure_element_key_holds_no_private_key(tmp_path: Path) -> None:
    from edge import crypto

    identity = harness.make_identity(tmp_path)
    element = crypto.SigningKey.generate()
    pem = tmp_path / "se.pub"
    pem.write_bytes(crypto.public_key_to_pem(element.public_key()))
    bundle = tmp_path / "bundle"
    assert main(["edge", "provision", "--device-id", "gw-0004", "--ca-dir",
                 str(identity.directory / "ca"), "--genesis", str(identity.genesis),
                 "--coap", "coap://10.0.0.2", "--meter", "sdm120@serial:///uart2?unit=1",
                 "--public-key", str(pem), "--bundle", str(bundle)]) == 0
    config = json.loads((bundle / "config.json").read_text())
    assert not (bundle / "device.key").exists() and config["key_file"] == ""
    assert (config["coap_host"], config["coap_port"], config["mqtt_host"]) == (
        "10.0.0.2", 5683, "")
