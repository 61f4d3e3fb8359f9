"""Agent configuration: TOML keys and flags are the same names; flags win; meter URLs."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from edge.agent import config as config_mod
from edge.agent.config import AgentConfig, ConfigError, parse_meter_url


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    config_mod.add_flags(p)
    return p


TOML = """
device_id = "gw-0001"
key = "keys/gw.key"
genesis = "genesis.json"
meter = ["sdm630@tcp://127.0.0.1:5020?unit=1", "dsmr5@serial:///dev/ttyUSB1?id=E1"]
mqtt = "mqtt://127.0.0.1:1883"
interval_s = 30
queue_limit = 50
queue_policy = "drop-oldest"
"""


def test_every_key_is_a_flag_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TOML)
    flags = {a.dest for a in parser()._actions}
    assert {f.name for f in fields(AgentConfig)} <= flags
    config = config_mod.from_args(parser().parse_args(
        ["--config", str(path), "--interval", "5", "--meter", "sdm120@tcp://h:502?unit=2"]))
    assert config.interval_s == 5.0 and config.queue_limit == 50
    assert config.queue_policy == "drop-oldest"
    assert config.key == (tmp_path / "keys" / "gw.key").resolve()
    assert [m.meter_id for m in config.meters()] == ["sdm120-2"]  # the flag list replaces


def test_unknown_keys_and_bad_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TOML + 'colour = "blue"\n')
    with pytest.raises(ConfigError, match="colour"):
        config_mod.from_args(parser().parse_args(["--config", str(path)]))
    path.write_text(TOML.replace("interval_s = 30", "interval_s = 0.001"))
    with pytest.raises(ConfigError, match="interval"):
        config_mod.from_args(parser().parse_args(["--config", str(path)]))
    path.write_text(TOML.replace("dsmr5@serial:///dev/ttyUSB1?id=E1",
                                 "sdm630@tcp://127.0.0.1:5021?unit=1"))
    with pytest.raises(ConfigError, match="same id"):
        config_mod.from_args(parser().parse_args(["--config", str(path)]))


def test_meter_urls() -> None:
    spec = parse_meter_url("sdm120@serial:///dev/ttyUSB0?baud=2400&unit=1")
    assert (spec.scheme, spec.address, spec.baud, spec.unit, spec.meter_id) == (
        "serial", "/dev/ttyUSB0", 2400, 1, "sdm120-1")
    spec = parse_meter_url("sdm630@tcp://10.0.0.7:502?unit=3&id=SN-19000123&timeout_s=0.5")
    assert (spec.address, spec.unit, spec.meter_id, spec.timeout_s) == (
        "10.0.0.7:502", 3, "SN-19000123", 0.5)
    for bad in ("sdm630", "nosuch@tcp://h:1", "sdm630@tcp://h", "sdm630@udp://h:1",
                "sdm630@tcp://h:1?unit=300", "sdm630@tcp://h:1?colour=1",
                "sdm630@tcp://h:1?unit=x", "sdm630@tcp://h:1?id=bad id"):
        with pytest.raises(ConfigError):
            parse_meter_url(bad)
