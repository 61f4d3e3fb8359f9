"""A small CoAP client codec (RFC 7252), sans-I/O, for devices without aiocoap.

Theory of operation
-------------------
`encode_request` builds a confirmable request: header (version 1, type CON, token
length, code, message id), options in ascending number with delta/length nibbles
(§3.1), then 0xFF and the payload.  `decode` parses any message into a `Message`.

`Exchange` is one confirmable request as a client performs it (§4.2, §4.8), timers as
data: the shell sends `datagram`, passes what arrives to `receive(data, now_s)`, and
calls `handle_timeout(now_s)` at `next_deadline()`; it resends the datagram while
`resend` says so.  The first timeout is ACK_TIMEOUT_S x a random factor in [1, 1.5)
(drawn from the injected `rand`), doubling for MAX_RETRANSMIT resends; then the
exchange fails with `CoapTimeoutError`.  A piggybacked ACK ends it; an empty ACK means
a separate response will follow (the shell must ACK that CON response, `ack_for`).

Limits: tokens of 4 bytes; options we emit are Uri-Path (11) and Content-Format (12);
a message of at most 1152 bytes (§4.6: 1024 payload + headroom), so no block-wise
transfer: a bigger batch must not be sent this way.

Portable: runs on MicroPython.
"""

from .errors import LocalProtocolError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

CON = 0
NON = 1
ACK = 2
RST = 3
POST = 2
GET = 1
OPT_URI_PATH = 11
OPT_CONTENT_FORMAT = 12
OPT_MAX_AGE = 14
ACK_TIMEOUT_S = 2.0
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
MAX_MESSAGE_BYTES = 1152


class CoapError(RemoteProtocolError):
    code = "coap.invalid"


class CoapTimeoutError(CoapError):
    code = "coap.timeout"


class CoapResetError(CoapError):
    code = "coap.reset"


class Message:
    def __init__(self, mtype: int, code: int, mid: int, token: bytes,
                 options: "list[tuple[int, bytes]]", payload: bytes) -> None:
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = options
        self.payload = payload

    @property
    def code_text(self) -> str:
        return str(self.code >> 5) + "." + "%02d" % (self.code & 31)

    def option(self, number: int) -> "bytes | None":
        for n, value in self.options:
            if n == number:
                return value
        return None


def _nibble(value: int) -> "tuple[int, bytes]":
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, (value - 269).to_bytes(2, "big")


def encode(message: Message) -> bytes:
    out = bytearray([0x40 | message.mtype << 4 | len(message.token), message.code])
    out += message.mid.to_bytes(2, "big") + message.token
    last = 0
    for number, value in message.options:  # no sort: MicroPython's is not stable
        if number < last:
            raise LocalProtocolError("CoAP options must come in ascending order")
        delta, delta_ext = _nibble(number - last)
        length, length_ext = _nibble(len(value))
        out += bytes([delta << 4 | length]) + delta_ext + length_ext + value
        last = number
    if message.payload:
        out += b"\xff" + message.payload
    if len(out) > MAX_MESSAGE_BYTES:
        raise LocalProtocolError("CoAP message over " + str(MAX_MESSAGE_BYTES) + " bytes")
    return bytes(out)


def encode_request(code: int, path: str, mid: int, token: bytes, payload: bytes = b"",
                   content_format: int = -1) -> bytes:
    options = [(OPT_URI_PATH, part.encode()) for part in path.strip("/").split("/")]
    if content_format >= 0:
        cf = content_format.to_bytes(2, "big").lstrip(b"\x00")
        options.append((OPT_CONTENT_FORMAT, cf))
    return encode(Message(CON, code, mid, token, options, payload))


def _extended(nibble: int, data: bytes, at: int) -> "tuple[int, int]":
    if nibble < 13:
        return nibble, at
    if nibble == 13 and at < len(data):
        return data[at] + 13, at + 1
    if nibble == 14 and at + 1 < len(data):
        return int.from_bytes(data[at:at + 2], "big") + 269, at + 2
    raise CoapError("bad option nibble")


def decode(data: bytes) -> Message:
    if len(data) < 4 or data[0] >> 6 != 1:
        raise CoapError("not a CoAP version 1 message")
    tkl = data[0] & 15
    if tkl > 8 or len(data) < 4 + tkl:
        raise CoapError("bad token length")
    at, number = 4 + tkl, 0
    options: list[tuple[int, bytes]] = []
    while at < len(data) and data[at] != 0xFF:
        head = data[at]
        delta, at = _extended(head >> 4, data, at + 1)
        length, at = _extended(head & 15, data, at)
        number += delta
        if at + length > len(data):
            raise CoapError("option runs past the end")
        options.append((number, bytes(data[at:at + length])))
        at += length
    payload = bytes(data[at + 1:]) if at < len(data) else b""
    return Message((data[0] >> 4) & 3, data[1], int.from_bytes(data[2:4], "big"),
                   bytes(data[4:4 + tkl]), options, payload)


def ack_for(message: Message) -> bytes:
    """The empty ACK a client owes a confirmable (separate) response."""
    return encode(Message(ACK, 0, message.mid, b"", [], b""))


class Exchange:
    """One confirmable request and its response, with retransmission (module doc)."""

    def __init__(self, datagram: bytes, now_s: float, rand: "Callable[[], float]") -> None:
        request = decode(datagram)
        self.datagram = datagram
        self.mid = request.mid
        self.token = request.token
        self.response: "Message | None" = None
        self.error: "CoapError | None" = None
        self.acked = False
        self.resends = 0
        self._timeout_s = ACK_TIMEOUT_S * (1 + (ACK_RANDOM_FACTOR - 1) * rand())
        self._deadline_s = now_s + self._timeout_s
        self._give_up_s = now_s + self._timeout_s * ((1 << (MAX_RETRANSMIT + 1)) - 1)

    def done(self) -> bool:
        return self.response is not None or self.error is not None

    def next_deadline(self) -> float:
        return self._give_up_s if self.acked else self._deadline_s

    def receive(self, data: bytes) -> "bytes | None":
        """Take a datagram; the empty ACK to send back for a separate response, if any."""
        try:
            message = decode(data)
        except CoapError:
            return None  # not ours to judge: a stray datagram
        if message.mtype == RST and message.mid == self.mid:
            self.error = CoapResetError("the endpoint reset the request")
        elif message.mtype == ACK and message.mid == self.mid:
            self.acked = True
            if message.code != 0 and message.token == self.token:
                self.response = message
        elif message.token == self.token and message.code >> 5 >= 2:
            self.response = message
            return ack_for(message) if message.mtype == CON else None
        return None

    def handle_timeout(self, now_s: float) -> bool:
        """True when the shell must send the datagram again."""
        if self.done():
            return False
        if self.acked:  # waiting for a separate response, up to the exchange lifetime
            if now_s >= self._give_up_s:
                self.error = CoapTimeoutError("no separate response")
            return False
        if now_s < self._deadline_s:
            return False
        if self.resends >= MAX_RETRANSMIT:  # counted, not summed: floats drift
            self.error = CoapTimeoutError("no answer after " + str(MAX_RETRANSMIT) + " resends")
            return False
        self.resends += 1
        self._timeout_s *= 2
        self._deadline_s = now_s + self._timeout_s
        return True
