"""`gridledger edge provision`: certify an ESP32 gateway and give it everything it needs.

Steps: issue the device certificate from the registrar in --ca-dir (generating the
device key, or certifying an imported --public-key whose private half stays in a
secure element), plan each meter's register reads, and write the device's files:

    boot.py main.py app.py board*.py config.py fstore.py meters.py   firmware
    lib/portable/*.py        the portable core (wire format, ES256, agent core)
    config.json              device id, Wi-Fi, broker, node keys (from --genesis), meters
    device.key               32-byte secret in hex, mode 0600 (absent with --public-key)
    device.cwt               the certificate

With --bundle OUT the files go to a folder, exactly as they go to the board.  With
--port DEV they are copied with mpremote (after flashing MicroPython with esptool when
--flash FIRMWARE.bin is given; umqtt.simple comes from micropython-lib through `mpremote
mip install`), and the device id is read back from the board to confirm.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from certs.registrar import Registrar
from edge import crypto
from edge.agent.config import ConfigError, parse_meter_url
from edge.agent.firmware import FIRMWARE_FILES, device_config, meter_map, p1_map
from edge.portable.errors import GridLedgerError
from gridledger import genesis as genesis_mod
from gridledger.files import write_private
from gridledger.output import SubParsers
from hardware import profiles

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = ROOT / "edge" / "firmware"
PORTABLE_DIR = ROOT / "edge" / "portable"
TOOL_TIMEOUT_S = 300.0  # flashing 1.5 MB at 460800 baud takes about a minute


class ProvisionError(GridLedgerError):
    code = "provision.failed"


def add_commands(commands: SubParsers) -> None:
    p = commands.add_parser("provision", help="certify an ESP32 gateway and write its files",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device-id", required=True)
    p.add_argument("--ca-dir", required=True, type=Path, help="registrar directory")
    p.add_argument("--genesis", required=True, type=Path, help="node keys to trust")
    p.add_argument("--wifi", default="", metavar="SSID:PASS")
    p.add_argument("--mqtt", default="", help="mqtt://HOST[:PORT]")
    p.add_argument("--coap", default="", help="coap://HOST[:PORT], as well as or instead of MQTT")
    p.add_argument("--meter", action="append", required=True,
                   help="PROFILE@serial:///uartN?unit=N[&id=SERIAL]: Modbus RTU or P1")
    p.add_argument("--public-key", type=Path, help="PEM public key of a secure element")
    p.add_argument("--interval-s", type=float, default=15.0)
    p.add_argument("--queue-limit", type=int, default=256)
    p.add_argument("--uart", default="2:17:16:4", metavar="ID:TX:RX:DE",
                   help="ESP32 UART id and pins for RS-485 (default 2:17:16:4)")
    p.add_argument("--p1-uart", default="1:18", metavar="ID:RX",
                   help="ESP32 UART id and RX pin for a P1 port (default 1:18)")
    p.add_argument("--days", type=int, default=730, help="certificate validity")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board (mpremote)")
    where.add_argument("--bundle", type=Path, help="write the files to this folder")
    p.add_argument("--flash", type=Path, metavar="FIRMWARE.bin",
                   help="flash MicroPython with esptool first (with --port)")
    p.set_defaults(func=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    if args.flash and not args.port:
        raise ConfigError("--flash needs --port")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.bundle or Path(tmp) / "bundle"
        write_bundle(args, out)
        if args.port:
            copy_to_board(args.port, out, args.flash, args.device_id)
    print(f"provisioned {args.device_id}: " + (f"bundle {args.bundle}" if args.bundle
                                                 else f"board on {args.port}"))
    return 0


def write_bundle(args: argparse.Namespace, out: Path) -> None:
    meters = [_meter(text, args.p1_uart) for text in args.meter]
    public_key = (crypto.public_key_from_pem(args.public_key.read_bytes(), str(args.public_key))
                  if args.public_key else None)
    issued = Registrar.open(args.ca_dir).issue(args.device_id, int(time.time()), public_key,
                                                tuple(m["id"] for m in meters), args.days)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lib" / "portable").mkdir(parents=True, exist_ok=True)
    for name in FIRMWARE_FILES:
        shutil.copy(FIRMWARE_DIR / name, out / name)
    for source in sorted(PORTABLE_DIR.glob("*.py")):
        shutil.copy(source, out / "lib" / "portable" / source.name)
    (out / "device.cwt").write_bytes(issued.certificate)
    if issued.device_key is not None:
        write_private(out / "device.key", issued.device_key.to_bytes().hex().encode())
    config = _config(args, meters, issued.device_key is None)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")


def _meter(text: str, p1_uart: str) -> dict[str, Any]:
    spec = parse_meter_url(text)
    profile = profiles.load(spec.profile)
    if spec.scheme != "serial":
        raise ConfigError(f"meter {text!r}: the ESP32 reads meters on its UARTs (serial://)")
    baud = spec.baud or profile.serial.baud
    if profile.protocol == "dsmr":
        uart_id, rx = (int(x) for x in p1_uart.split(":"))
        uart = {"port": spec.address, "uart_id": uart_id, "rx": rx, "baud": baud,
                "invert_rx": True}
        return p1_map(spec.profile, spec.meter_id, uart)
    return {**meter_map(spec.profile, spec.unit, spec.meter_id), "port": spec.address,
            "baud": baud}


def _config(args: argparse.Namespace, meters: list[dict[str, Any]],
            secure_element: bool) -> dict[str, Any]:
    if not args.mqtt and not args.coap:
        raise ConfigError("give --mqtt, --coap or both")
    host, port = _mqtt(args.mqtt) if args.mqtt else ("", 0)
    uart_id, tx, rx, de = (int(x) for x in args.uart.split(":"))
    modbus = [m for m in meters if "blocks" in m] or [{"port": "", "baud": 9600}]
    uart = {"port": modbus[0]["port"], "uart_id": uart_id, "tx": tx, "rx": rx, "de": de,
            "baud": modbus[0]["baud"], "parity": None, "stop": 1, "timeout_ms": 500}
    ssid, _, password = args.wifi.partition(":")
    node_keys = genesis_mod.load(args.genesis).node_keys()
    config = device_config(args.device_id, node_keys, host, port, uart, meters,
                           args.interval_s, args.queue_limit, ssid, password)
    if args.coap:
        coap = urllib.parse.urlsplit(args.coap)
        if coap.scheme != "coap" or not coap.hostname:
            raise ConfigError(f"{args.coap!r}: use coap://HOST[:PORT]")
        config.update(coap_host=coap.hostname, coap_port=coap.port or 5683)
    if secure_element:
        config["key_file"] = ""  # the board's secure element signs (board.sign)
    return config


def _mqtt(url: str) -> tuple[str, int]:
    from edge.agent.mqtt import parse_url

    return parse_url(url)


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionError(f"{argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise ProvisionError(f"{' '.join(argv[:4])}...: {done.stderr.strip()[-300:]}")
    return done.stdout


def copy_to_board(port: str, bundle: Path, firmware: Path | None, device_id: str) -> None:
    if firmware is not None:
        _run(["esptool", "--port", port, "erase_flash"])
        _run(["esptool", "--port", port, "--baud", "460800", "write_flash", "-z", "0x1000",
              str(firmware)])
    mp = ["mpremote", "connect", port]
    _run([*mp, "mip", "install", "umqtt.simple"])
    _run([*mp, "fs", "cp", "-r", *[str(p) for p in sorted(bundle.iterdir())], ":"])
    got = _run([*mp, "exec", "import config; print(config.load('/')['device_id'])"]).strip()
    if got != device_id:
        raise ProvisionError(f"the board reports device id {got!r}, expected {device_id!r}")
