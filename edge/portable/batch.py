"""The batch: what a gateway signs (wire format v1 of DESIGN.md).

Theory of operation
-------------------
A batch is a deterministic CBOR map

    0: 1 (format version)    1: device id    2: seq    3: sent_at (Unix s, device clock)
    4: clock status (0 unsynced, 1 synced)   5: SenML pack (RFC 8428 §6 CBOR labels)

The pack holds one group per meter.  The first record of a group carries the base name
bn = "<meter-id>/" and the base time bt = read time; the records after it inherit both
(RFC 8428 §4.1).  Names are OBIS codes ("1-0:1.8.0"); units are SenML/SI units.  Energy
and volume registers are cumulative, so they travel as a sum `s` (J, m3); every other
quantity is a value `v` (W, V, A, Hz, ...).  A meter read that failed is a record
n = "status", vs = short code ("timeout", "crc", "exception", ...).

Prefer integers for registers (energy in whole J): a float's shortest CBOR form depends
on the interpreter's float width, an integer's does not (an ESP32 computes in single
precision).

`Batch.from_obj` validates a decoded payload and raises BatchError with a code naming
the field: batch.version, batch.field, batch.device_id, batch.seq, batch.time,
batch.clock, batch.senml, batch.meter, batch.obis, batch.unit, batch.value.
`open_message` parses a COSE_Sign1, validates its batch and checks kid == device id;
the caller verifies the signature with the device's key.

Limits: 32 meters per batch (a gateway's RS-485 bus in practice serves fewer), 32
records per meter, 256 records in all, ids of at most 64 characters, status codes of at
most 16; times fit 40 bits (year 36812).

Portable: runs on MicroPython.
"""

from . import cbor, cose
from .errors import BatchError, DecodeError, KidMismatchError, LocalProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeGuard

FORMAT_VERSION = 1
K_VERSION = 0
K_DEVICE = 1
K_SEQ = 2
K_SENT_AT = 3
K_CLOCK = 4
K_PACK = 5
BATCH_KEYS = (K_VERSION, K_DEVICE, K_SEQ, K_SENT_AT, K_CLOCK, K_PACK)

# SenML CBOR labels, RFC 8428 §6 table 6
L_BN = -2
L_BT = -3
L_N = 0
L_U = 1
L_V = 2
L_VS = 3
L_S = 5
RECORD_LABELS = (L_BN, L_BT, L_N, L_U, L_V, L_VS, L_S)

STATUS_NAME = "status"
CLOCK_UNSYNCED = 0
CLOCK_SYNCED = 1

MAX_METERS = 32
MAX_RECORDS_PER_METER = 32
MAX_RECORDS = 256
MAX_ID_CHARS = 64
MAX_STATUS_CHARS = 16
MAX_TIME_S = (1 << 40) - 1
MAX_SEQ = (1 << 63) - 1

# Units that travel as a running sum (`s`) rather than a value (`v`).
SUM_UNITS = ("J", "m3")
# SenML units (RFC 8428 §12.1 registry) a meter reading may carry.
UNITS = ("J", "W", "V", "A", "Hz", "/", "var", "VA", "m3", "s", "Cel")
# OBIS codes we know, with the unit they must carry.
OBIS_UNITS = {
    "1-0:1.8.0": "J",
    "1-0:1.8.1": "J",
    "1-0:1.8.2": "J",
    "1-0:2.8.0": "J",
    "1-0:2.8.1": "J",
    "1-0:2.8.2": "J",
    "1-0:1.7.0": "W",
    "1-0:2.7.0": "W",
    "1-0:21.7.0": "W",
    "1-0:41.7.0": "W",
    "1-0:61.7.0": "W",
    "1-0:22.7.0": "W",
    "1-0:42.7.0": "W",
    "1-0:62.7.0": "W",
    "1-0:32.7.0": "V",
    "1-0:52.7.0": "V",
    "1-0:72.7.0": "V",
    "1-0:31.7.0": "A",
    "1-0:51.7.0": "A",
    "1-0:71.7.0": "A",
    "1-0:14.7.0": "Hz",
    "1-0:13.7.0": "/",
    "1-0:33.7.0": "/",
    "1-0:53.7.0": "/",
    "1-0:73.7.0": "/",
    "0-1:24.2.1": "m3",
}
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"
_STATUS_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _fail(code: str, message: str) -> BatchError:
    return BatchError(message, "batch." + code)


def _is_int(value: object) -> "TypeGuard[int]":
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> "TypeGuard[int | float]":
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return _is_int(value)


def valid_id(text: object) -> bool:
    """Device and meter ids: 1..64 of [A-Za-z0-9._:-] (safe in MQTT topics and URLs)."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_ID_CHARS:
        return False
    return all(ch in _ID_CHARS for ch in text)


def valid_obis(name: str) -> bool:
    """True for A-B:C.D.E with each group a number 0..255 without leading zeros.

    One spelling per code: "1-0:01.8.0" would otherwise name the import register
    without its unit check, and escape the ledger's per-register rules."""
    if "-" not in name or ":" not in name:
        return False
    a, rest = name.split("-", 1)
    b, rest = rest.split(":", 1) if ":" in rest else (rest, "")
    groups = [a, b]
    groups.extend(rest.split("."))  # MicroPython has no starred list displays
    if len(groups) != 5:
        return False
    for group in groups:
        if not 0 < len(group) <= 3 or not all("0" <= ch <= "9" for ch in group):
            return False
        if len(group) > 1 and group[0] == "0":
            return False
        if int(group) > 255:
            return False
    return True


# Decimal places a reading keeps, per unit: below every supported meter's resolution.
DECIMALS_BY_UNIT = {"W": 1, "V": 2, "A": 3, "Hz": 3, "/": 3, "m3": 3, "var": 1, "VA": 1}
DEFAULT_DECIMALS = 3


def rounded(value_si: float, unit: str) -> "int | float":
    """A driver's SI value as it travels: energy in whole joules (the same bytes on every
    interpreter, whatever its float width), other units to their resolution."""
    if unit == "J":
        return round(value_si)
    return round(float(value_si), DECIMALS_BY_UNIT.get(unit, DEFAULT_DECIMALS))


class Record:
    """One SenML record of a meter: a reading (name, unit, value) or a status code."""

    def __init__(self, name: str, value: "int | float | str", unit: str = "") -> None:
        self.name = name
        self.value = value
        self.unit = unit

    @classmethod
    def reading(cls, name: str, value_si: float, unit: str) -> "Record":
        """A record of a driver's SI value, `rounded` for the wire."""
        return cls(name, rounded(value_si, unit), unit)

    @classmethod
    def status(cls, code: str) -> "Record":
        return cls(STATUS_NAME, code)

    @property
    def is_status(self) -> bool:
        return self.name == STATUS_NAME

    def to_obj(self) -> dict[object, object]:
        if self.is_status:
            return {L_N: self.name, L_VS: self.value}
        field = L_S if self.unit in SUM_UNITS else L_V
        return {L_N: self.name, L_U: self.unit, field: self.value}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return False
        return (self.name, self.value, self.unit) == (other.name, other.value, other.unit)

    def __repr__(self) -> str:
        return "Record(" + repr(self.name) + ", " + repr(self.value) + ", " + repr(self.unit) + ")"


class MeterGroup:
    """The records read from one meter at one time."""

    def __init__(self, meter_id: str, read_time_s: int, records: list[Record]) -> None:
        self.meter_id = meter_id
        self.read_time_s = read_time_s
        self.records = records

    def to_objs(self) -> list[dict[object, object]]:
        if not self.records:
            raise LocalProtocolError("meter " + self.meter_id + " has no records")
        objs = [record.to_obj() for record in self.records]
        objs[0][L_BN] = self.meter_id + "/"
        objs[0][L_BT] = self.read_time_s
        return objs

    def status(self) -> str:
        """The group's status code: "ok" unless a status record says otherwise."""
        for record in self.records:
            if record.is_status and isinstance(record.value, str):
                return record.value
        return "ok"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MeterGroup):
            return False
        mine = (self.meter_id, self.read_time_s, self.records)
        return mine == (other.meter_id, other.read_time_s, other.records)


class Batch:
    """A validated batch; build one and `encode()` it, or `from_obj` a decoded one."""

    def __init__(
        self,
        device_id: str,
        seq: int,
        sent_at_s: int,
        clock_synced: bool,
        meters: list[MeterGroup],
    ) -> None:
        self.device_id = device_id
        self.seq = seq
        self.sent_at_s = sent_at_s
        self.clock_synced = clock_synced
        self.meters = meters

    def to_obj(self) -> dict[object, object]:
        pack: list[object] = []
        for group in self.meters:
            pack.extend(group.to_objs())
        return {
            K_VERSION: FORMAT_VERSION,
            K_DEVICE: self.device_id,
            K_SEQ: self.seq,
            K_SENT_AT: self.sent_at_s,
            K_CLOCK: CLOCK_SYNCED if self.clock_synced else CLOCK_UNSYNCED,
            K_PACK: pack,
        }

    def encode(self) -> bytes:
        """Deterministic CBOR of the batch; LocalProtocolError if it would not validate."""
        obj = self.to_obj()
        try:
            Batch.from_obj(obj)
        except BatchError as exc:
            raise LocalProtocolError("invalid batch: " + str(exc), "local." + exc.code) from None
        return cbor.encode(obj)

    @classmethod
    def from_obj(cls, obj: object) -> "Batch":
        if not isinstance(obj, dict):
            raise _fail("field", "batch must be a map")
        for key in obj:
            if key not in BATCH_KEYS:
                raise _fail("field", "unexpected batch key " + repr(key))
        if obj.get(K_VERSION) != FORMAT_VERSION or not _is_int(obj.get(K_VERSION)):
            raise _fail("version", "format version must be " + str(FORMAT_VERSION))
        device_id = obj.get(K_DEVICE)
        if not valid_id(device_id):
            raise _fail("device_id", "device id must be 1..64 of [A-Za-z0-9._:-]")
        seq = obj.get(K_SEQ)
        if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
            raise _fail("seq", "seq must be an unsigned integer below 2**63")
        sent_at = _time(obj.get(K_SENT_AT), "sent_at")
        clock = obj.get(K_CLOCK)
        if clock not in (CLOCK_UNSYNCED, CLOCK_SYNCED) or not _is_int(clock):
            raise _fail("clock", "clock status must be 0 or 1")
        meters = _groups(obj.get(K_PACK))
        return cls(str(device_id), seq, sent_at, clock == CLOCK_SYNCED, meters)

    def reading_count(self) -> int:
        """One reading per meter per batch (what the ledger counts)."""
        return len(self.meters)


def _time(value: object, what: str) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_TIME_S:
        raise _fail("time", what + " must be Unix seconds (unsigned, 40 bits)")
    return value


def _groups(pack: object) -> list[MeterGroup]:
    if not isinstance(pack, list) or not pack:
        raise _fail("senml", "SenML pack must be a non-empty array")
    if len(pack) > MAX_RECORDS:
        raise _fail("senml", "more than " + str(MAX_RECORDS) + " records")
    groups: list[MeterGroup] = []
    seen: list[str] = []
    for raw in pack:
        if not isinstance(raw, dict):
            raise _fail("senml", "SenML record must be a map")
        if L_BN in raw or not groups:
            group = _start_group(raw, seen)
            groups.append(group)
            if len(groups) > MAX_METERS:
                raise _fail("senml", "more than " + str(MAX_METERS) + " meters")
        elif L_BT in raw:
            raise _fail("senml", "bt without bn")
        groups[-1].records.append(_record(raw))
        if len(groups[-1].records) > MAX_RECORDS_PER_METER:
            raise _fail("senml", "more than " + str(MAX_RECORDS_PER_METER) + " records a meter")
    return groups


def _start_group(raw: dict[object, object], seen: list[str]) -> MeterGroup:
    base_name = raw.get(L_BN)
    if not isinstance(base_name, str) or not base_name.endswith("/"):
        raise _fail("meter", "first record of a meter needs bn = \"<meter-id>/\"")
    meter_id = base_name[:-1]
    if not valid_id(meter_id):
        raise _fail("meter", "meter id must be 1..64 of [A-Za-z0-9._:-]")
    if meter_id in seen:
        raise _fail("meter", "meter " + meter_id + " appears twice")
    seen.append(meter_id)
    return MeterGroup(meter_id, _time(raw.get(L_BT), "bt"), [])


def _record(raw: dict[object, object]) -> Record:
    for label in raw:
        if label not in RECORD_LABELS:
            raise _fail("senml", "unexpected SenML label " + repr(label))
    name = raw.get(L_N)
    if name == STATUS_NAME:
        return _status_record(raw)
    if not isinstance(name, str) or not valid_obis(name):
        raise _fail("obis", "record name must be an OBIS code or \"status\"")
    unit = raw.get(L_U)
    expected = OBIS_UNITS.get(name)
    if not isinstance(unit, str) or unit not in UNITS or (expected and unit != expected):
        raise _fail("unit", "unit " + repr(unit) + " does not fit " + name)
    field, other = (L_S, L_V) if unit in SUM_UNITS else (L_V, L_S)
    value = raw.get(field)
    if other in raw or L_VS in raw or not _is_number(value):
        raise _fail("value", name + " needs one finite number in " + ("s" if field == L_S else "v"))
    if field == L_S and value < 0:
        raise _fail("value", name + " is a register and cannot be negative")
    return Record(name, value, unit)


def _status_record(raw: dict[object, object]) -> Record:
    code = raw.get(L_VS)
    if L_U in raw or L_V in raw or L_S in raw:
        raise _fail("value", "a status record carries only vs")
    if not isinstance(code, str) or not 0 < len(code) <= MAX_STATUS_CHARS:
        raise _fail("value", "status code must be 1..16 characters")
    if not all(ch in _STATUS_CHARS for ch in code):
        raise _fail("value", "status code must be [a-z0-9_]")
    return Record.status(code)


# -- messages --------------------------------------------------------------------------


def sign(batch: Batch, sign_fn: "Callable[[bytes], bytes]", kcwt: bytes | None = None) -> bytes:
    """The COSE_Sign1 message for `batch`, kid = device id."""
    return cose.sign1(batch.encode(), batch.device_id.encode(), sign_fn, kcwt)


def open_message(data: bytes) -> "tuple[cose.Sign1, Batch]":
    """Parse a message and validate its batch (signature not yet checked)."""
    message = cose.parse(data)
    try:
        obj = cbor.decode(message.payload, max_depth=6)
    except DecodeError as exc:
        raise exc.__class__("payload: " + str(exc)) from None
    batch = Batch.from_obj(obj)
    if message.kid != batch.device_id.encode():
        raise KidMismatchError("kid " + repr(message.kid) + " is not device " + batch.device_id)
    return message, batch


# -- SenML JSON (RFC 8428 §5) ----------------------------------------------------------


def groups_from_senml_json(pack: object) -> list[MeterGroup]:
    """Meter groups from a SenML JSON pack (list of records with bn, bt, n, u, v, s, vs)."""
    labels = {"bn": L_BN, "bt": L_BT, "n": L_N, "u": L_U, "v": L_V, "vs": L_VS, "s": L_S}
    if not isinstance(pack, list):
        raise _fail("senml", "SenML JSON pack must be an array")
    converted: list[object] = []
    for record in pack:
        if not isinstance(record, dict):
            raise _fail("senml", "SenML record must be an object")
        out: dict[object, object] = {}
        for key, value in record.items():
            if key not in labels:
                raise _fail("senml", "unsupported SenML field " + repr(key))
            out[labels[key]] = value
        converted.append(out)
    return _groups(converted)


def groups_to_senml_json(groups: list[MeterGroup]) -> list[dict[str, object]]:
    names = {L_BN: "bn", L_BT: "bt", L_N: "n", L_U: "u", L_V: "v", L_VS: "vs", L_S: "s"}
    out: list[dict[str, object]] = []
    for group in groups:
        for obj in group.to_objs():
            out.append({names[k]: v for k, v in obj.items() if isinstance(k, int)})
    return out
