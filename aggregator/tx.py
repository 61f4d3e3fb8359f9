"""Ledger transactions: signed reading batches and registry statements.

Theory of operation
-------------------
A transaction is the deterministic CBOR array ``[kind, body]`` (RFC 8949 §4.2.1) and its
hash is SHA-256 over exactly those bytes.  The body is always a tagged COSE_Sign1
(RFC 9052 §4.2) kept as the bytes received, because the signature covers those bytes:

    kind 1  batch       the device's message as it came over MQTT or CoAP (DESIGN.md
                        "Wire format v1"); signed by the device key.
    kind 2  enroll      a registrar statement, payload {1: certificate (CWT bytes),
                        2: {meter id: profile name}, 3: time_s}; it registers the device
                        certificate and tells the chain which meter profile
                        (`hardware.profiles`) judges each meter's values.
    kind 3  revoke      a registrar statement, payload {1: device id, 2: time_s,
                        3: reason}; the device's batches are rejected from then on.
    kind 4  document    a class III document record, payload {1: SHA-256 of the file
                        (32 bytes), 2: "calibration" | "verification" | "accreditation",
                        3: meter serial ("" for an accreditation), 4: valid_from_s,
                        5: valid_until_s}; the file itself stays off chain.
    kind 5  customer    a class II digest, payload {1: meter serial, 2: SHA-256(salt ||
                        canonical customer fields) (32 bytes), 3: time_s}; the fields and
                        the salt stay off chain (`aggregator.query.confidential`).

Registry statements are COSE_Sign1 (ES256) made by the registrar key of the genesis file,
kid = the registrar key id (`cwt.key_id`, the same kid its certificates carry).  The
certificate inside an enrollment is a CWT the registrar signed too, and is checked on its
own when the statement is applied (validity against the block time).  A certificate alone
can also enroll a device: a batch whose kcwt carries a valid certificate enrolls it on
first sight, without profiles (DESIGN.md "Device identity").

Document and customer records are COSE_Sign1 (ES256) by a *record signer*: a validator
node key of the genesis file (kid = the node id in UTF-8; a node signs what an operator
uploads through its API) or the registrar key (kid = its key id, offline tooling).
`record_signers` builds that table from the genesis keys.  The payloads of the four
statement kinds are disjoint in shape (key sets and value types differ), so a signed
statement of one kind never opens as another.

This module parses and builds; it checks signatures only of statements.
Whether a transaction applies is the application's business (`aggregator.app`).

Limits
------
    TX_BYTES_MAX          17664   a COSE message at its own limit (cose.MAX_MESSAGE_BYTES)
                                  plus the envelope; a batch is ≤ 1 KiB in practice.
    PROFILES_MAX          64      one per meter a certificate may list (cwt.MAX_METERS).
    REASON_CHARS_MAX      128     a revocation reason is a short note, not a document.
    SERIAL_CHARS_MAX      64      a meter serial, as device ids (`batch.valid_id`).
    DECODED_MAX           16384   envelopes `decode` remembers: two default mempools
                                  (4 × 2000 txs); only those of at most
    DECODED_TX_BYTES_MAX  2048    bytes (a batch is ≤ 1 KiB), so the memo holds at most
                                  ~70 MiB whatever it is sent.

Errors
------
    RemoteProtocolError
    └── TxError                   tx.invalid
        ├── TxFormatError         tx.format       not [kind, bstr], unknown kind
        ├── TxLimitError          tx.limit        over TX_BYTES_MAX
        ├── StatementError        tx.statement    registry statement fields wrong
        ├── RegistrarSignatureError tx.registrar  statement not signed by the registrar
        ├── RecordSignerError     tx.signer       record kid names no record signer
        └── RecordSignatureError  tx.signature    record signature does not verify
    (CBOR and COSE errors of the body keep their own cbor.* and cose.* codes.)
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge.portable import cbor, cose, cwt
from edge.portable.batch import valid_id
from edge.portable.errors import DecodeError, RemoteProtocolError

from . import fastcbor
from .hotpath import computed_once, frozen_init

__all__ = [
    "BATCH",
    "CUSTOMER",
    "DOCUMENT",
    "DOCUMENT_KINDS",
    "ENROLL",
    "KINDS",
    "PROFILES_MAX",
    "REASON_CHARS_MAX",
    "REVOKE",
    "TX_BYTES_MAX",
    "CustomerStatement",
    "DocumentStatement",
    "Enrollment",
    "RecordSignatureError",
    "RecordSignerError",
    "RegistrarSignatureError",
    "Revocation",
    "StatementError",
    "Tx",
    "TxError",
    "TxFormatError",
    "TxLimitError",
    "decode",
    "encode",
    "make_customer",
    "make_document",
    "make_enrollment",
    "make_revocation",
    "open_customer",
    "open_document",
    "open_enrollment",
    "open_revocation",
    "record_signers",
    "tx_hash",
]

BATCH = 1
ENROLL = 2
REVOKE = 3
DOCUMENT = 4
CUSTOMER = 5
KINDS = (BATCH, ENROLL, REVOKE, DOCUMENT, CUSTOMER)
KIND_NAMES = {BATCH: "batch", ENROLL: "enroll", REVOKE: "revoke", DOCUMENT: "document",
              CUSTOMER: "customer"}
STATEMENT_KINDS = (ENROLL, REVOKE, DOCUMENT, CUSTOMER)
DOCUMENT_KINDS = ("calibration", "verification", "accreditation")
REGISTRAR_SIGNER = "registrar"

TX_BYTES_MAX = cose.MAX_MESSAGE_BYTES + 256
DECODED_MAX = 16384
DECODED_TX_BYTES_MAX = 2048
PROFILES_MAX = cwt.MAX_METERS
REASON_CHARS_MAX = 128
SERIAL_CHARS_MAX = 64
DIGEST_BYTES = 32

S_CERTIFICATE = 1
S_PROFILES = 2
S_ENROLL_TIME = 3
S_DEVICE = 1
S_REVOKE_TIME = 2
S_REASON = 3
TIME_S_MAX = (1 << 40) - 1

VerifyFn = Callable[[bytes, bytes, bytes], bool]
SignFn = Callable[[bytes], bytes]


class TxError(RemoteProtocolError):
    code = "tx.invalid"


class TxFormatError(TxError):
    code = "tx.format"


class TxLimitError(TxError):
    code = "tx.limit"


class StatementError(TxError):
    code = "tx.statement"


class RegistrarSignatureError(TxError):
    code = "tx.registrar"


class RecordSignerError(TxError):
    code = "tx.signer"


class RecordSignatureError(TxError):
    code = "tx.signature"


@frozen_init
@dataclass(frozen=True)
class Tx:
    """A decoded transaction: its kind, its body (COSE_Sign1 bytes) and its hash."""

    kind: int
    body: bytes
    raw: bytes
    hash: bytes

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @computed_once
    def body_hash(self) -> bytes:
        """SHA-256 of the body: for a batch, the hash the ledger knows it by.  Kept with
        the decoded tx, which `decode` remembers, so admission and execution share it."""
        return hashlib.sha256(self.body).digest()


@dataclass(frozen=True)
class Enrollment:
    certificate: bytes
    profiles: tuple[tuple[str, str], ...]
    time_s: int


@dataclass(frozen=True)
class Revocation:
    device_id: str
    time_s: int
    reason: str


@dataclass(frozen=True)
class DocumentStatement:
    """A class III record: which file (digest), what it is, for which meter, how long."""

    digest: bytes
    kind: str
    meter: str
    valid_from_s: int
    valid_until_s: int
    signer: str


@dataclass(frozen=True)
class CustomerStatement:
    """A class II record: the salted digest of a meter's customer fields at `time_s`."""

    meter: str
    digest: bytes
    time_s: int
    signer: str


Signers = Mapping[bytes, tuple[str, bytes]]
"""Record signers: COSE kid -> (signer name, ES256 public key)."""


def tx_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def encode(kind: int, body: bytes) -> bytes:
    """The transaction bytes for a body of `kind`."""
    raw = fastcbor.pair(kind, body)
    if len(raw) > TX_BYTES_MAX:
        raise TxLimitError(f"transaction of {len(raw)} bytes > {TX_BYTES_MAX}")
    return raw


def decode(raw: bytes) -> Tx:
    """Envelope of a transaction; the body is checked by whoever applies it.

    Remembered (a pure function of `raw`): a batch is decoded at admission, again when
    a block is proposed and again when it executes, from the same bytes object, whose
    hash Python keeps after the first lookup."""
    if not isinstance(raw, bytes):
        raise TxFormatError("a transaction is bytes")
    if len(raw) > TX_BYTES_MAX:
        raise TxLimitError(f"transaction of {len(raw)} bytes > {TX_BYTES_MAX}")
    if len(raw) > DECODED_TX_BYTES_MAX:
        return _decode(raw)
    found = _remembered.get(raw)
    return found if found is not None else _remember(_decode(raw))


def encode_batch(message: bytes) -> bytes:
    """`encode(BATCH, message)`, remembered as decoded: admission decodes it next, and
    reading back the envelope just built would only find `message` again."""
    raw = encode(BATCH, message)
    if len(raw) <= DECODED_TX_BYTES_MAX:
        _remember(Tx(BATCH, message, raw, tx_hash(raw)))
    return raw


def _decode(raw: bytes) -> Tx:
    item = fastcbor.decode_pair(raw, max_depth=1, max_items=2, max_size_bytes=TX_BYTES_MAX)
    if not isinstance(item, list) or len(item) != 2:
        raise TxFormatError("a transaction is [kind, body]")
    kind, body = item
    if isinstance(kind, bool) or kind not in KINDS or not isinstance(body, bytes):
        raise TxFormatError("transaction kind must be 1..5 and its body bytes")
    return Tx(kind, body, raw, tx_hash(raw))


_remembered: OrderedDict[bytes, Tx] = OrderedDict()


def _remember(decoded: Tx) -> Tx:
    """Keep the newest DECODED_MAX envelopes by their bytes (oldest out first)."""
    _remembered[decoded.raw] = decoded
    while len(_remembered) > DECODED_MAX:
        _remembered.popitem(last=False)
    return decoded


# -- registry statements ----------------------------------------------------------------


def make_enrollment(
    certificate: bytes,
    profiles: Mapping[str, str],
    time_s: int,
    registrar_public_key: bytes,
    sign_fn: SignFn,
) -> bytes:
    payload = cbor.encode(
        {S_CERTIFICATE: certificate, S_PROFILES: dict(profiles), S_ENROLL_TIME: time_s}
    )
    return encode(ENROLL, cose.sign1(payload, cwt.key_id(registrar_public_key), sign_fn))


def make_revocation(
    device_id: str, time_s: int, reason: str, registrar_public_key: bytes, sign_fn: SignFn
) -> bytes:
    payload = cbor.encode({S_DEVICE: device_id, S_REVOKE_TIME: time_s, S_REASON: reason})
    return encode(REVOKE, cose.sign1(payload, cwt.key_id(registrar_public_key), sign_fn))


def _statement(body: bytes, registrar_public_key: bytes, verify_fn: VerifyFn) -> object:
    """The decoded payload of a registry statement the registrar signed."""
    message = cose.parse(body)
    if message.kid != cwt.key_id(registrar_public_key):
        raise RegistrarSignatureError("statement kid is not the registrar key id")
    if not verify_fn(registrar_public_key, message.to_be_signed(), message.signature):
        raise RegistrarSignatureError("registrar signature does not verify")
    try:
        return cbor.decode(message.payload, max_depth=3, max_items=2 * PROFILES_MAX)
    except DecodeError as exc:
        raise StatementError(f"statement payload: {exc}") from None


def _time(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= TIME_S_MAX:
        raise StatementError("statement time must be Unix seconds (40 bits)")
    return value


def open_enrollment(body: bytes, registrar_public_key: bytes, verify_fn: VerifyFn) -> Enrollment:
    obj = _statement(body, registrar_public_key, verify_fn)
    if not isinstance(obj, dict) or set(obj) != {S_CERTIFICATE, S_PROFILES, S_ENROLL_TIME}:
        raise StatementError("enrollment must be {1: certificate, 2: profiles, 3: time}")
    certificate, profiles = obj[S_CERTIFICATE], obj[S_PROFILES]
    if not isinstance(certificate, bytes):
        raise StatementError("enrollment certificate must be bytes")
    return Enrollment(certificate, _profiles(profiles), _time(obj[S_ENROLL_TIME]))


def _profiles(profiles: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(profiles, dict) or len(profiles) > PROFILES_MAX:
        raise StatementError(f"profiles must be a map of at most {PROFILES_MAX} meters")
    pairs = []
    for meter_id, name in profiles.items():
        if not valid_id(meter_id) or not isinstance(name, str) or not valid_id(name):
            raise StatementError("profiles map meter ids to profile names")
        pairs.append((str(meter_id), name))
    return tuple(sorted(pairs))


def open_revocation(body: bytes, registrar_public_key: bytes, verify_fn: VerifyFn) -> Revocation:
    obj = _statement(body, registrar_public_key, verify_fn)
    if not isinstance(obj, dict) or set(obj) != {S_DEVICE, S_REVOKE_TIME, S_REASON}:
        raise StatementError("revocation must be {1: device id, 2: time, 3: reason}")
    device_id, reason = obj[S_DEVICE], obj[S_REASON]
    if not valid_id(device_id) or not isinstance(device_id, str):
        raise StatementError("revocation device id is not a valid id")
    if not isinstance(reason, str) or len(reason) > REASON_CHARS_MAX:
        raise StatementError(f"revocation reason must be text of ≤ {REASON_CHARS_MAX} chars")
    return Revocation(device_id, _time(obj[S_REVOKE_TIME]), reason)


# -- class II and III records -----------------------------------------------------------


def record_signers(registrar_public_key: bytes, node_keys: Mapping[str, bytes]) -> Signers:
    """Who may sign a document or customer record: every validator and the registrar."""
    table = {node_id.encode(): (node_id, key) for node_id, key in node_keys.items()}
    table[cwt.key_id(registrar_public_key)] = (REGISTRAR_SIGNER, registrar_public_key)
    return table


def make_document(
    digest: bytes, kind: str, meter: str, valid_from_s: int, valid_until_s: int,
    kid: bytes, sign_fn: SignFn,
) -> bytes:
    payload = cbor.encode({1: digest, 2: kind, 3: meter, 4: valid_from_s, 5: valid_until_s})
    return encode(DOCUMENT, cose.sign1(payload, kid, sign_fn))


def make_customer(meter: str, digest: bytes, time_s: int, kid: bytes, sign_fn: SignFn) -> bytes:
    payload = cbor.encode({1: meter, 2: digest, 3: time_s})
    return encode(CUSTOMER, cose.sign1(payload, kid, sign_fn))


def _record(body: bytes, signers: Signers, verify_fn: VerifyFn) -> tuple[object, str]:
    """The decoded payload of a record and the name of the signer that signed it."""
    message = cose.parse(body)
    found = signers.get(message.kid)
    if found is None:
        raise RecordSignerError("record kid names no validator and not the registrar")
    name, public_key = found
    if not verify_fn(public_key, message.to_be_signed(), message.signature):
        raise RecordSignatureError(f"record signature of {name} does not verify")
    try:
        return cbor.decode(message.payload, max_depth=1, max_items=5), name
    except DecodeError as exc:
        raise StatementError(f"record payload: {exc}") from None


def open_document(body: bytes, signers: Signers, verify_fn: VerifyFn) -> DocumentStatement:
    obj, signer = _record(body, signers, verify_fn)
    if not isinstance(obj, dict) or set(obj) != {1, 2, 3, 4, 5}:
        raise StatementError("document record must be {1: digest, 2: kind, 3: meter, "
                             "4: valid_from, 5: valid_until}")
    digest, kind, meter = obj[1], obj[2], obj[3]
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise StatementError("document digest must be 32 bytes (SHA-256)")
    if kind not in DOCUMENT_KINDS:
        raise StatementError(f"document kind must be one of {', '.join(DOCUMENT_KINDS)}")
    if not _meter_fits(kind, meter):
        raise StatementError("a calibration or verification names one meter; an "
                             "accreditation none")
    start, until = _time(obj[4]), _time(obj[5])
    if start >= until:
        raise StatementError("document valid_from must be before valid_until")
    return DocumentStatement(digest, kind, meter, start, until, signer)


def _meter_fits(kind: object, meter: object) -> bool:
    if kind == "accreditation":
        return meter == ""
    return isinstance(meter, str) and valid_id(meter) and len(meter) <= SERIAL_CHARS_MAX


def open_customer(body: bytes, signers: Signers, verify_fn: VerifyFn) -> CustomerStatement:
    obj, signer = _record(body, signers, verify_fn)
    if not isinstance(obj, dict) or set(obj) != {1, 2, 3}:
        raise StatementError("customer record must be {1: meter, 2: digest, 3: time}")
    meter, digest = obj[1], obj[2]
    if not isinstance(meter, str) or not valid_id(meter) or len(meter) > SERIAL_CHARS_MAX:
        raise StatementError("customer record meter is not a valid serial")
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise StatementError("customer digest must be 32 bytes (SHA-256)")
    return CustomerStatement(meter, digest, _time(obj[3]), signer)
