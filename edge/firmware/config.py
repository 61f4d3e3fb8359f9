"""The device configuration: config.json next to main.py, written by provisioning.

    {"device_id": "gw-0001", "key_file": "device.key", "cert_file": "device.cwt",
     "node_keys": {"node-0": "04..."}, "wifi_ssid": "...", "wifi_password": "...",
     "mqtt_host": "10.0.0.2", "mqtt_port": 1883, "interval_s": 15, "queue_limit": 256,
     "uart": {"port": "/dev/ttyUSB0" | "uart_id": 2, "tx": 17, "rx": 16, "de": 4,
              "baud": 9600, "parity": null, "stop": 1, "timeout_ms": 500},
     "meters": [{"id": "sdm120-1", "unit": 1,
                 "blocks": [[function, address, count,
                             [[obis, unit, offset, dtype, word_order, byte_order, scale]]]]}]}

Meter register maps arrive planned (edge.meters.plan on the workstation), so the board
needs no TOML parser and no planner.  The key file holds the 32-byte secret in hex.
"""

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FILE = "config.json"


def load(root: str) -> "dict[str, Any]":
    with open(root.rstrip("/") + "/" + FILE) as handle:
        doc: dict[str, Any] = json.load(handle)
    return doc


def read_text(root: str, name: str) -> str:
    with open(root.rstrip("/") + "/" + name) as handle:
        return str(handle.read()).strip()


def read_bytes(root: str, name: str) -> bytes:
    with open(root.rstrip("/") + "/" + name, "rb") as handle:
        return bytes(handle.read())
