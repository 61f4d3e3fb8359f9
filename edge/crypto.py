"""ES256 on CPython: the portable API over OpenSSL, plus key files.

`SigningKey` and `verify` have the same shape as `edge.portable.p256` and give the same
bytes (both use RFC 6979 deterministic nonces), so code written against one runs with
the other; `SigningKey.sign_random_nonce` is the one addition, for a node's receipts.
The backend is `cryptography` (OpenSSL): `just bench-crypto` measured it against
pycryptodome and pure Python, see docs/decisions.md.

Key files: private keys are PEM PKCS#8, written with mode 0600 and never logged; public
keys are PEM SubjectPublicKeyInfo.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from edge.portable import p256
from edge.portable.errors import LocalProtocolError
from gridledger.files import write_private

_ECDSA_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_ECDSA = ec.ECDSA(hashes.SHA256())
_UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint
_X962 = serialization.Encoding.X962


class SigningKey:
    """A P-256 private key signing through OpenSSL: deterministic ECDSA (`sign`), or
    with a random nonce (`sign_random_nonce`)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise LocalProtocolError("key is not on P-256")
        self._key = key
        self._public = key.public_key().public_bytes(_X962, _UNCOMPRESSED)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningKey:
        if len(raw) != p256.SECRET_BYTES:
            raise LocalProtocolError("private key must be 32 bytes")
        secret = int.from_bytes(raw, "big")
        if not 0 < secret < p256.N:
            raise LocalProtocolError("private key out of range")
        return cls(ec.derive_private_key(secret, ec.SECP256R1()))

    def to_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return _raw_signature(self._key.sign(message, _ECDSA_DETERMINISTIC))

    def sign_random_nonce(self, message: bytes) -> bytes:
        """`sign` with a nonce from OpenSSL's random generator instead of RFC 6979's:
        the same 64-byte form, valid under the same key, cheaper, but different bytes
        each time.  For a server's own messages that are verified, never compared."""
        return _raw_signature(self._key.sign(message, _ECDSA))

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return "SigningKey(<secret>)"


def _raw_signature(der: bytes) -> bytes:
    """r || s from OpenSSL's DER: SEQUENCE { INTEGER r, INTEGER s }, each integer minimal
    (a leading zero when its top bit is set, so up to 33 bytes) and every length one
    byte for P-256.  Sliced off the bytes when it has that shape (a receipt is signed per
    device per block, and slicing costs a quarter of decoding to ints); anything else is
    decoded in full."""
    r_len = der[3] if len(der) > 3 else 0
    s_at = 4 + r_len
    if (der[:1] == b"\x30" and der[1] == len(der) - 2 and der[2] == 2 and r_len <= 33
            and len(der) > s_at + 1 and der[s_at] == 2 and der[s_at + 1] <= 33
            and der[s_at + 1] == len(der) - s_at - 2):
        r, s = der[4:s_at], der[s_at + 2:]
        return r[-32:].rjust(32, b"\x00") + s[-32:].rjust(32, b"\x00")
    r_int, s_int = decode_dss_signature(der)
    return r_int.to_bytes(32, "big") + s_int.to_bytes(32, "big")


def _public_key_object(public_key: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` (64-byte r || s) is valid for `message` under `public_key`."""
    if len(signature) != p256.SIGNATURE_BYTES or len(public_key) != p256.PUBLIC_KEY_BYTES:
        return False
    if public_key[0] != 4:  # only the uncompressed form, as edge.portable.p256 accepts
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < p256.N and 0 < s < p256.N):
        return False
    try:
        key = _public_key_object(public_key)
        key.verify(encode_dss_signature(r, s), message, _ECDSA)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- key files -------------------------------------------------------------------------


def write_private_key(path: Path, key: SigningKey) -> None:
    """Write a PEM PKCS#8 private key, readable by its owner only (0600), atomically."""
    write_private(path, key.to_pem())


def read_private_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise LocalProtocolError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LocalProtocolError(f"{path}: not an EC private key")
    return SigningKey(key)


def public_key_to_pem(public_key: bytes) -> bytes:
    return _public_key_object(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(data: bytes, source: str = "public key") -> bytes:
    """65-byte uncompressed P-256 key from PEM SubjectPublicKeyInfo."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise LocalProtocolError(f"{source}: not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise LocalProtocolError(f"{source}: not a P-256 public key")
    return key.public_bytes(_X962, _UNCOMPRESSED)
