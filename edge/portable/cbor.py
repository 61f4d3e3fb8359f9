"""Deterministic CBOR (RFC 8949) for the subset GridLedger uses.

Theory of operation
-------------------
`encode` writes the core deterministic encoding of RFC 8949 §4.2.1: every argument in
its shortest form (§4.2.1 "preferred serialization"), definite lengths only, map keys
sorted by the bytewise lexicographic order of their own encodings, floats in the
shortest of half, single or double precision that keeps the value (§4.2.2), NaN as
0xf97e00.  Because the same object always gives the same bytes, a signature over the
bytes is a signature over the value.

`decode` is strict: it accepts exactly the encodings `encode` would produce and raises
a DecodeError subclass for anything else (non-shortest arguments, indefinite lengths,
unsorted or duplicate map keys, invalid UTF-8, simple values we do not use, trailing
bytes).  A message that decodes is therefore already canonical, and re-encoding it gives
the input back byte for byte.

Supported: unsigned and negative integers that fit 64 bits (major types 0 and 1), byte
and text strings (2, 3), arrays (4), maps (5), tags (6, kept as `Tag`), false, true,
null and floats (7).  Map keys are integers, text or byte strings or tags: a float or
boolean key would be the same Python dict key as an integer (1.0, true and 1), so the
decoder rejects them (UnsupportedError) rather than let one label pass for another.
Half-precision floats are converted here, not by struct, so that MicroPython gives the
same bytes as CPython; so is the UTF-8 check (MicroPython accepts overlong forms).

Limits (defaults; callers may lower them): nesting depth 16 (our deepest structure, a
COSE_Sign1 carrying a certificate carrying a key, is 6), 4096 items per container, and
64 KiB of input (a CoAP batch is at most 1 KiB; a block-wise batch stays far below).
Exceeding one raises LimitError.

Portable: runs on MicroPython (no typing at runtime; bool is not an int there).
"""

import math
import struct

from .errors import (
    DecodeError,
    LimitError,
    LocalProtocolError,
    NonCanonicalError,
    TrailingBytesError,
    TruncatedError,
    UnsupportedError,
)

MAX_DEPTH = 16
MAX_ITEMS = 4096
MAX_SIZE_BYTES = 65536
_UINT64_MAX = 0xFFFFFFFFFFFFFFFF


class Tag:
    """A tagged data item (major type 6): tag number and its content."""

    def __init__(self, tag: int, value: object) -> None:
        self.tag = tag
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.tag)

    def __repr__(self) -> str:
        return "Tag(" + str(self.tag) + ", " + repr(self.value) + ")"


# -- encoding --------------------------------------------------------------------------


def encode(obj: object) -> bytes:
    """Return the deterministic encoding of `obj`; LocalProtocolError if not encodable."""
    out = bytearray()
    _encode_item(obj, out, 0)
    return bytes(out)


def _head(major: int, arg: int, out: bytearray) -> None:
    mt = major << 5
    if arg < 0:
        raise LocalProtocolError("negative length or tag number")
    if arg < 24:
        out.append(mt | arg)
    elif arg < 0x100:
        out.append(mt | 24)
        out.append(arg)
    elif arg < 0x10000:
        out.append(mt | 25)
        out.extend(struct.pack(">H", arg))
    elif arg < 0x100000000:
        out.append(mt | 26)
        out.extend(struct.pack(">I", arg))
    elif arg <= _UINT64_MAX:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", arg))
    else:
        raise LocalProtocolError("integer does not fit 64 bits")


def _encode_item(obj: object, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise LocalProtocolError("nesting deeper than " + str(MAX_DEPTH))
    if obj is False:
        out.append(0xF4)
    elif obj is True:
        out.append(0xF5)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(0, obj, out)
        else:
            _head(1, -1 - obj, out)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(2, len(obj), out)
        out.extend(obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _head(3, len(raw), out)
        out.extend(raw)
    elif isinstance(obj, (list, tuple)):
        _head(4, len(obj), out)
        for item in obj:
            _encode_item(item, out, depth + 1)
    elif isinstance(obj, dict):
        _encode_map(obj, out, depth)
    elif isinstance(obj, Tag):
        if not isinstance(obj.tag, int) or isinstance(obj.tag, bool):
            raise LocalProtocolError("tag number must be an integer")
        _head(6, obj.tag, out)
        _encode_item(obj.value, out, depth + 1)
    elif isinstance(obj, float):
        out.extend(encode_float(obj))
    else:
        raise LocalProtocolError("cannot encode " + type(obj).__name__)


def _encode_map(obj: dict[object, object], out: bytearray, depth: int) -> None:
    pairs = []
    for key, value in obj.items():
        if not isinstance(key, (int, str, bytes, Tag)) or isinstance(key, bool):
            # the decoder refuses these keys, so encoding them would make unreadable bytes
            raise LocalProtocolError("map key must be an integer, string or tag")
        pairs.append((encode(key), value))
    pairs.sort(key=lambda pair: pair[0])
    _head(5, len(pairs), out)
    previous = None
    for key_bytes, value in pairs:
        if key_bytes == previous:
            raise LocalProtocolError("map has two keys with the same encoding")
        previous = key_bytes
        out.extend(key_bytes)
        _encode_item(value, out, depth + 1)


def encode_float(value: float) -> bytes:
    """Shortest IEEE 754 form (half, single, double) that keeps `value` exactly."""
    if value != value:  # NaN: one canonical form, RFC 8949 §4.2.2
        return b"\xf9\x7e\x00"
    half = _half_bits(value)
    if half is not None:
        return b"\xf9" + struct.pack(">H", half)
    try:
        packed = struct.pack(">f", value)
    except (OverflowError, ValueError):
        packed = b""
    if packed and struct.unpack(">f", packed)[0] == value:
        return b"\xfa" + packed
    return b"\xfb" + struct.pack(">d", value)


# Half precision is computed here rather than with struct's "e" format: MicroPython's
# "e" rounds subnormal halves wrongly (0x03ff packs as 0x03fe), which would make the
# same float encode differently on a gateway and on the aggregator.


def _half_bits(value: float) -> "int | None":
    """The binary16 bits of `value` when it is exactly a half-precision float, else None."""
    sign = 0x8000 if struct.pack(">d", value)[0] & 0x80 else 0
    magnitude = -value if sign else value
    if magnitude == float("inf"):
        return sign | 0x7C00
    if magnitude == 0:
        return sign
    if magnitude > 65504.0:
        return None
    mantissa, exponent = math.frexp(magnitude)  # magnitude = mantissa * 2**exponent
    if exponent < -13:  # below 2**-14: subnormal, a multiple of 2**-24
        scaled = magnitude * 16777216.0
        if scaled != int(scaled):
            return None
        return sign | int(scaled)
    significand = mantissa * 2048.0  # 11 bits, 1024..2047
    if significand != int(significand):
        return None
    return sign | ((exponent + 14) << 10) | (int(significand) - 1024)


def _half_value(bits: int) -> float:
    """The float that binary16 `bits` stand for (exact in single and double)."""
    exponent = (bits >> 10) & 0x1F
    fraction = bits & 0x3FF
    if exponent == 0:
        magnitude = fraction / 16777216.0
    elif exponent == 31:
        magnitude = float("nan") if fraction else float("inf")
    else:
        magnitude = math.ldexp(1024 + fraction, exponent - 25)
    return -magnitude if bits & 0x8000 else magnitude


# -- decoding --------------------------------------------------------------------------


def decode(
    data: bytes,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    max_size_bytes: int = MAX_SIZE_BYTES,
) -> object:
    """Decode exactly one canonical data item filling all of `data`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LocalProtocolError("decode expects bytes")
    if len(data) > max_size_bytes:
        raise LimitError("input of " + str(len(data)) + " bytes exceeds " + str(max_size_bytes))
    if len(data) == 0:
        raise TruncatedError("empty input")
    decoder = _Decoder(bytes(data), max_depth, max_items)
    value = decoder.item(0)
    if decoder.pos != len(data):
        raise TrailingBytesError(str(len(data) - decoder.pos) + " bytes after the data item")
    return value


class _Decoder:
    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.max_items = max_items

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise TruncatedError("needs " + str(end - len(self.data)) + " more bytes")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def head(self) -> tuple[int, int, int]:
        """Return (major type, additional info, argument) of the next data item."""
        if self.pos >= len(self.data):
            raise TruncatedError("data item expected at offset " + str(self.pos))
        initial = self.data[self.pos]
        self.pos += 1
        major = initial >> 5
        info = initial & 0x1F
        if major == 7 or info < 24:
            return major, info, info
        if info == 24:
            arg = self.take(1)[0]
            minimum = 24
        elif info == 25:
            arg = struct.unpack(">H", self.take(2))[0]
            minimum = 0x100
        elif info == 26:
            arg = struct.unpack(">I", self.take(4))[0]
            minimum = 0x10000
        elif info == 27:
            arg = struct.unpack(">Q", self.take(8))[0]
            minimum = 0x100000000
        elif info == 31:
            raise NonCanonicalError("indefinite length at offset " + str(self.pos - 1))
        else:
            raise DecodeError("reserved additional info " + str(info))
        if arg < minimum:
            raise NonCanonicalError("argument not in shortest form at offset " + str(self.pos))
        return major, info, arg

    def item(self, depth: int) -> object:
        if depth > self.max_depth:
            raise LimitError("nesting deeper than " + str(self.max_depth))
        major, info, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self.take(arg)
        if major == 3:
            return self.text(arg)
        if major == 4:
            return self.array(arg, depth)
        if major == 5:
            return self.map(arg, depth)
        if major == 6:
            return Tag(arg, self.item(depth + 1))
        return self.simple(info)

    def text(self, length: int) -> str:
        raw = self.take(length)
        try:
            text = raw.decode("utf-8")
        except UnicodeError:
            raise DecodeError("text string is not valid UTF-8") from None
        # MicroPython's decoder lets overlong forms and surrogates through; CPython's
        # does not.  Checking here makes both interpreters reject the same bytes.
        if len(text) != len(raw) and not _strict_utf8(raw):
            raise DecodeError("text string is not valid UTF-8")
        return text

    def check_count(self, count: int) -> None:
        if count > self.max_items:
            raise LimitError("container of " + str(count) + " items exceeds " + str(self.max_items))
        if count > len(self.data) - self.pos:
            raise TruncatedError("container longer than the remaining input")

    def array(self, count: int, depth: int) -> list[object]:
        self.check_count(count)
        return [self.item(depth + 1) for _ in range(count)]

    def map(self, count: int, depth: int) -> dict[object, object]:
        self.check_count(count)
        result: dict[object, object] = {}
        previous = b""
        for index in range(count):
            start = self.pos
            key = self.item(depth + 1)
            key_bytes = self.data[start : self.pos]
            if index and key_bytes <= previous:
                raise NonCanonicalError("map keys not in deterministic order or repeated")
            previous = key_bytes
            if not isinstance(key, (int, str, bytes, Tag)) or isinstance(key, bool):
                raise UnsupportedError("map key must be an integer, string or tag")
            result[key] = self.item(depth + 1)
            # Distinct encodings can still be equal Python keys (tags over 1 and 1.0):
            # one would silently replace the other.
            if len(result) != index + 1:
                raise NonCanonicalError("map keys repeated as values")
        return result

    def simple(self, info: int) -> object:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 25:
            value = _half_value(struct.unpack(">H", self.take(2))[0])
        elif info == 26:
            value = struct.unpack(">f", self.take(4))[0]
        elif info == 27:
            value = struct.unpack(">d", self.take(8))[0]
        elif info == 31:
            raise NonCanonicalError("unexpected break or indefinite length")
        else:
            raise UnsupportedError("simple value " + str(info) + " is not used")
        return self.checked_float(info, value)

    def checked_float(self, info: int, value: float) -> float:
        end = self.pos
        width = {25: 2, 26: 4, 27: 8}[info]
        given = self.data[end - width - 1 : end]
        if encode_float(value) != given:
            raise NonCanonicalError("float not in shortest form")
        return value


def _strict_utf8(raw: bytes) -> bool:
    """RFC 3629 §4 well-formedness: no overlong forms, surrogates or code points > U+10FFFF."""
    i = 0
    end = len(raw)
    while i < end:
        lead = raw[i]
        if lead < 0x80:
            i += 1
            continue
        if 0xC2 <= lead <= 0xDF:
            count, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= lead <= 0xEF:
            count = 2
            low = 0xA0 if lead == 0xE0 else 0x80
            high = 0x9F if lead == 0xED else 0xBF
        elif 0xF0 <= lead <= 0xF4:
            count = 3
            low = 0x90 if lead == 0xF0 else 0x80
            high = 0x8F if lead == 0xF4 else 0xBF
        else:
            return False
        if i + count >= end:
            return False
        if not low <= raw[i + 1] <= high:
            return False
        for j in range(i + 2, i + count + 1):
            if not 0x80 <= raw[j] <= 0xBF:
                return False
        i += count + 1
    return True
