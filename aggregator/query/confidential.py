"""Class II data: customer fields encrypted at rest, with only a salted digest on chain.

Theory of operation
-------------------
The confidential fields of a meter's customer (name, address, contract) are encoded as
one deterministic CBOR map (RFC 8949 §4.2.1), the *canonical fields*, and

    sealed    = AES-256-GCM(key, nonce, plaintext = canonical fields, aad)
    aad       = CBOR ["gridledger-customer-v1", record id, key id, salt]
    digest    = SHA-256(salt || canonical fields)          (what the chain holds)

The associated data binds the ciphertext to its record id, key id and salt: a ciphertext
copied onto another record, or given another salt, fails to decrypt.  The 16-byte random
salt is kept with the ciphertext; without it the digest of a guessable name and address
could be confirmed by brute force from the chain alone.  `check_digest` lets anyone who
is shown the fields and the salt confirm them against the chain.

Keys live in a key file outside the database (JSON, mode 0600, refused if group or others
may read it).  Each key has an id ("k1", "k2", ...); the newest encrypts, any one
decrypts.  `rotate_key_file` appends a new key; `reseal` re-encrypts a record under the
newest key and keeps its salt, so the digest on chain stays valid.  Nonces are 96 random
bits: NIST SP 800-38D §8.3 allows 2^32 encryptions per key with random nonces, far more
than a node's customers; rotate well before that.

Limits (with reasons)
---------------------
    FIELD_CHARS_MAX   name 256, address 512, contract 128    a row, not a document
    KEYS_MAX          64                                      a yearly rotation for decades
    SEALED_BYTES_MAX  4096                                    fields plus overhead
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.portable import cbor
from edge.portable.errors import DecodeError
from gridledger.files import write_private

from .errors import ConfidentialError, DecryptError, KeyFileError, UnknownKeyError

AAD_DOMAIN = "gridledger-customer-v1"
KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 16
KEYS_MAX = 64
SEALED_BYTES_MAX = 4096
FIELD_CHARS_MAX = {"name": 256, "address": 512, "contract": 128}
RECORD_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class CustomerFields:
    name: str
    address: str
    contract: str

    def canonical(self) -> bytes:
        """The deterministic CBOR map both the ciphertext and the digest cover."""
        fields = {"name": self.name, "address": self.address, "contract": self.contract}
        for field, value in fields.items():
            if not isinstance(value, str) or len(value) > FIELD_CHARS_MAX[field]:
                raise ConfidentialError(f"{field}: text of at most {FIELD_CHARS_MAX[field]} "
                                        "characters")
        return cbor.encode(fields)


@dataclass(frozen=True)
class Sealed:
    """A class II record at rest: what the database stores, and never the chain."""

    record_id: str
    key_id: str
    nonce: bytes
    salt: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return cbor.encode({1: self.record_id, 2: self.key_id, 3: self.nonce, 4: self.salt,
                            5: self.ciphertext})

    @classmethod
    def from_bytes(cls, data: bytes) -> Sealed:
        try:
            item = cbor.decode(data, max_depth=2, max_items=8, max_size_bytes=SEALED_BYTES_MAX)
        except DecodeError as exc:
            raise ConfidentialError(f"sealed record: {exc}") from None
        if not isinstance(item, dict) or set(item) != {1, 2, 3, 4, 5}:
            raise ConfidentialError("sealed record: a map with keys 1..5")
        record_id, key_id, nonce, salt, ciphertext = (item[k] for k in range(1, 6))
        if not (isinstance(record_id, str) and isinstance(key_id, str)
                and isinstance(nonce, bytes) and isinstance(salt, bytes)
                and isinstance(ciphertext, bytes)):
            raise ConfidentialError("sealed record: field of the wrong type")
        sealed = cls(record_id, key_id, nonce, salt, ciphertext)
        if len(sealed.nonce) != NONCE_BYTES or len(sealed.salt) != SALT_BYTES:
            raise ConfidentialError("sealed record: nonce or salt of the wrong length")
        return sealed

    def digest(self, fields: CustomerFields) -> bytes:
        return digest(fields, self.salt)


def digest(fields: CustomerFields, salt: bytes) -> bytes:
    """SHA-256(salt || canonical fields): the only trace of class II data on chain."""
    return hashlib.sha256(salt + fields.canonical()).digest()


def check_digest(fields: CustomerFields, salt: bytes, on_chain: bytes) -> bool:
    """Do these fields and salt give the digest the chain holds?  Constant time."""
    return hmac.compare_digest(digest(fields, salt), on_chain)


# -- the key ring ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRing:
    """Data keys by id, oldest first; the last one encrypts."""

    keys: tuple[tuple[str, bytes], ...]

    @property
    def current_id(self) -> str:
        return self.keys[-1][0]

    def key(self, key_id: str) -> bytes:
        for candidate, key in self.keys:
            if candidate == key_id:
                return key
        raise UnknownKeyError(f"key {key_id!r} is not in the key ring")

    def rotated(self, random_bytes: RandomBytes = os.urandom) -> KeyRing:
        if len(self.keys) >= KEYS_MAX:
            raise KeyFileError(f"key ring full ({KEYS_MAX} keys): reseal and retire old keys")
        return KeyRing((*self.keys, (f"k{len(self.keys) + 1}", random_bytes(KEY_BYTES))))


def new_key_ring(random_bytes: RandomBytes = os.urandom) -> KeyRing:
    return KeyRing((("k1", random_bytes(KEY_BYTES)),))


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Write the key ring atomically, readable by its owner only."""
    body = {"version": 1, "keys": [{"id": kid, "key": base64.b64encode(key).decode()}
                                   for kid, key in ring.keys]}
    write_private(path, json.dumps(body, indent=1).encode())


def read_key_file(path: Path) -> KeyRing:
    """Load a key ring; refuse a file others may read, or one that is malformed."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeyFileError(f"{path}: readable by group or others; chmod 600 it")
    try:
        body = json.loads(path.read_text())
        keys = tuple((str(k["id"]), base64.b64decode(k["key"], validate=True))
                     for k in body["keys"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a key file ({exc})") from None
    if not 1 <= len(keys) <= KEYS_MAX or any(len(k) != KEY_BYTES for _, k in keys):
        raise KeyFileError(f"{path}: 1..{KEYS_MAX} keys of {KEY_BYTES} bytes expected")
    if len({kid for kid, _ in keys}) != len(keys):
        raise KeyFileError(f"{path}: repeated key id")
    return KeyRing(keys)


def rotate_key_file(path: Path, random_bytes: RandomBytes = os.urandom) -> KeyRing:
    ring = read_key_file(path).rotated(random_bytes)
    write_key_file(path, ring)
    return ring


# -- sealing ----------------------------------------------------------------------------


def _aad(record_id: str, key_id: str, salt: bytes) -> bytes:
    return cbor.encode([AAD_DOMAIN, record_id, key_id, salt])


def seal(ring: KeyRing, record_id: str, fields: CustomerFields,
         random_bytes: RandomBytes = os.urandom, salt: bytes | None = None) -> Sealed:
    """Encrypt under the newest key; a new random salt unless one is kept (`reseal`)."""
    if RECORD_ID_PATTERN.fullmatch(record_id) is None:
        raise ConfidentialError(f"record id {record_id!r}: 1..64 of [A-Za-z0-9._:-]")
    salt = random_bytes(SALT_BYTES) if salt is None else salt
    nonce = random_bytes(NONCE_BYTES)
    key_id = ring.current_id
    ciphertext = AESGCM(ring.key(key_id)).encrypt(nonce, fields.canonical(),
                                                  _aad(record_id, key_id, salt))
    return Sealed(record_id, key_id, nonce, salt, ciphertext)


def unseal(ring: KeyRing, sealed: Sealed) -> CustomerFields:
    """Decrypt with the key the record names; DecryptError if anything was changed."""
    aad = _aad(sealed.record_id, sealed.key_id, sealed.salt)
    try:
        plain = AESGCM(ring.key(sealed.key_id)).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag:
        raise DecryptError(f"record {sealed.record_id!r}: authentication failed") from None
    try:
        item = cbor.decode(plain, max_depth=1, max_items=3)
    except DecodeError:
        item = None
    if not isinstance(item, dict) or set(item) != {"name", "address", "contract"}:
        raise DecryptError("decrypted fields are not a customer record")
    return CustomerFields(str(item["name"]), str(item["address"]), str(item["contract"]))


def reseal(ring: KeyRing, sealed: Sealed, random_bytes: RandomBytes = os.urandom) -> Sealed:
    """Re-encrypt under the newest key, keeping the salt so the on-chain digest holds."""
    if sealed.key_id == ring.current_id:
        return sealed
    return seal(ring, sealed.record_id, unseal(ring, sealed), random_bytes, sealed.salt)
