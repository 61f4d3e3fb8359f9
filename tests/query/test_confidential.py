"""Class II: AES-GCM at rest, tamper detection, key rotation, salted digests, key files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import stat
from pathlib import Path

import pytest

from aggregator.query import confidential as conf
from aggregator.query.confidential import CustomerFields, KeyRing, Sealed
from aggregator.query.errors import (
    ConfidentialError,
    DecryptError,
    KeyFileError,
    UnknownKeyError,
)

FIELDS = CustomerFields("Erika Mustermann", "Heidestraße 17, 51147 Köln", "C-2026-0042")


@pytest.fixture
def ring(rng: random.Random) -> KeyRing:
    return conf.new_key_ring(rng.randbytes)


def test_seal_unseal_round_trip(ring: KeyRing, rng: random.Random) -> None:
    sealed = conf.seal(ring, "meter:SDM630-17", FIELDS, rng.randbytes)
    assert conf.unseal(ring, sealed) == FIELDS
    assert b"Mustermann" not in sealed.to_bytes()
    assert Sealed.from_bytes(sealed.to_bytes()) == sealed


def test_digest_definition_and_check(ring: KeyRing, rng: random.Random) -> None:
    sealed = conf.seal(ring, "r1", FIELDS, rng.randbytes)
    on_chain = sealed.digest(FIELDS)
    assert on_chain == hashlib.sha256(sealed.salt + FIELDS.canonical()).digest()
    assert conf.check_digest(FIELDS, sealed.salt, on_chain)
    assert not conf.check_digest(dataclasses.replace(FIELDS, contract="C-2026-0043"),
                                 sealed.salt, on_chain)
    assert not conf.check_digest(FIELDS, bytes(16), on_chain)


def test_canonical_fields_are_deterministic() -> None:
    again = CustomerFields(FIELDS.name, FIELDS.address, FIELDS.contract)
    assert again.canonical() == FIELDS.canonical()


@pytest.mark.parametrize("field", ["nonce", "salt", "ciphertext"])
def test_every_flipped_bit_is_detected(ring: KeyRing, rng: random.Random, field: str) -> None:
    sealed = conf.seal(ring, "r1", FIELDS, rng.randbytes)
    raw = getattr(sealed, field)
    for _ in range(20):
        position = rng.randrange(len(raw) * 8)
        flipped = bytearray(raw)
        flipped[position // 8] ^= 1 << (position % 8)
        with pytest.raises(DecryptError):
            conf.unseal(ring, dataclasses.replace(sealed, **{field: bytes(flipped)}))


def test_ciphertext_bound_to_its_record_id(ring: KeyRing, rng: random.Random) -> None:
    sealed = conf.seal(ring, "r1", FIELDS, rng.randbytes)
    with pytest.raises(DecryptError):
        conf.unseal(ring, dataclasses.replace(sealed, record_id="r2"))


def test_rotation_decrypts_old_and_encrypts_with_newest(ring: KeyRing,
                                                        rng: random.Random) -> None:
    old = conf.seal(ring, "r1", FIELDS, rng.randbytes)
    rotated = ring.rotated(rng.randbytes)
    assert rotated.current_id == "k2" and old.key_id == "k1"
    assert conf.unseal(rotated, old) == FIELDS
    new = conf.seal(rotated, "r2", FIELDS, rng.randbytes)
    assert new.key_id == "k2"
    resealed = conf.reseal(rotated, old, rng.randbytes)
    assert resealed.key_id == "k2" and resealed.salt == old.salt
    assert resealed.digest(FIELDS) == old.digest(FIELDS)  # the chain's digest still holds
    assert conf.unseal(rotated, resealed) == FIELDS
    with pytest.raises(UnknownKeyError):
        conf.unseal(ring, new)  # the old ring lacks k2
    with pytest.raises(DecryptError):  # claiming the other key id breaks the binding
        conf.unseal(rotated, dataclasses.replace(old, key_id="k2"))


def test_key_file_private_round_trip_and_rotation(tmp_path: Path, ring: KeyRing,
                                                  rng: random.Random) -> None:
    path = tmp_path / "keys" / "customer.keys"
    conf.write_key_file(path, ring)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert conf.read_key_file(path) == ring
    rotated = conf.rotate_key_file(path, rng.randbytes)
    assert conf.read_key_file(path) == rotated and len(rotated.keys) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_readable_by_others_refused(tmp_path: Path, ring: KeyRing) -> None:
    path = tmp_path / "customer.keys"
    conf.write_key_file(path, ring)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError):
        conf.read_key_file(path)


@pytest.mark.parametrize("text", ["", "{}", '{"keys": []}', '{"keys": "k1"}', "[1]", "not json",
                                  '{"keys": [{"id": "k1", "key": "AA=="}]}'])
def test_malformed_key_file_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "customer.keys"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        conf.read_key_file(path)


def test_key_ring_bounded(rng: random.Random) -> None:
    ring = KeyRing(tuple((f"k{i}", rng.randbytes(32)) for i in range(1, conf.KEYS_MAX + 1)))
    with pytest.raises(KeyFileError):
        ring.rotated(rng.randbytes)


def test_invalid_inputs(ring: KeyRing, rng: random.Random) -> None:
    with pytest.raises(ConfidentialError):
        conf.seal(ring, "bad id/1", FIELDS, rng.randbytes)
    with pytest.raises(ConfidentialError):
        conf.seal(ring, "r1", dataclasses.replace(FIELDS, name="x" * 257), rng.randbytes)
    for garbage in (b"", b"\xa0", b"\x01", bytes(5000)):
        with pytest.raises(ConfidentialError):
            Sealed.from_bytes(garbage)
