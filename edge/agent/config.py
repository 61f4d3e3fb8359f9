"""Agent configuration: one TOML table whose every key is also a command-line flag.

A key `queue_limit` is the flag `--queue-limit`; a flag given on the command line wins
over the file.  `meter` is a list (`--meter` repeats).  Meter URLs:

    sdm630@tcp://127.0.0.1:5020?unit=1
    sdm120@serial:///dev/ttyUSB0?baud=2400&unit=1&framing=8N1
    dsmr5@serial:///dev/ttyUSB1
    sdm630@tcp://10.0.0.7:502?unit=3&id=SN-19000123

`profile@scheme://where?params`: the profile is a file stem in hardware/meters/; params
are unit (1..247, default 1), baud, framing, timeout_s and id.  The meter id on the
ledger is `id` when given (the meter's serial, as the device certificate lists it), else
`<profile>-<unit>` (e.g. sdm630-1).  Meters with the same TCP address or serial port
share one bus (one lock, one request at a time).

Limits: 32 meters (a batch holds at most 32 groups, batch.MAX_METERS); interval 0.05 s
to 1 day (below 0.05 s a Modbus poll of one meter does not finish); queue 1..1_000_000
batches.
"""

from __future__ import annotations

import argparse
import tomllib
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.portable import batch as batch_mod
from edge.portable.agent import DROP_NEWEST, MAX_QUEUE_LIMIT, POLICIES
from edge.portable.errors import LocalProtocolError
from hardware import profiles

MIN_INTERVAL_S = 0.05
MAX_INTERVAL_S = 86400.0
CLOCK_MODES = ("auto", "synced", "unsynced")


class ConfigError(LocalProtocolError):
    code = "config.invalid"


@dataclass(frozen=True)
class MeterSpec:
    profile: str
    scheme: str  # "tcp" or "serial"
    address: str  # "host:port" or a device path
    unit: int = 1
    baud: int | None = None
    framing: str | None = None
    timeout_s: float = 1.0
    meter_id: str = ""

    @property
    def bus_key(self) -> tuple[str, str]:
        return (self.scheme, self.address)


@dataclass
class AgentConfig:
    device_id: str = ""
    key: Path | None = None
    cert: Path | None = None
    genesis: Path | None = None
    meter: list[str] = field(default_factory=list)
    mqtt: str = ""
    coap: str = ""
    interval_s: float = 15.0
    state_dir: Path = Path("/var/lib/gridledger")
    queue_limit: int = 10_000
    queue_policy: str = DROP_NEWEST
    window: int = 16
    ack_timeout_s: float = 10.0
    resend_max_s: float = 300.0
    drain_s: float = 5.0
    clock: str = "auto"
    seed: int | None = None

    def meters(self) -> list[MeterSpec]:
        return [parse_meter_url(text) for text in self.meter]


HELP = {
    "device_id": "device id, as in the certificate",
    "key": "device private key (PEM)",
    "cert": "device certificate (CWT), carried in every batch (kcwt)",
    "genesis": "genesis file: the node keys whose receipts are trusted",
    "meter": "meter URL, repeatable: PROFILE@tcp://HOST:PORT?unit=N or "
             "PROFILE@serial:///dev/ttyX?baud=B&unit=N (see docs/edge-agent.md)",
    "mqtt": "MQTT broker, mqtt://HOST[:PORT]",
    "coap": "CoAP endpoint, coap://HOST[:PORT]",
    "interval_s": "seconds between batches (alias --interval; default 15)",
    "state_dir": "directory for the queue and status (default /var/lib/gridledger)",
    "queue_limit": "batches kept while the uplink is down (default 10000)",
    "queue_policy": "when the queue is full: drop-newest (default) or drop-oldest",
    "window": "batches in flight per uplink without a receipt (default 16)",
    "ack_timeout_s": "resend a batch with no receipt after this long (default 10)",
    "resend_max_s": "longest backoff between tries (default 300)",
    "drain_s": "on SIGTERM, wait this long for outstanding receipts (default 5)",
    "clock": "clock status: auto (ask the kernel), synced or unsynced",
    "seed": "seed for retry jitter (default: from os.urandom)",
}


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with the keys below")
    for f in fields(AgentConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, "--interval"] if f.name == "interval_s" else [flag]
        if f.name == "meter":
            parser.add_argument(*names, action="append", dest=f.name, help=HELP[f.name])
        else:
            parser.add_argument(*names, dest=f.name, type=_flag_type(f.name), help=HELP[f.name])


def _flag_type(name: str) -> Any:
    default = getattr(AgentConfig(), name)
    if name in ("key", "cert", "genesis", "state_dir"):
        return Path
    if name == "seed":
        return int
    return type(default) if isinstance(default, int | float) else str


def from_args(args: argparse.Namespace) -> AgentConfig:
    doc: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        doc = load_toml(args.config)
    for f in fields(AgentConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            doc[f.name] = value
    return build(doc)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML ({exc})") from None
    known = {f.name for f in fields(AgentConfig)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}")
    for name in ("key", "cert", "genesis", "state_dir"):
        if name in doc:
            doc[name] = (path.parent / str(doc[name])).resolve()
    return doc


def build(doc: dict[str, Any]) -> AgentConfig:
    try:
        config = AgentConfig(**doc)
        for name in ("key", "cert", "genesis", "state_dir"):
            value = getattr(config, name)
            if value is not None:
                setattr(config, name, Path(value))
        for name in ("interval_s", "ack_timeout_s", "resend_max_s", "drain_s"):
            setattr(config, name, float(getattr(config, name)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"configuration: {exc}") from None
    check(config)
    return config


def check(c: AgentConfig) -> None:
    if not batch_mod.valid_id(c.device_id):
        raise ConfigError("--device-id must be 1..64 of [A-Za-z0-9._:-]")
    if c.key is None or c.genesis is None:
        raise ConfigError("--key and --genesis are required")
    if not c.mqtt and not c.coap:
        raise ConfigError("give --mqtt, --coap or both")
    if not c.meter or len(c.meter) > batch_mod.MAX_METERS:
        raise ConfigError(f"give 1..{batch_mod.MAX_METERS} --meter")
    if not MIN_INTERVAL_S <= c.interval_s <= MAX_INTERVAL_S:
        raise ConfigError(f"--interval-s must be {MIN_INTERVAL_S}..{MAX_INTERVAL_S:.0f}")
    if not 0 < c.queue_limit <= MAX_QUEUE_LIMIT or c.queue_policy not in POLICIES:
        raise ConfigError("--queue-limit 1..1000000, --queue-policy drop-newest|drop-oldest")
    if c.clock not in CLOCK_MODES:
        raise ConfigError("--clock must be auto, synced or unsynced")
    specs = c.meters()
    ids = [s.meter_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError("two meters have the same id: give one of them ?id=SERIAL")


def parse_meter_url(text: str) -> MeterSpec:
    profile, sep, rest = text.partition("@")
    url = urllib.parse.urlsplit(rest)
    if not sep or url.scheme not in ("tcp", "serial"):
        raise ConfigError(f"meter {text!r}: use PROFILE@tcp://HOST:PORT or "
                          "PROFILE@serial:///dev/PORT")
    if profile not in profiles.names():
        raise ConfigError(f"meter {text!r}: unknown profile {profile!r}")
    params = _params(text, url.query)
    address = url.netloc if url.scheme == "tcp" else url.path
    if not address or (url.scheme == "tcp" and url.port is None):
        raise ConfigError(f"meter {text!r}: tcp needs HOST:PORT, serial a device path")
    try:
        unit = int(params.pop("unit", "1"))
        spec = MeterSpec(profile, url.scheme, address, unit,
                         int(params["baud"]) if "baud" in params else None,
                         params.get("framing"), float(params.get("timeout_s", "1.0")),
                         params.get("id", f"{profile}-{unit}"))
    except ValueError:
        raise ConfigError(f"meter {text!r}: unit, baud and timeout_s are numbers") from None
    if not 1 <= spec.unit <= 247 or not batch_mod.valid_id(spec.meter_id):
        raise ConfigError(f"meter {text!r}: unit 1..247, id 1..64 of [A-Za-z0-9._:-]")
    return spec


def _params(text: str, query: str) -> dict[str, str]:
    params = dict(urllib.parse.parse_qsl(query, strict_parsing=False))
    unknown = sorted(set(params) - {"unit", "baud", "framing", "timeout_s", "id"})
    if unknown:
        raise ConfigError(f"meter {text!r}: unknown parameters {', '.join(unknown)}")
    return params
