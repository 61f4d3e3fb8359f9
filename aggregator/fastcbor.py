"""Deterministic CBOR at C speed for the node's hot path, byte-identical to the portable codec.

Theory of operation
-------------------
`edge.portable.cbor` is the reference: pure Python so that it runs on MicroPython too, and
strict.  The node encodes and decodes the same few shapes thousands of times a second
(readings-log leaves, device records, tx results, receipts, the tx envelope), so on
CPython it uses cbor2's C encoder for them.  cbor2's `canonical=True` differs from
RFC 8949 §4.2.1 in one respect: it sorts map keys length-first (the RFC 7049 rule) where
RFC 8949 sorts them bytewise.  The two orders agree whenever the keys of each map are all
of one kind — all unsigned integers, all negative integers, all text or all byte
strings — because the first byte of those encodings grows with their length.  So:

    encode(obj)      for objects whose maps are keyed by one kind each (every shape the
                     node's hot path builds); `tests/ledger/test_fastcbor.py` checks the
                     equality against the portable encoder on generated objects.
    decode_pair(raw) the tx envelope [kind, body]: read straight off the bytes when they
                     are [small uint, bstr] in their one canonical encoding (what
                     `tx.encode` makes: 0x82, the kind, the shortest bstr head, the
                     body); else cbor2 reads it, and it counts only if re-encoding gives
                     `raw` back byte for byte; anything else goes to the portable
                     decoder, which returns the same value or raises its coded error.
    sign1(...)       a COSE_Sign1 without a kcwt, the bytes `edge.portable.cose.sign1`
                     would make (receipts: one per device per block).
    receipt_payload(...), pair(kind, body), leaf(device, seq, meter, hash),
    device_record(device)
                     a receipt's payload, the tx envelope, a readings-log leaf and a
                     device record (`app.Device.to_obj`, rewritten for every batch).
    These four and sign1 are built byte by byte from heads and strings (`_head`):
    fixed shapes, where cbor2's generic encoder spends most of its time deciding what
    it was given.

Nothing here is needed for correctness: replacing each call by its portable twin gives the
same bytes, only slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cbor2

from edge.portable import cbor, cose, p256, receipt
from edge.portable.errors import LocalProtocolError

if TYPE_CHECKING:
    from .app import Device


def encode(obj: object) -> bytes:
    """The deterministic encoding of `obj`, whose maps each have keys of one kind."""
    return cbor2.dumps(obj, canonical=True)


_ARRAY_OF_TWO = b"\x82"
_UINT_INLINE_MAX = 23
_BYTES_HEAD_SIZES = (3, 2, 1, 5)  # length in 2, 1, 0 or 4 bytes; a batch takes 2


def _canonical_pair(raw: bytes) -> list[object] | None:
    """[uint 0..23, bstr] read off the bytes if `raw` is its canonical encoding, else None:
    the body is what follows the one head `_head` would write for its length."""
    if len(raw) < 3 or raw[:1] != _ARRAY_OF_TWO or raw[1] > _UINT_INLINE_MAX:
        return None
    for head_size in _BYTES_HEAD_SIZES:
        size = len(raw) - 2 - head_size
        if size >= 0 and raw[2:2 + head_size] == _head(2, size):
            return [raw[1], raw[2 + head_size:]]
    return None


def decode_pair(raw: bytes, **limits: int) -> object:
    """Decode a two-item array [unsigned int, bytes] fast; any other input exactly as
    `edge.portable.cbor.decode(raw, **limits)` would (value or coded error)."""
    fast = _canonical_pair(raw)
    if fast is not None:
        return fast
    try:
        item = cbor2.loads(raw)
    except Exception:  # cbor2's own errors: let the reference decoder name the fault
        return cbor.decode(raw, **limits)
    if (type(item) is list and len(item) == 2 and type(item[0]) is int and item[0] >= 0
            and type(item[1]) is bytes and cbor2.dumps(item) == raw):
        return item
    return cbor.decode(raw, **limits)


# The heads of values below 256 for the major types the node writes (uint, negative
# int, byte string, text, array), looked up instead of built: most heads are these.
_SMALL_HEADS = tuple(
    tuple(bytes((major << 5 | value,)) if value < 24 else bytes((major << 5 | 24, value))
          for value in range(256))
    for major in range(5)
)


def _head(major: int, value: int) -> bytes:
    """The shortest head of major type `major` carrying `value` (0 <= value < 2**64)."""
    if value < 256 and major < 5:
        return _SMALL_HEADS[major][value]
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes((major << 5 | extra,)) + value.to_bytes(width, "big")
    raise LocalProtocolError("CBOR argument above 2**64 - 1")


def _int(value: int) -> bytes:
    """An integer: major type 0 for value >= 0, 1 (carrying -1 - value) below."""
    return _head(0, value) if value >= 0 else _head(1, -1 - value)


def _bytes(data: bytes) -> bytes:
    return _head(2, len(data)) + data


def _text(text: str) -> bytes:
    data = text.encode("utf-8")
    return _head(3, len(data)) + data


def pair(kind: int, body: bytes) -> bytes:
    """encode([kind, body]) for an unsigned `kind`: the tx envelope."""
    return _ARRAY_OF_TWO + _head(0, kind) + _bytes(body)


def leaf(device_id: str, seq: int, meter_id: str, batch_hash: bytes) -> bytes:
    """encode([device_id, seq, meter_id, batch_hash]): a readings-log leaf."""
    return b"\x84" + _text(device_id) + _int(seq) + _text(meter_id) + _bytes(batch_hash)


_SIGNATURE1 = _text(cose.SIG_CONTEXT)
_TAGGED_SIGN1 = b"\xd2\x84"  # tag 18, array of 4
_EMPTY_MAP = b"\xa0"
_EMPTY_BYTES = b"\x40"


def sign1(payload: bytes, kid: bytes, sign: Callable[[bytes], bytes],
          protected: bytes | None = None) -> bytes:
    """A tagged COSE_Sign1 over `payload` with an empty unprotected header; `protected`
    may be passed in when the caller keeps it (it depends only on `kid`)."""
    cose.check_sign1_sizes(kid, payload)
    if protected is None:
        protected = cose.protected_header(kid)
    body, content = _bytes(protected), _bytes(payload)
    signature = sign(b"\x84" + _SIGNATURE1 + body + _EMPTY_BYTES + content)
    if len(signature) != p256.SIGNATURE_BYTES:
        raise LocalProtocolError("ES256 signature must be 64 bytes")
    return _TAGGED_SIGN1 + body + _EMPTY_MAP + content + _bytes(signature)


def receipt_payload(device_id: str, entries: list[receipt.Entry]) -> bytes:
    """`edge.portable.receipt.encode_payload`, at C speed."""
    if not 0 < len(entries) <= receipt.MAX_ENTRIES:
        raise receipt.ReceiptError("a receipt holds 1.." + str(receipt.MAX_ENTRIES) + " entries")
    return b"".join([
        b"\xa2", _head(0, receipt.R_DEVICE), _text(device_id),
        _head(0, receipt.R_ENTRIES), _head(4, len(entries)),
        *(b"\x83" + _int(e.seq) + _text(e.status) + _int(e.height) for e in entries),
    ])


_TRUE, _FALSE = b"\xf5", b"\xf4"


def _number(value: int | float) -> bytes:
    return _int(value) if type(value) is int else cbor.encode_float(value)


def device_record(device: Device) -> bytes:
    """encode(device.to_obj()): the record's 12 items, and its open mask as a 13th.
    A record with a value of any other type (a register that is not an int or a float,
    `revoked` not a bool) goes to the generic encoder."""
    plain = type(device.revoked) is bool and all(
        type(v) is int or type(v) is float for _, _, v in device.registers)
    if not plain:
        return encode(device.to_obj())
    mask = device.open_mask
    return b"".join([
        b"\x8c" if mask is None else b"\x8d",
        _text(device.device_id), _bytes(device.certificate),
        _head(4, len(device.meters)), *map(_text, device.meters),
        _head(4, len(device.profiles)),
        *(b"\x82" + _text(meter) + _text(name) for meter, name in device.profiles),
        _TRUE if device.revoked else _FALSE,
        _int(device.registry_time_s), _int(device.last_seq), _bytes(device.last_batch_hash),
        _int(device.last_height),
        _head(4, len(device.registers)),
        *(b"\x83" + _text(m) + _text(o) + _number(v) for m, o, v in device.registers),
        _int(device.batches),
        _head(4, len(device.violations)),
        *(b"\x82" + _text(code) + _int(n) for code, n in device.violations),
        b"" if mask is None else _int(mask),
    ])
