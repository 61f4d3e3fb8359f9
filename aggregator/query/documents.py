"""Class III documents: a content-addressed store on disk and signed records for the chain.

Theory of operation
-------------------
Calibration and verification certificates of meters and laboratory accreditations are
too large for the chain.  The file goes into `DocumentStore`, named by its SHA-256 digest
(ROOT/sha256/ab/abcd...); what goes on chain is a *document record*, a COSE_Sign1
(RFC 9052, ES256, kid = signer id) by an operator's or laboratory's key over the
deterministic CBOR map

    {1: digest (32 bytes, SHA-256 of the file),
     2: kind ("calibration" | "verification" | "accreditation"),
     3: meter serial (text; "" for an accreditation, which concerns the laboratory),
     4: valid_from_s, 5: valid_until_s (Unix seconds, from < until)}

Anyone holding the file, the record and the signer's public key can check the file
(`check_document`); the store re-checks every file on read, so a corrupted disk shows up
as DocumentIntegrityError instead of serving wrong bytes.  Writes are atomic (temporary
file in the store, fsync, rename, fsync of the directory), so a crash leaves either no
file or the whole file, never a truncated one under a valid name.  `put_stream` takes an
upload in chunks, hashing while writing, so a 16 MiB upload is never held in memory.

`verification_expired(record, now_s)` says whether one verification certificate is past
valid_until; `verification_lapsed(records, meter, now_s)` applies it to all records of a
meter, so a renewed certificate supersedes the expired one.  The chain's own rule over
the on-chain records is `aggregator.rules.check_verification`, with the same meaning.
The SHA-256 digest replaces the MD5 of the platform paper, which is no longer collision
resistant.

Limits (with reasons)
---------------------
    DOCUMENT_BYTES_MAX   16 MiB    a scanned certificate; bounds a request body and memory
    RECORD_BYTES_MAX     1 KiB     a record is five fields and a signature
    SIGNER_ID            1..64 of [A-Za-z0-9._:-]   as device and node ids
    TIME_S_MAX           2^40 - 1  as the ledger's time fields
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge import crypto
from edge.portable import cbor, cose
from edge.portable.errors import CoseError, DecodeError
from gridledger.files import fsync_dir

from .errors import (
    DocumentIntegrityError,
    DocumentLimitError,
    DocumentMismatchError,
    DocumentNotFoundError,
    DocumentRecordError,
)

DOCUMENT_BYTES_MAX = 16 * 1024 * 1024
RECORD_BYTES_MAX = 1024
TIME_S_MAX = (1 << 40) - 1
KINDS = ("calibration", "verification", "accreditation")
DIGEST_HEX = re.compile(r"[0-9a-f]{64}")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
CHUNK_BYTES = 1 << 20

SignFn = Callable[[bytes], bytes]


# -- the content-addressed store -----------------------------------------------------------


class DocumentStore:
    """Files named by their SHA-256; verified again on every read."""

    def __init__(self, root: Path, max_bytes: int = DOCUMENT_BYTES_MAX) -> None:
        self.root = root / "sha256"
        self.max_bytes = max_bytes

    def path(self, digest_hex: str) -> Path:
        if DIGEST_HEX.fullmatch(digest_hex) is None:
            raise DocumentNotFoundError("a document is named by 64 lowercase hex digits")
        return self.root / digest_hex[:2] / digest_hex

    def put(self, data: bytes) -> str:
        """Store `data`; return its digest (hex).  Storing the same bytes twice is a no-op."""
        return self.put_stream([data])

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        """Store an upload read in chunks, never holding it whole; return its digest (hex).

        The bytes go to a temporary file in the store while being hashed; past
        `max_bytes` the upload is abandoned (DocumentLimitError) and the file removed.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        tmp = Path(tmp_name)
        try:
            digest_hex = self._write(fd, chunks)
            target = self.path(digest_hex)
            if self._intact(target, digest_hex):
                tmp.unlink()
                return digest_hex
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)  # same file system: atomic
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        return digest_hex

    def _write(self, fd: int, chunks: Iterable[bytes]) -> str:
        hasher, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise DocumentLimitError(f"document over {self.max_bytes} bytes")
                hasher.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        return hasher.hexdigest()

    @staticmethod
    def _intact(path: Path, digest_hex: str) -> bool:
        try:
            with path.open("rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest() == digest_hex
        except FileNotFoundError:
            return False

    def get(self, digest_hex: str) -> bytes:
        """The document's bytes, after checking they still hash to its name."""
        path = self.path(digest_hex)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DocumentNotFoundError(f"no document {digest_hex}") from None
        if hashlib.sha256(data).hexdigest() != digest_hex:
            raise DocumentIntegrityError(f"stored document {digest_hex} is corrupt")
        return data

    def __contains__(self, digest_hex: str) -> bool:
        return DIGEST_HEX.fullmatch(digest_hex) is not None and self.path(digest_hex).exists()




# -- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentRecord:
    digest: bytes
    kind: str
    meter: str
    valid_from_s: int
    valid_until_s: int

    def validate(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise DocumentRecordError("digest must be 32 bytes (SHA-256)")
        if self.kind not in KINDS:
            raise DocumentRecordError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        needs_meter = self.kind != "accreditation"
        if not isinstance(self.meter, str) or (
            needs_meter and ID_PATTERN.fullmatch(self.meter) is None
        ) or (not needs_meter and self.meter != ""):
            raise DocumentRecordError("a calibration or verification names one meter serial; "
                                      "an accreditation none")
        times = (self.valid_from_s, self.valid_until_s)
        if not all(_is_time(t) for t in times) or self.valid_from_s >= self.valid_until_s:
            raise DocumentRecordError("valid_from_s < valid_until_s, both in 0..2^40-1")

    def payload(self) -> bytes:
        self.validate()
        return cbor.encode({1: self.digest, 2: self.kind, 3: self.meter,
                            4: self.valid_from_s, 5: self.valid_until_s})


def _is_time(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= TIME_S_MAX


def record_for(data: bytes, kind: str, meter: str, valid_from_s: int,
               valid_until_s: int) -> DocumentRecord:
    record = DocumentRecord(hashlib.sha256(data).digest(), kind, meter, valid_from_s,
                            valid_until_s)
    record.validate()
    return record


def sign_record(record: DocumentRecord, signer_id: str, sign: SignFn) -> bytes:
    """The COSE_Sign1 a document transaction (`aggregator.tx`, kind 4) carries; the
    chain accepts it when `signer_id` is a validator of the genesis."""
    if ID_PATTERN.fullmatch(signer_id) is None:
        raise DocumentRecordError(f"signer id {signer_id!r}: 1..64 of [A-Za-z0-9._:-]")
    return cose.sign1(record.payload(), signer_id.encode(), sign)


@dataclass(frozen=True)
class SignedRecord:
    signer_id: str
    record: DocumentRecord
    message: cose.Sign1


def parse_record(data: bytes) -> SignedRecord:
    """Structure only; the signature is checked by `verify_record`."""
    if len(data) > RECORD_BYTES_MAX:
        raise DocumentRecordError(f"record over {RECORD_BYTES_MAX} bytes")
    try:
        message = cose.parse(data)
        item = cbor.decode(message.payload, max_depth=1, max_items=5)
    except (CoseError, DecodeError) as exc:
        raise DocumentRecordError(f"record: {exc}") from None
    if not isinstance(item, dict) or set(item) != {1, 2, 3, 4, 5}:
        raise DocumentRecordError("record payload must be a map with keys 1..5")
    record = DocumentRecord(*(item[k] for k in range(1, 6)))  # types checked by validate
    record.validate()
    signer = message.kid.decode("utf-8", "replace")
    if ID_PATTERN.fullmatch(signer) is None:
        raise DocumentRecordError("signer id is not a valid id")
    return SignedRecord(signer, record, message)


def verify_record(data: bytes, signers: Mapping[str, bytes]) -> SignedRecord:
    """Parse and check the signature against the signer's key (signer id -> public key)."""
    signed = parse_record(data)
    public_key = signers.get(signed.signer_id)
    if public_key is None:
        raise DocumentRecordError(f"signer {signed.signer_id!r} is not a known signer")
    try:
        cose.verify(signed.message, public_key, crypto.verify)
    except CoseError:
        raise DocumentRecordError(f"record signature by {signed.signer_id!r} invalid") from None
    return signed


def check_document(data: bytes, record: DocumentRecord) -> None:
    """Raise DocumentMismatchError unless `data` is the file the record names."""
    if hashlib.sha256(data).digest() != record.digest:
        raise DocumentMismatchError("file does not match the digest on chain")


def verification_lapsed(records: Iterable[DocumentRecord], meter: str, now_s: int) -> bool:
    """Should a reading of `meter` at `now_s` be flagged for lack of a valid verification?

    True when the meter has verification records and none is in force at `now_s`: a
    renewed certificate supersedes an expired one.  A meter with no verification record
    at all is not flagged here; the chain cannot tell "never verified" from "not yet
    uploaded", and flagging every meter of a new deployment would say nothing.
    """
    mine = [r for r in records if r.kind == "verification" and r.meter == meter]
    return bool(mine) and not any(r.valid_from_s <= now_s and not verification_expired(r, now_s)
                                  for r in mine)


def verification_expired(record: DocumentRecord, now_s: int) -> bool:
    """Is this meter verification certificate past its validity at `now_s`?

    Only verification certificates decide whether readings are flagged; a calibration or
    accreditation record never makes this true.
    """
    return record.kind == "verification" and now_s >= record.valid_until_s
