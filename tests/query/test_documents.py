"""Class III: content-addressed store integrity, signed records, the expiry rule."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.query import documents as docs
from aggregator.query.documents import DocumentRecord, DocumentStore
from aggregator.query.errors import (
    DocumentIntegrityError,
    DocumentLimitError,
    DocumentMismatchError,
    DocumentNotFoundError,
    DocumentRecordError,
)
from edge.crypto import SigningKey
from edge.portable import cbor, cose
from tests.query.conftest import NOW_S

YEAR_S = 365 * 86400


@pytest.fixture
def store(tmp_path: Path) -> DocumentStore:
    return DocumentStore(tmp_path, max_bytes=4096)


@pytest.fixture
def lab(rng: random.Random) -> SigningKey:
    return SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\4"))


@pytest.fixture
def pdf(rng: random.Random) -> bytes:
    return b"%PDF-1.7 verification certificate " + rng.randbytes(1000)


def test_put_get_round_trip_and_layout(store: DocumentStore, pdf: bytes) -> None:
    digest_hex = store.put(pdf)
    assert digest_hex == hashlib.sha256(pdf).hexdigest()
    assert store.path(digest_hex) == store.root / digest_hex[:2] / digest_hex
    assert store.get(digest_hex) == pdf
    assert digest_hex in store and "0" * 64 not in store and "../x" not in store
    assert store.put(pdf) == digest_hex  # idempotent
    assert not list(store.root.rglob(".tmp-*"))


def test_flipped_byte_detected_on_read(store: DocumentStore, pdf: bytes,
                                       rng: random.Random) -> None:
    digest_hex = store.put(pdf)
    path = store.path(digest_hex)
    for _ in range(10):
        corrupt = bytearray(pdf)
        corrupt[rng.randrange(len(pdf))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(corrupt))
        with pytest.raises(DocumentIntegrityError):
            store.get(digest_hex)
    path.write_bytes(pdf[:-1])  # truncated
    with pytest.raises(DocumentIntegrityError):
        store.get(digest_hex)
    assert store.put(pdf) == digest_hex  # uploading it again repairs the copy
    assert store.get(digest_hex) == pdf


def test_size_limit_and_bad_names(store: DocumentStore) -> None:
    with pytest.raises(DocumentLimitError):
        store.put(bytes(4097))
    store.put(bytes(4096))
    for name in ("../../etc/passwd", "A" * 64, "ab", "0" * 63 + "g"):
        with pytest.raises(DocumentNotFoundError):
            store.get(name)
    with pytest.raises(DocumentNotFoundError):
        store.get("0" * 64)


def test_put_stream_in_chunks(store: DocumentStore, pdf: bytes) -> None:
    chunks = [pdf[i:i + 100] for i in range(0, len(pdf), 100)]
    digest_hex = store.put_stream(iter(chunks))
    assert digest_hex == hashlib.sha256(pdf).hexdigest() and store.get(digest_hex) == pdf
    assert store.put_stream(iter(chunks)) == digest_hex
    with pytest.raises(DocumentLimitError):
        store.put_stream(iter([bytes(4000), bytes(97)]))
    assert not list(store.root.rglob(".tmp-*"))


def test_failed_upload_leaves_nothing(store: DocumentStore) -> None:
    def broken() -> Iterator[bytes]:
        yield b"first part"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(broken())
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_default_limit_is_16_mib(tmp_path: Path) -> None:
    assert DocumentStore(tmp_path).max_bytes == 16 * 1024 * 1024


def test_signed_record_round_trip_and_check(lab: SigningKey, pdf: bytes) -> None:
    record = docs.record_for(pdf, "verification", "SDM630-17", NOW_S, NOW_S + 8 * YEAR_S)
    signed_bytes = docs.sign_record(record, "lab-ptb", lab.sign)
    signed = docs.verify_record(signed_bytes, {"lab-ptb": lab.public_key()})
    assert signed.record == record and signed.signer_id == "lab-ptb"
    docs.check_document(pdf, signed.record)
    with pytest.raises(DocumentMismatchError):
        docs.check_document(pdf + b" ", signed.record)
    payload = cbor.decode(cose.parse(signed_bytes).payload)
    assert payload == {1: record.digest, 2: "verification", 3: "SDM630-17",
                       4: NOW_S, 5: NOW_S + 8 * YEAR_S}


def test_record_signature_checks(lab: SigningKey, pdf: bytes, rng: random.Random) -> None:
    record = docs.record_for(pdf, "calibration", "SDM630-17", NOW_S, NOW_S + YEAR_S)
    signed_bytes = docs.sign_record(record, "lab-ptb", lab.sign)
    other = SigningKey.from_bytes(rng.randbytes(31).rjust(32, b"\5"))
    with pytest.raises(DocumentRecordError):
        docs.verify_record(signed_bytes, {"lab-ptb": other.public_key()})
    with pytest.raises(DocumentRecordError):
        docs.verify_record(signed_bytes, {"someone-else": lab.public_key()})
    for i in range(len(signed_bytes)):  # every altered byte fails, with our error only
        tampered = bytearray(signed_bytes)
        tampered[i] ^= 0x01
        with pytest.raises(DocumentRecordError):
            docs.verify_record(bytes(tampered), {"lab-ptb": lab.public_key()})


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "invoice"},
        {"meter": ""},
        {"meter": "bad serial"},
        {"valid_until_s": NOW_S},
        {"valid_from_s": -1},
        {"valid_until_s": 1 << 41},
        {"digest": b"short"},
        {"valid_from_s": True},
    ],
)
def test_invalid_records_refused(lab: SigningKey, changes: dict[str, object]) -> None:
    record = DocumentRecord(bytes(32), "calibration", "M1", NOW_S, NOW_S + YEAR_S)
    with pytest.raises(DocumentRecordError):
        docs.sign_record(dataclasses.replace(record, **changes), "lab", lab.sign)


def test_accreditation_names_no_meter(lab: SigningKey) -> None:
    record = DocumentRecord(bytes(32), "accreditation", "", NOW_S, NOW_S + YEAR_S)
    signed = docs.verify_record(docs.sign_record(record, "dakks", lab.sign),
                                {"dakks": lab.public_key()})
    assert signed.record.meter == ""
    with pytest.raises(DocumentRecordError):
        docs.sign_record(dataclasses.replace(record, meter="M1"), "dakks", lab.sign)


def test_foreign_payload_refused(lab: SigningKey) -> None:
    data = cose.sign1(cbor.encode({1: bytes(32)}), b"lab", lab.sign)
    with pytest.raises(DocumentRecordError):
        docs.parse_record(data)
    with pytest.raises(DocumentRecordError):
        docs.parse_record(bytes(docs.RECORD_BYTES_MAX + 1))


def test_verification_expired_rule() -> None:
    record = DocumentRecord(bytes(32), "verification", "M1", NOW_S, NOW_S + YEAR_S)
    assert not docs.verification_expired(record, NOW_S)
    assert not docs.verification_expired(record, NOW_S + YEAR_S - 1)
    assert docs.verification_expired(record, NOW_S + YEAR_S)
    calibration = dataclasses.replace(record, kind="calibration")
    assert not docs.verification_expired(calibration, NOW_S + 10 * YEAR_S)


def test_verification_lapsed_over_all_records_of_a_meter() -> None:
    old = DocumentRecord(bytes(32), "verification", "M1", NOW_S, NOW_S + YEAR_S)
    renewed = dataclasses.replace(old, digest=b"\1" * 32, valid_from_s=NOW_S + YEAR_S - 10,
                                  valid_until_s=NOW_S + 9 * YEAR_S)
    calibration = dataclasses.replace(old, kind="calibration", valid_until_s=NOW_S + 99 * YEAR_S)
    other_meter = dataclasses.replace(renewed, meter="M2")
    assert not docs.verification_lapsed([old], "M1", NOW_S)
    assert docs.verification_lapsed([old], "M1", NOW_S + YEAR_S)
    assert docs.verification_lapsed([old, calibration, other_meter], "M1", NOW_S + YEAR_S)
    assert not docs.verification_lapsed([old, renewed], "M1", NOW_S + YEAR_S)
    assert docs.verification_lapsed([old, renewed], "M1", NOW_S + 9 * YEAR_S)
    assert docs.verification_lapsed([renewed], "M1", NOW_S)  # not in force yet
    assert not docs.verification_lapsed([], "M1", NOW_S)
    assert not docs.verification_lapsed([calibration], "M1", NOW_S + 50 * YEAR_S)
