"""Receipts: a node's signed word on what happened to a device's batches.

Theory of operation
-------------------
A receipt is a COSE_Sign1 (ES256) made with a validator's node key (kid = node id as
UTF-8); its payload is the deterministic CBOR map of DESIGN.md

    {1: device id, 2: [[seq, status, height], ...]}

where status is "committed" (height = the block that holds the batch) or
"rejected:<code>" (height = 0, code = the stable error code, e.g. "rejected:rule.replay").
A device deletes a queued batch only on a receipt for its seq that verifies under a
node key it was provisioned with (from the genesis file); a "rejected" receipt also
ends the batch's life, since sending it again cannot change the verdict.

Limits: 64 entries per receipt (a device has at most that many batches in flight),
status text of at most 48 characters.

Portable: runs on MicroPython (the ESP32 verifies receipts itself).
"""

from . import batch as batch_mod
from . import cbor, cose
from .errors import MalformedCoseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

COMMITTED = "committed"
REJECTED_PREFIX = "rejected:"
MAX_ENTRIES = 64
MAX_STATUS_CHARS = 48
R_DEVICE = 1
R_ENTRIES = 2


class ReceiptError(MalformedCoseError):
    code = "receipt.invalid"


class UnknownNodeError(ReceiptError):
    code = "receipt.node"


class Entry:
    """The fate of one batch: committed at a height, or rejected with a code."""

    def __init__(self, seq: int, status: str, height: int = 0) -> None:
        self.seq = seq
        self.status = status
        self.height = height

    @property
    def committed(self) -> bool:
        return self.status == COMMITTED

    @property
    def reject_code(self) -> str:
        return self.status[len(REJECTED_PREFIX):] if self.status.startswith(REJECTED_PREFIX) else ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return False
        return (self.seq, self.status, self.height) == (other.seq, other.status, other.height)

    def __repr__(self) -> str:
        return "Entry(" + str(self.seq) + ", " + repr(self.status) + ", " + str(self.height) + ")"


def committed(seq: int, height: int) -> Entry:
    return Entry(seq, COMMITTED, height)


def rejected(seq: int, code: str) -> Entry:
    return Entry(seq, REJECTED_PREFIX + code, 0)


def encode_payload(device_id: str, entries: list[Entry]) -> bytes:
    if not 0 < len(entries) <= MAX_ENTRIES:
        raise ReceiptError("a receipt holds 1.." + str(MAX_ENTRIES) + " entries")
    rows = [[e.seq, e.status, e.height] for e in entries]
    return cbor.encode({R_DEVICE: device_id, R_ENTRIES: rows})


def sign(
    node_id: str, device_id: str, entries: list[Entry], sign_fn: "Callable[[bytes], bytes]"
) -> bytes:
    return cose.sign1(encode_payload(device_id, entries), node_id.encode(), sign_fn)


def _entry(row: object) -> Entry:
    if not isinstance(row, list) or len(row) != 3:
        raise ReceiptError("receipt entry must be [seq, status, height]")
    seq, status, height = row
    for number in (seq, height):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ReceiptError("seq and height must be unsigned integers")
    if not isinstance(status, str) or not 0 < len(status) <= MAX_STATUS_CHARS:
        raise ReceiptError("status must be short text")
    if status != COMMITTED and not status.startswith(REJECTED_PREFIX):
        raise ReceiptError("status must be committed or rejected:<code>")
    return Entry(seq, status, height)


def parse_payload(payload: bytes) -> "tuple[str, list[Entry]]":
    obj = cbor.decode(payload, max_depth=4)
    if not isinstance(obj, dict) or set(obj.keys()) != {R_DEVICE, R_ENTRIES}:
        raise ReceiptError("receipt must be {1: device, 2: entries}")
    device_id = obj[R_DEVICE]
    rows = obj[R_ENTRIES]
    if not batch_mod.valid_id(device_id) or not isinstance(device_id, str):
        raise ReceiptError("receipt device id is not valid")
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_ENTRIES:
        raise ReceiptError("receipt holds 1.." + str(MAX_ENTRIES) + " entries")
    return device_id, [_entry(row) for row in rows]


def verify(
    data: bytes,
    node_keys: dict[str, bytes],
    verify_fn: "Callable[[bytes, bytes, bytes], bool]",
) -> "tuple[str, str, list[Entry]]":
    """(node id, device id, entries) of a receipt signed by one of `node_keys`."""
    message = cose.parse(data)
    try:
        node_id = message.kid.decode()
    except UnicodeError:
        raise UnknownNodeError("receipt kid is not a node id") from None
    key = node_keys.get(node_id)
    if key is None:
        raise UnknownNodeError("receipt from node " + repr(node_id) + " not in genesis")
    cose.verify(message, key, verify_fn)
    device_id, entries = parse_payload(message.payload)
    return node_id, device_id, entries
