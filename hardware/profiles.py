"""Meter profiles: one TOML file per meter model in `hardware/meters/`, loaded by file stem.

A profile is data, not code.  For Modbus meters it says, per quantity, where the value
lives (function code, register address), how it is encoded (data type, word and byte
order) and how to turn it into SI (`si = raw * scale`, energy in J, power in W, voltage
in V, current in A, frequency in Hz, power factor "/").  For DSMR P1 meters it says the
serial settings, the DSMR version and which OBIS objects to keep.  Every quantity has
plausibility limits; the meter has nominal voltage, rated current and maximum power.

Meter-wide defaults (`function`, `type`, `word_order`, `byte_order` under [meter]) apply
to quantities that do not set them.  The schema is described in docs/meters.md.

    load("sdm120") -> Profile          names() -> ["abb_b23", "dsmr22", ...]

Errors: UnknownProfileError (profile.unknown) for a name with no file,
ProfileError (profile.invalid) for a file that breaks the schema.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.portable.errors import LocalProtocolError
from edge.portable.modbus import DATA_TYPES, MAX_READ_REGISTERS, ORDERS, registers_for

METERS_DIR = Path(__file__).resolve().parent / "meters"

PROTOCOLS = ("modbus", "dsmr")
KINDS = ("instant", "energy")
SI_UNITS = ("J", "W", "V", "A", "Hz", "/", "m3", "s", "var", "varh")
PARITIES = ("N", "E", "O")
# An OBIS reduced ID as meters print it: A-B:C.D.E (IEC 62056-61 §4).
OBIS_RE = re.compile(r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}$")
FRAMING_RE = re.compile(r"^[78][NEO][12]$")
NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
# A profile with more quantities is a mistake: no meter we know exposes that many
# values worth signing, and each one costs bytes in every batch (≤ 1 KiB per CoAP).
MAX_QUANTITIES = 64


class ProfileError(LocalProtocolError):
    code = "profile.invalid"


class UnknownProfileError(ProfileError):
    code = "profile.unknown"


@dataclass(frozen=True)
class SerialSettings:
    baud: int
    bytesize: int
    parity: str
    stopbits: int

    @property
    def framing(self) -> str:
        return f"{self.bytesize}{self.parity}{self.stopbits}"

    def override(self, baud: int | None = None, framing: str | None = None) -> SerialSettings:
        """These settings with another baud rate and/or framing such as "8N1" or "7E1"."""
        if framing is not None and not FRAMING_RE.match(framing):
            raise ProfileError(f"framing {framing!r} is not like 8N1 or 7E1")
        f = framing or self.framing
        return SerialSettings(baud or self.baud, int(f[0]), f[1], int(f[2]))


@dataclass(frozen=True)
class Limits:
    nominal_voltage_v: float
    rated_current_a: float
    max_power_w: float


@dataclass(frozen=True)
class Quantity:
    obis: str
    name: str
    unit: str
    kind: str
    min: float
    max: float
    scale: float = 1.0
    function: int = 0
    address: int = -1
    dtype: str = ""
    word_order: str = "big"
    byte_order: str = "big"
    source: str = ""
    sum_of: tuple[str, ...] = ()

    @property
    def is_register(self) -> bool:
        return self.address >= 0

    @property
    def register_count(self) -> int:
        return registers_for(self.dtype) if self.is_register else 0

    def plausible(self, value: float) -> bool:
        return self.min <= value <= self.max


@dataclass(frozen=True)
class Profile:
    name: str
    model: str
    protocol: str
    serial: SerialSettings
    limits: Limits
    quantities: tuple[Quantity, ...]
    max_registers_per_request: int = MAX_READ_REGISTERS
    max_gap_registers: int = 0
    identify: tuple[str, ...] = ()
    dsmr_version: str = ""
    dsmr_header: str = ""
    dsmr_interval_s: float = 1.0

    def quantity(self, obis: str) -> Quantity:
        for q in self.quantities:
            if q.obis == obis:
                return q
        raise ProfileError(f"profile {self.name} has no quantity {obis}")

    def register_quantities(self) -> tuple[Quantity, ...]:
        return tuple(q for q in self.quantities if q.is_register)


def names(directory: Path = METERS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load(name: str, directory: Path = METERS_DIR) -> Profile:
    if not NAME_RE.match(name) or not (directory / f"{name}.toml").is_file():
        known = ", ".join(names(directory))
        raise UnknownProfileError(f"no meter profile {name!r} (known: {known})")
    return load_file(directory / f"{name}.toml")


def load_file(path: Path) -> Profile:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path.name}: {exc}") from exc
    try:
        return _build(path.stem, doc)
    except ProfileError as exc:
        raise ProfileError(f"{path.name}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{path.name}: missing or mistyped field {exc}") from exc


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ProfileError(f"[{key}] must be a table")
    return value


def _build(name: str, doc: dict[str, Any]) -> Profile:
    meter = _table(doc, "meter")
    protocol = _choice(meter["protocol"], PROTOCOLS, "protocol")
    quantities = tuple(_quantity(q, meter, protocol) for q in doc.get("quantity", []))
    _check_quantities(quantities, protocol)
    dsmr = _table(doc, "dsmr")
    profile = Profile(
        name=name,
        model=str(meter["model"]),
        protocol=protocol,
        serial=_serial(_table(doc, "serial")),
        limits=_limits(_table(doc, "limits")),
        quantities=quantities,
        max_registers_per_request=int(meter.get("max_registers_per_request", 125)),
        max_gap_registers=int(meter.get("max_gap_registers", 0)),
        identify=tuple(str(o) for o in meter.get("identify", [])),
        dsmr_version=str(dsmr.get("version", "")),
        dsmr_header=str(dsmr.get("header", "")),
        dsmr_interval_s=float(dsmr.get("interval_s", 1.0)),
    )
    _check_profile(profile)
    return profile


def _choice(value: Any, allowed: tuple[Any, ...], what: str) -> Any:
    if value not in allowed:
        raise ProfileError(f"{what} {value!r} not one of {', '.join(map(str, allowed))}")
    return value


def _serial(table: dict[str, Any]) -> SerialSettings:
    return SerialSettings(
        baud=int(table.get("baud", 9600)),
        bytesize=int(_choice(table.get("bytesize", 8), (7, 8), "bytesize")),
        parity=_choice(table.get("parity", "N"), PARITIES, "parity"),
        stopbits=int(_choice(table.get("stopbits", 1), (1, 2), "stopbits")),
    )


def _limits(table: dict[str, Any]) -> Limits:
    return Limits(
        nominal_voltage_v=float(table["nominal_voltage_v"]),
        rated_current_a=float(table["rated_current_a"]),
        max_power_w=float(table["max_power_w"]),
    )


def _quantity(q: dict[str, Any], meter: dict[str, Any], protocol: str) -> Quantity:
    obis = str(q["obis"])
    if not OBIS_RE.match(obis):
        raise ProfileError(f"OBIS code {obis!r} is not A-B:C.D.E")
    common = {
        "obis": obis,
        "name": str(q["name"]),
        "unit": _choice(q["unit"], SI_UNITS, f"{obis} unit"),
        "kind": _choice(q.get("kind", "instant"), KINDS, f"{obis} kind"),
        "min": float(q["min"]),
        "max": float(q["max"]),
        "scale": float(q.get("scale", 1.0)),
        "source": str(q.get("source", "")),
        "sum_of": tuple(str(o) for o in q.get("sum_of", [])),
    }
    if protocol == "dsmr" or common["sum_of"]:
        return Quantity(**common)
    address = int(q["address"])
    if not 0 <= address <= 0xFFFF:
        raise ProfileError(f"{obis}: address {address} out of 0..65535")
    return Quantity(
        **common,
        function=int(_choice(q.get("function", meter.get("function")), (3, 4), "function")),
        address=address,
        dtype=_choice(q.get("type", meter.get("type")), tuple(DATA_TYPES), f"{obis} type"),
        word_order=_choice(q.get("word_order", meter.get("word_order", "big")), ORDERS, "order"),
        byte_order=_choice(q.get("byte_order", meter.get("byte_order", "big")), ORDERS, "order"),
    )


def _check_quantities(quantities: tuple[Quantity, ...], protocol: str) -> None:
    if not 1 <= len(quantities) <= MAX_QUANTITIES:
        raise ProfileError(f"{len(quantities)} quantities (1..{MAX_QUANTITIES})")
    seen = {q.obis for q in quantities}
    if len(seen) != len(quantities):
        raise ProfileError("an OBIS code appears twice")
    for q in quantities:
        if q.min >= q.max:
            raise ProfileError(f"{q.obis}: min {q.min} not below max {q.max}")
        missing = [o for o in q.sum_of if o not in seen or o == q.obis]
        if missing:
            raise ProfileError(f"{q.obis}: sum_of names unknown {missing}")
    _check_overlap([q for q in quantities if q.is_register])


def _check_overlap(registers: list[Quantity]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for q in registers:
        for address in range(q.address, q.address + q.register_count):
            other = taken.setdefault((q.function, address), q.obis)
            if other != q.obis:
                raise ProfileError(f"{q.obis} overlaps {other} at register {address}")


def _check_profile(p: Profile) -> None:
    if not 1 <= p.max_registers_per_request <= MAX_READ_REGISTERS:
        raise ProfileError("max_registers_per_request must be 1..125")
    if not 0 <= p.max_gap_registers <= MAX_READ_REGISTERS:
        raise ProfileError("max_gap_registers must be 0..125")
    codes = {q.obis for q in p.quantities}
    if any(o not in codes for o in p.identify):
        raise ProfileError("identify names an OBIS code the profile lacks")
    if p.protocol == "dsmr" and p.dsmr_version not in ("2.2", "4", "5"):
        raise ProfileError(f"dsmr version {p.dsmr_version!r} not one of 2.2, 4, 5")
    if p.protocol == "modbus" and not p.register_quantities():
        raise ProfileError("a Modbus profile needs register quantities")
