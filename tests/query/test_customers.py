"""Sealed customer records in SQLite: nothing readable at rest, rotation, tampering."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest

from aggregator.query import confidential as conf
from aggregator.query.confidential import CustomerFields, Sealed
from aggregator.query.customers import CustomerStore
from aggregator.query.errors import ConfidentialError, DecryptError, KeyFileError

FIELDS = CustomerFields("Erika Mustermann", "Heidestraße 17, 51147 Köln", "C-2026-0042")


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "data", tmp_path / "secrets" / "customer.keys"


@pytest.fixture
def store(paths: tuple[Path, Path], rng: random.Random) -> CustomerStore:
    s = CustomerStore(*paths, random_bytes=rng.randbytes)
    yield s
    s.close()


def test_put_get_and_digest(store: CustomerStore) -> None:
    on_chain = store.put("meter:SDM630-17", FIELDS)
    assert store.get("meter:SDM630-17") == FIELDS
    assert conf.check_digest(FIELDS, store.salt("meter:SDM630-17"), on_chain)
    with pytest.raises(ConfidentialError):
        store.get("meter:unknown")


def test_nothing_readable_at_rest(store: CustomerStore, paths: tuple[Path, Path]) -> None:
    store.put("r1", FIELDS)
    store.close()
    data_dir, key_file = paths
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for path in data_dir.iterdir():
        raw = path.read_bytes()
        assert b"Mustermann" not in raw and "Heidestraße".encode() not in raw


def test_rotation_then_reseal_all(store: CustomerStore, paths: tuple[Path, Path],
                                  rng: random.Random) -> None:
    digests = {rid: store.put(rid, FIELDS) for rid in ("r1", "r2", "r3")}
    conf.rotate_key_file(paths[1], rng.randbytes)
    store.reload_keys()
    assert store.get("r1") == FIELDS  # old key still decrypts
    assert store.reseal_all() == 3
    assert store.reseal_all() == 0
    for rid, on_chain in digests.items():
        assert store._sealed(rid).key_id == "k2"
        assert conf.check_digest(store.get(rid), store.salt(rid), on_chain)


def test_swapped_rows_and_tampered_ciphertext_detected(store: CustomerStore) -> None:
    store.put("r1", FIELDS)
    store.put("r2", CustomerFields("Max", "Elsewhere 1", "C-2"))
    r1 = store._db.execute("SELECT sealed FROM customers WHERE record_id='r1'").fetchone()[0]
    store._db.execute("UPDATE customers SET sealed = ? WHERE record_id = 'r2'", (r1,))
    with pytest.raises(ConfidentialError):
        store.get("r2")
    sealed = Sealed.from_bytes(r1)
    flipped = bytearray(sealed.ciphertext)
    flipped[0] ^= 1
    tampered = Sealed(sealed.record_id, sealed.key_id, sealed.nonce, sealed.salt,
                      bytes(flipped))
    store._db.execute("UPDATE customers SET sealed = ? WHERE record_id = 'r1'",
                      (tampered.to_bytes(),))
    with pytest.raises(DecryptError):
        store.get("r1")


def test_remove(store: CustomerStore) -> None:
    store.put("r1", FIELDS)
    assert store.remove("r1") and not store.remove("r1")


def test_unsafe_key_file_refused(paths: tuple[Path, Path], rng: random.Random) -> None:
    data_dir, key_file = paths
    CustomerStore(data_dir, key_file, rng.randbytes).close()
    key_file.chmod(0o640)
    with pytest.raises(KeyFileError):
        CustomerStore(data_dir, key_file, rng.randbytes)
