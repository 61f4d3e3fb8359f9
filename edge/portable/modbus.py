"""Modbus RTU and Modbus TCP framing and the register-read codec, sans-I/O.

Theory of operation
-------------------
A Modbus PDU is one function-code byte plus data (Application Protocol V1.1b3 §4.1).
GridLedger reads meters with function 03 (read holding registers, §6.3) and 04 (read
input registers, §6.4); a server that refuses answers with the function code | 0x80 and
one exception code (§7).  The simulator also answers 06 and 16 with an exception, so those
frame lengths are known too.

RTU (Serial Line V1.02 §2.5.1) wraps a PDU as unit id + PDU + CRC-16/MODBUS (low byte
first).  Frames are delimited on the wire by 3.5 character times of silence, which a
codec cannot see; it therefore frames by the length the function code implies, and the
I/O shell calls `end_of_frame()` when it saw the silence (or its read timeout expired):
anything still buffered then is a truncated frame or trailing garbage.  A frame with a
bad CRC is dropped whole and reported; the decoder stays usable.

`ReadTransaction` is one register read as a master performs it on a serial line, with
its timers as data: the shell writes `request`, passes received bytes to `receive(data,
now_s)`, sleeps until `next_deadline()` and then calls `handle_timeout(now_s)`; when
`done()`, `registers` or `error` holds the outcome.  Frames from other units (a late
answer to an earlier request) are skipped.

TCP (Messaging on TCP/IP V1.0b §3.1.3) prefixes unit id + PDU with the 6-byte MBAP
header: transaction id, protocol id (0) and a length that counts unit id + PDU.

Registers are 16-bit words sent big-endian.  Values wider than one register are spread
over several; meters disagree on word order (and a few on byte order within a word), so
`encode_value` and `decode_value` take both orders as parameters.

Limits (with reasons)
---------------------
- RTU ADU at most 256 bytes (§2.5.1): more is garbage or another frame.
- TCP ADU at most 260 bytes (MBAP §3.1.3): 7-byte header + 253-byte PDU.
- At most 125 registers per read (§6.3, so the answer fits 253 bytes).
- Unit ids 1..247 address devices (§2.2); 0 is broadcast and never answers reads.

Errors: every failure caused by remote bytes raises a FrameError subclass below.

    FrameError                  frame.invalid
    ├── CrcError                frame.crc         CRC-16 mismatch
    ├── TruncatedFrameError     frame.truncated   frame ended early / trailing bytes
    ├── MalformedFrameError     frame.malformed   lengths or fields inconsistent
    ├── FrameLimitError         frame.limit       over a documented limit
    ├── UnsupportedFunctionError frame.function   function code we cannot frame
    └── ModbusExceptionError    modbus.exception  the server answered with an exception
    ResponseTimeoutError        meter.timeout     no answer before the deadline (a
                                                  RemoteProtocolError, not a frame error)

Portable: runs on MicroPython, so no typing, dataclasses or f-string "=" here.
"""

import struct

from .crc16 import crc16_modbus
from .errors import FrameError, LocalProtocolError, RemoteProtocolError

READ_HOLDING = 3
READ_INPUT = 4
WRITE_SINGLE = 6
WRITE_MULTIPLE = 16

MAX_RTU_ADU_BYTES = 256
MAX_TCP_ADU_BYTES = 260
MAX_PDU_BYTES = 253
MAX_READ_REGISTERS = 125
UNIT_MIN = 1
UNIT_MAX = 247
MBAP_HEADER_BYTES = 7

# Exception codes (§7).
ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
SERVER_DEVICE_FAILURE = 4
GATEWAY_TARGET_FAILED = 11

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

# data type -> (struct format, registers)
DATA_TYPES = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
    "float64": (">d", 4),
}
ORDERS = ("big", "little")


class CrcError(FrameError):
    code = "frame.crc"


class TruncatedFrameError(FrameError):
    code = "frame.truncated"


class MalformedFrameError(FrameError):
    code = "frame.malformed"


class FrameLimitError(FrameError):
    code = "frame.limit"


class UnsupportedFunctionError(FrameError):
    code = "frame.function"


class ModbusExceptionError(FrameError):
    """The server answered with exception `exception_code` (§7)."""

    code = "modbus.exception"

    def __init__(self, function: int, exception_code: int) -> None:
        name = EXCEPTION_NAMES.get(exception_code, "unknown")
        FrameError.__init__(
            self, "function %d: exception %d (%s)" % (function, exception_code, name)
        )
        self.function = function
        self.exception_code = exception_code


class ResponseTimeoutError(RemoteProtocolError):
    code = "meter.timeout"


# -- PDUs ------------------------------------------------------------------------------


def _check_read(function: int, address: int, count: int) -> None:
    if function not in (READ_HOLDING, READ_INPUT):
        raise LocalProtocolError("function %d is not a register read" % function)
    if not 0 <= address <= 0xFFFF or not 1 <= count <= MAX_READ_REGISTERS:
        raise LocalProtocolError("bad read: address %d count %d" % (address, count))
    if address + count > 0x10000:
        raise LocalProtocolError("read runs past register 65535")


def encode_read_request(function: int, address: int, count: int) -> bytes:
    """PDU asking for `count` registers from `address` (§6.3, §6.4)."""
    _check_read(function, address, count)
    return struct.pack(">BHH", function, address, count)


def decode_read_request(pdu: bytes) -> tuple[int, int, int]:
    """(function, address, count) of a read-request PDU."""
    if pdu[:1] not in (b"\x03", b"\x04"):
        raise UnsupportedFunctionError("PDU %r is not a register read" % pdu[:1])
    if len(pdu) != 5:
        raise MalformedFrameError("read request PDU has %d bytes, not 5" % len(pdu))
    function, address, count = struct.unpack(">BHH", pdu)
    if not 1 <= count <= MAX_READ_REGISTERS:
        raise FrameLimitError("read of %d registers (1..125)" % count)
    return function, address, count


def encode_read_response(function: int, registers: list[int]) -> bytes:
    if not 1 <= len(registers) <= MAX_READ_REGISTERS:
        raise LocalProtocolError("%d registers in one answer" % len(registers))
    out = bytearray(struct.pack(">BB", function, 2 * len(registers)))
    for word in registers:
        out.extend(struct.pack(">H", word & 0xFFFF))
    return bytes(out)


def encode_exception(function: int, exception_code: int) -> bytes:
    return struct.pack(">BB", (function | 0x80) & 0xFF, exception_code)


def decode_read_response(function: int, count: int, pdu: bytes) -> list[int]:
    """Registers of the answer to a read of `count` registers with `function`."""
    if len(pdu) < 2:
        raise TruncatedFrameError("response PDU of %d bytes" % len(pdu))
    got = pdu[0]
    if got == function | 0x80:
        if len(pdu) != 2:
            raise MalformedFrameError("exception PDU of %d bytes" % len(pdu))
        raise ModbusExceptionError(function, pdu[1])
    if got != function:
        raise MalformedFrameError("answer to function %d has function %d" % (function, got))
    if pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise MalformedFrameError(
            "asked %d registers, byte count %d, PDU %d bytes" % (count, pdu[1], len(pdu))
        )
    return list(struct.unpack(">%dH" % count, pdu[2:]))


# -- RTU -------------------------------------------------------------------------------


def encode_rtu(unit: int, pdu: bytes) -> bytes:
    """RTU ADU: unit id + PDU + CRC-16/MODBUS low byte first (§2.5.1)."""
    if not 0 <= unit <= 255 or not 1 <= len(pdu) <= MAX_PDU_BYTES:
        raise LocalProtocolError("bad RTU frame: unit %d, PDU %d bytes" % (unit, len(pdu)))
    body = bytes([unit]) + pdu
    return body + struct.pack("<H", crc16_modbus(body))


def decode_rtu(adu: bytes) -> tuple[int, bytes]:
    """(unit, PDU) of one whole RTU ADU; raises on length or CRC."""
    if len(adu) < 4:
        raise TruncatedFrameError("RTU frame of %d bytes (at least 4)" % len(adu))
    if len(adu) > MAX_RTU_ADU_BYTES:
        raise FrameLimitError("RTU frame of %d bytes (at most 256)" % len(adu))
    got = adu[-2] | adu[-1] << 8
    want = crc16_modbus(adu[:-2])
    if got != want:
        raise CrcError("RTU CRC %04x, computed %04x" % (got, want))
    return adu[0], bytes(adu[1:-2])


def _request_length(buf: bytes) -> int:
    """Bytes of the request frame starting `buf`, or 0 if more bytes are needed."""
    function = buf[1]
    if function in (1, 2, 3, 4, 5, 6):
        return 8
    if function in (15, 16):
        return 9 + buf[6] if len(buf) >= 7 else 0
    raise UnsupportedFunctionError("cannot frame request function %d" % function)


def _response_length(buf: bytes) -> int:
    """Bytes of the response frame starting `buf`, or 0 if more bytes are needed."""
    function = buf[1]
    if function & 0x80:
        return 5
    if function in (1, 2, 3, 4):
        return 5 + buf[2] if len(buf) >= 3 else 0
    if function in (5, 6, 15, 16):
        return 8
    raise UnsupportedFunctionError("cannot frame response function %d" % function)


class RtuDecoder:
    """Turns a byte stream into (unit, PDU) frames; `role` is "request" or "response".

    `feed(data)` buffers; `next_frame()` returns a frame, None when more bytes are
    needed, or raises (having dropped the bad frame so the next call can go on);
    `end_of_frame()` is called by the shell on line silence and raises if bytes were
    left over.
    """

    def __init__(self, role: str) -> None:
        if role not in ("request", "response"):
            raise LocalProtocolError("role must be request or response")
        self._length = _request_length if role == "request" else _response_length
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += bytes(data)

    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        try:
            need = self._length(buf)
        except FrameError:
            self._buf = b""
            raise
        if need == 0 or len(buf) < need:
            if len(buf) > MAX_RTU_ADU_BYTES:
                self._buf = b""
                raise FrameLimitError("no RTU frame in %d bytes" % len(buf))
            return None
        self._buf = buf[need:]
        return decode_rtu(buf[:need])

    def end_of_frame(self) -> None:
        left = len(self._buf)
        self._buf = b""
        if left:
            raise TruncatedFrameError("%d bytes left at end of frame" % left)


class ReadTransaction:
    """One RTU register read by a master, sans-I/O, timers as data (see module doc)."""

    def __init__(self, unit: int, function: int, address: int, count: int, now_s: float,
                 timeout_s: float, silence_s: float) -> None:
        if not UNIT_MIN <= unit <= UNIT_MAX:
            raise LocalProtocolError("unit %d outside 1..247" % unit)
        self.unit = unit
        self.function = function
        self.count = count
        self.request = encode_rtu(unit, encode_read_request(function, address, count))
        self.registers: list[int] | None = None
        self.error: RemoteProtocolError | None = None
        self._decoder = RtuDecoder("response")
        self._deadline_s = now_s + timeout_s
        self._silence_s = silence_s
        self._last_byte_s: float | None = None

    def done(self) -> bool:
        return self.registers is not None or self.error is not None

    def next_deadline(self) -> float:
        if self._last_byte_s is not None and self._decoder.buffered():
            return min(self._deadline_s, self._last_byte_s + self._silence_s)
        return self._deadline_s

    def receive(self, data: bytes, now_s: float) -> None:
        if self.done() or not data:
            return
        self._last_byte_s = now_s
        self._decoder.feed(data)
        while not self.done():
            try:
                frame = self._decoder.next_frame()
            except FrameError as error:
                self.error = error
                return
            if frame is None:
                return
            self._answer(frame[0], frame[1])

    def _answer(self, unit: int, pdu: bytes) -> None:
        if unit != self.unit:
            return  # somebody else's late answer
        try:
            self.registers = decode_read_response(self.function, self.count, pdu)
        except FrameError as error:
            self.error = error

    def handle_timeout(self, now_s: float) -> None:
        if self.done():
            return
        silent = self._last_byte_s is not None and now_s >= self._last_byte_s + self._silence_s
        if silent and self._decoder.buffered():
            try:
                self._decoder.end_of_frame()
            except FrameError as error:
                self.error = error
                return
        if now_s >= self._deadline_s:
            self.error = ResponseTimeoutError("unit %d: no answer" % self.unit)


# -- TCP (MBAP) ------------------------------------------------------------------------


def encode_mbap(transaction_id: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header + unit id + PDU (Messaging on TCP/IP §3.1.3)."""
    if not 0 <= transaction_id <= 0xFFFF or not 1 <= len(pdu) <= MAX_PDU_BYTES:
        raise LocalProtocolError("bad MBAP frame")
    return struct.pack(">HHHB", transaction_id, 0, len(pdu) + 1, unit & 0xFF) + pdu


class MbapDecoder:
    """Turns a TCP byte stream into (transaction id, unit, PDU) frames."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += bytes(data)

    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> tuple[int, int, bytes] | None:
        buf = self._buf
        if len(buf) < MBAP_HEADER_BYTES:
            return None
        tid, protocol, length, unit = struct.unpack(">HHHB", buf[:MBAP_HEADER_BYTES])
        if protocol != 0:
            self._buf = b""
            raise MalformedFrameError("MBAP protocol id %d, not 0" % protocol)
        if not 2 <= length <= MAX_PDU_BYTES + 1:
            self._buf = b""
            raise FrameLimitError("MBAP length %d (2..254)" % length)
        end = 6 + length
        if len(buf) < end:
            return None
        self._buf = buf[end:]
        return tid, unit, bytes(buf[MBAP_HEADER_BYTES:end])


# -- register values -------------------------------------------------------------------


def _check_orders(dtype: str, word_order: str, byte_order: str) -> tuple[str, int]:
    if dtype not in DATA_TYPES or word_order not in ORDERS or byte_order not in ORDERS:
        raise LocalProtocolError("bad type/order %s %s %s" % (dtype, word_order, byte_order))
    return DATA_TYPES[dtype]


def registers_for(dtype: str) -> int:
    return _check_orders(dtype, "big", "big")[1]


def encode_value(value: float, dtype: str, word_order: str, byte_order: str) -> list[int]:
    """Registers holding `value` as `dtype` in the given word and byte order."""
    fmt, n = _check_orders(dtype, word_order, byte_order)
    raw = struct.pack(fmt, value if fmt[1] in "fd" else int(value))
    words = [raw[i] << 8 | raw[i + 1] for i in range(0, 2 * n, 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [(w & 0xFF) << 8 | w >> 8 for w in words]
    return words


def decode_value(registers: list[int], dtype: str, word_order: str, byte_order: str) -> float:
    """The `dtype` value in `registers` (exactly as many as the type needs)."""
    fmt, n = _check_orders(dtype, word_order, byte_order)
    if len(registers) != n:
        raise LocalProtocolError("%s needs %d registers, got %d" % (dtype, n, len(registers)))
    words = list(registers)
    if byte_order == "little":
        words = [(w & 0xFF) << 8 | (w >> 8) & 0xFF for w in words]
    if word_order == "little":
        words.reverse()
    raw = bytearray()
    for w in words:
        raw.extend(struct.pack(">H", w & 0xFFFF))
    value: float = struct.unpack(fmt, bytes(raw))[0]
    return value
