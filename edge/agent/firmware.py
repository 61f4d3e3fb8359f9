"""Firmware configuration from the workstation: config.json for edge/firmware/.

The board gets each meter's register map already planned (edge.meters.plan), as lists
of [function, address, count, [[obis, unit, offset, dtype, word_order, byte_order,
scale], ...]], so it needs neither a TOML parser nor the planner.  A DSMR meter gets
its P1 map: [obis, telegram obis, unit] per quantity and [obis, [parts], unit] per sum,
and its own UART (RX only, inverted).
"""

from __future__ import annotations

from typing import Any

from edge.meters.plan import plan_for
from edge.portable.errors import LocalProtocolError
from hardware import profiles

FIRMWARE_FILES = ("boot.py", "main.py", "app.py", "board.py", "board_esp32.py",
                  "board_unix.py", "coapup.py", "config.py", "fstore.py", "meters.py")


def meter_map(profile_name: str, unit: int, meter_id: str) -> dict[str, Any]:
    profile = profiles.load(profile_name)
    if profile.protocol != "modbus":
        raise LocalProtocolError(f"{profile_name}: the firmware reads Modbus meters only")
    blocks = []
    for block in plan_for(profile):
        quantities = [[q.obis, q.unit, q.address - block.address, q.dtype, q.word_order,
                       q.byte_order, q.scale] for q in block.quantities]
        blocks.append([block.function, block.address, block.count, quantities])
    return {"id": meter_id, "unit": unit, "profile": profile_name, "blocks": blocks}


def p1_map(profile_name: str, meter_id: str, uart: dict[str, Any]) -> dict[str, Any]:
    profile = profiles.load(profile_name)
    if profile.protocol != "dsmr":
        raise LocalProtocolError(f"{profile_name}: not a P1 (DSMR) profile")
    quantities = [[q.obis, q.source or q.obis, q.unit] for q in profile.quantities
                  if not q.sum_of]
    sums = [[q.obis, list(q.sum_of), q.unit] for q in profile.quantities if q.sum_of]
    stale_s = max(30.0, 3 * profile.dsmr_interval_s)
    return {"id": meter_id, "profile": profile_name, "uart": uart,
            "p1": {"quantities": quantities, "sums": sums, "stale_s": stale_s}}


def device_config(device_id: str, node_keys: dict[str, bytes], mqtt_host: str,
                  mqtt_port: int, uart: dict[str, Any], meters: list[dict[str, Any]],
                  interval_s: float = 15, queue_limit: int = 256, wifi_ssid: str = "",
                  wifi_password: str = "") -> dict[str, Any]:
    return {"device_id": device_id, "key_file": "device.key", "cert_file": "device.cwt",
            "node_keys": {k: v.hex() for k, v in node_keys.items()},
            "wifi_ssid": wifi_ssid, "wifi_password": wifi_password,
            "mqtt_host": mqtt_host, "mqtt_port": mqtt_port, "interval_s": interval_s,
            "queue_limit": queue_limit, "uart": uart, "meters": meters}
