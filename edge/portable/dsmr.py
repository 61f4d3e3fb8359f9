"""DSMR P1 telegrams: incremental decoder, OBIS-line parser, SI conversion, encoder.

Theory of operation
-------------------
A smart meter following the Dutch Smart Meter Requirements pushes a telegram on its P1
port every second (DSMR 5) or ten seconds (DSMR 4, 2.2); nothing is ever sent to it.
A telegram (P1 Companion Standard 5.0.2 §6.2, §6.12) is ASCII:

    /XXX5 identification CR LF
    CR LF
    OBIS(value*unit)(...) CR LF      one data object per line, IEC 62056-21 §6.3
    ...
    !CRC CR LF

CRC is CRC-16/ARC of every byte from '/' through '!' inclusive, written as four
upper-case hex digits (DSMR 4 and 5).  DSMR 2.2 has no CRC: the line is just "!".
Some objects (the DSMR 2.2 gas reading) continue on the next line, which then starts
with '('.  Values carry their unit after '*'; `reading_values` converts the units meters
use (kWh, kW, V, A, m3, s, ...) to SI so that energy leaves as J and power as W.

The decoder takes bytes as they arrive (`feed`), skips anything before '/', and hands
out whole telegrams (`next_telegram`).  A telegram that fails its CRC or is malformed is
dropped and reported; the next one parses normally.

Limits (with reasons)
---------------------
- A telegram is at most 8192 bytes: DSMR 5 caps the text message at 1024 characters
  (§6.12, hex-encoded 2048 bytes); a full telegram with four M-Bus devices stays under
  3 KiB.  Bytes beyond the limit without a '!' are dropped.
- At most 64 data objects and 12 groups per object, to bound parse work on a board.

Errors, all FrameError (frame.*):

    FrameError                   frame.invalid
    ├── CrcError                 frame.crc          CRC-16/ARC mismatch (from modbus.py)
    ├── MalformedFrameError      frame.malformed    line does not follow the grammar
    ├── FrameLimitError          frame.limit        over a limit above
    └── TruncatedFrameError      frame.truncated    telegram ended early

Portable: runs on MicroPython, so no typing, dataclasses or f-string "=" here.
"""

from .crc16 import crc16_arc
from .errors import LocalProtocolError
from .modbus import CrcError, FrameLimitError, MalformedFrameError, TruncatedFrameError

MAX_TELEGRAM_BYTES = 8192
MAX_OBJECTS = 64
MAX_GROUPS = 12
_HEX = b"0123456789ABCDEFabcdef"

# DSMR unit -> (factor, SI unit).  SenML names: J, W, V, A, m3, s, var, VAh...
SI_UNITS = {
    "kWh": (3.6e6, "J"),
    "Wh": (3600.0, "J"),
    "kW": (1000.0, "W"),
    "W": (1.0, "W"),
    "kvarh": (3.6e6, "varh"),
    "kvar": (1000.0, "var"),
    "V": (1.0, "V"),
    "A": (1.0, "A"),
    "m3": (1.0, "m3"),
    "GJ": (1e9, "J"),
    "s": (1.0, "s"),
    "Hz": (1.0, "Hz"),
}


class Telegram:
    """One decoded telegram: header (without '/'), objects, CRC (None on DSMR 2.2).

    `objects` maps an OBIS reference to its list of groups, each (value, unit) with
    unit "" when the group carries none.  `raw` is the telegram as received.
    """

    def __init__(
        self, header: str, objects: dict[str, list[tuple[str, str]]], crc: int | None,
        raw: bytes,
    ) -> None:
        self.header = header
        self.objects = objects
        self.crc = crc
        self.raw = raw


def _parse_groups(rest: str) -> list[tuple[str, str]]:
    groups: list[tuple[str, str]] = []
    while rest:
        if rest[0] != "(":
            raise MalformedFrameError("expected '(' in %r" % rest[:20])
        end = rest.find(")")
        if end < 0:
            raise MalformedFrameError("unclosed '(' in %r" % rest[:20])
        body = rest[1:end]
        star = body.find("*")
        if star >= 0:
            groups.append((body[:star], body[star + 1 :]))
        else:
            groups.append((body, ""))
        if len(groups) > MAX_GROUPS:
            raise FrameLimitError("more than %d groups on one line" % MAX_GROUPS)
        rest = rest[end + 1 :]
    return groups


def _is_obis(ref: str) -> bool:
    if not ref or len(ref) > 20:
        return False
    return all(ch in "0123456789-:.*" for ch in ref)


def parse_lines(lines: list[str]) -> dict[str, list[tuple[str, str]]]:
    """OBIS reference -> groups for the data lines of a telegram."""
    objects: dict[str, list[tuple[str, str]]] = {}
    last = ""
    for line in lines:
        if not line:
            continue
        if line[0] == "(":
            if not last:
                raise MalformedFrameError("continuation line with no object before it")
            objects[last].extend(_parse_groups(line))
            continue
        paren = line.find("(")
        if paren <= 0 or not _is_obis(line[:paren]):
            raise MalformedFrameError("not an OBIS line: %r" % line[:40])
        last = line[:paren]
        objects[last] = _parse_groups(line[paren:])
        if len(objects) > MAX_OBJECTS:
            raise FrameLimitError("more than %d objects" % MAX_OBJECTS)
    return objects


def _check_crc(body: bytes, crc_text: bytes) -> int | None:
    if not crc_text:
        return None
    if len(crc_text) != 4 or not all(b in _HEX for b in crc_text):
        raise MalformedFrameError("CRC field %r is not 4 hex digits" % crc_text)
    got = int(crc_text.decode(), 16)
    want = crc16_arc(body)
    if got != want:
        raise CrcError("telegram CRC %04X, computed %04X" % (got, want))
    return got


def decode_telegram(raw: bytes) -> Telegram:
    """Parse one whole telegram from '/' through the line ending after '!CRC'."""
    if len(raw) > MAX_TELEGRAM_BYTES:
        raise FrameLimitError("telegram of %d bytes" % len(raw))
    bang = raw.find(b"!")
    if not raw.startswith(b"/") or bang < 0:
        raise TruncatedFrameError("telegram without '/' ... '!'")
    crc = _check_crc(raw[: bang + 1], raw[bang + 1 :].strip())
    try:
        text = raw[1:bang].decode()
    except UnicodeError:
        raise MalformedFrameError("telegram is not ASCII") from None
    lines = text.split("\r\n")
    if len(lines) < 2 or lines[1] != "":
        raise MalformedFrameError("no empty line after the identification")
    return Telegram(lines[0], parse_lines(lines[2:]), crc, bytes(raw))


class TelegramDecoder:
    """Incremental: feed bytes as they come, take whole telegrams out."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += bytes(data)

    def buffered(self) -> int:
        return len(self._buf)

    def next_telegram(self) -> Telegram | None:
        """A telegram, None if more bytes are needed; raises once per bad telegram."""
        start = self._buf.find(b"/")
        if start < 0:
            self._buf = b""
            return None
        buf = self._buf[start:]
        self._buf = buf
        bang = buf.find(b"!")
        end = buf.find(b"\r\n", bang) if bang >= 0 else -1
        if end < 0:
            if len(buf) > MAX_TELEGRAM_BYTES:
                self._buf = buf[1:]
                raise FrameLimitError("no '!' within %d bytes" % MAX_TELEGRAM_BYTES)
            return None
        self._buf = buf[end + 2 :]
        return decode_telegram(buf[: end + 2])


def _number(text: str) -> float:
    # Stricter than float(): no "nan", "inf", "1_0" or exponents, which CPython and
    # MicroPython would treat differently and no meter sends.
    digits = text[1:] if text[:1] == "-" else text
    if not digits or digits.count(".") > 1 or not all(c in "0123456789." for c in digits):
        raise MalformedFrameError("value %r is not a number" % text)
    if digits == ".":
        raise MalformedFrameError("value %r is not a number" % text)
    return float(text)


def si_value(value: str, unit: str) -> tuple[float, str]:
    """(value, SI unit) of a numeric group; raises MalformedFrameError if not numeric."""
    number = _number(value)
    factor_unit = SI_UNITS.get(unit)
    if factor_unit is None:
        return number, unit
    return number * factor_unit[0], factor_unit[1]


def reading_values(telegram: Telegram) -> dict[str, tuple[float, str]]:
    """OBIS -> (SI value, SI unit) for every object whose last group has a unit.

    The last group is the reading (gas objects put a timestamp first; DSMR 2.2 puts the
    unit in its own group before the value); objects without a unit (identifiers,
    timestamps, tariff indicator, texts) are left out.
    """
    out: dict[str, tuple[float, str]] = {}
    for obis, groups in telegram.objects.items():
        if not groups:
            continue
        value, unit = groups[-1]
        if not unit and len(groups) >= 2 and groups[-2][0] in SI_UNITS:
            unit = groups[-2][0]  # DSMR 2.2 gas: ...(m3) CR LF (00124.477)
        if unit:
            out[obis] = si_value(value, unit)
    return out


def encode_telegram(header: str, lines: list[str], with_crc: bool = True) -> bytes:
    """Telegram text for `header` (without '/') and data lines; CRC unless DSMR 2.2."""
    if "\r" in header or "\n" in header:
        raise LocalProtocolError("header must be one line")
    body = ("/" + header + "\r\n\r\n" + "".join(line + "\r\n" for line in lines) + "!")
    raw = body.encode()
    if not with_crc:
        return raw + b"\r\n"
    return raw + ("%04X\r\n" % crc16_arc(raw)).encode()
