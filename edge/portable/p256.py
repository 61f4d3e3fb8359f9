"""ECDSA over NIST P-256 with SHA-256 (ES256), in pure Python.

Theory of operation
-------------------
This is the signer and verifier a gateway without a native library uses (MicroPython
on an ESP32); CPython uses `edge.crypto`, which has the same API over OpenSSL and
produces the same bytes.  Points are kept in Jacobian coordinates (X, Y, Z) so that a
scalar multiplication needs a single modular inverse at the end; a = -3 lets doubling
use the short formula.  Nonces are deterministic (RFC 6979 §3.2, HMAC-SHA-256), so a
key and a message always give the same signature on every interpreter: that is what
makes a batch byte-identical on CPython and MicroPython.

Curve constants: SEC 2 §2.4.2 / FIPS 186-4 D.1.2.3.  Signature encoding: the fixed
64-byte r || s that COSE uses (RFC 9053 §2.1), not DER.  Public keys: the 65-byte SEC 1
uncompressed form 0x04 || X || Y.

Python integers do not run in constant time: where side channels matter, keep the key
in a secure element (ATECC608) and let it sign.

Portable: runs on MicroPython.
"""

import hashlib

from .errors import LocalProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 65
SECRET_BYTES = 32

_INFINITY = (1, 1, 0)
_WINDOW_BITS = 4


# -- field and group arithmetic (Jacobian coordinates) --------------------------------


def _double(pt: tuple[int, int, int]) -> tuple[int, int, int]:
    x1, y1, z1 = pt
    if z1 == 0 or y1 == 0:
        return _INFINITY
    delta = z1 * z1 % P
    gamma = y1 * y1 % P
    beta = x1 * gamma % P
    alpha = 3 * (x1 - delta) * (x1 + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y1 + z1) * (y1 + z1) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return (x3, y3, z3)


def _add(p1: tuple[int, int, int], p2: tuple[int, int, int]) -> tuple[int, int, int]:
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - u1) % P
    r = 2 * (s2 - s1) % P
    if h == 0:
        return _double(p1) if r == 0 else _INFINITY
    i = 4 * h * h % P
    j = h * i % P
    v = u1 * i % P
    x3 = (r * r - j - 2 * v) % P
    y3 = (r * (v - x3) - 2 * s1 * j) % P
    z3 = ((z1 + z2) * (z1 + z2) - z1z1 - z2z2) * h % P
    return (x3, y3, z3)


def _to_affine(pt: tuple[int, int, int]) -> tuple[int, int]:
    x, y, z = pt
    if z == 0:
        raise LocalProtocolError("point at infinity has no affine form")
    zinv = pow(z, P - 2, P)
    zinv2 = zinv * zinv % P
    return (x * zinv2 % P, y * zinv2 * zinv % P)


def _window_table(pt: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    table = [_INFINITY, pt]
    for _ in range(2, 1 << _WINDOW_BITS):
        table.append(_add(table[-1], pt))
    return table


def _multiply(k: int, table: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """k * P with a fixed 4-bit window over a precomputed table of 0..15 * P."""
    acc = _INFINITY
    mask = (1 << _WINDOW_BITS) - 1
    for shift in range(256 - _WINDOW_BITS, -1, -_WINDOW_BITS):
        for _ in range(_WINDOW_BITS):
            acc = _double(acc)
        digit = (k >> shift) & mask
        if digit:
            acc = _add(acc, table[digit])
    return acc


_G_TABLE: list[tuple[int, int, int]] = []


def _g_table() -> list[tuple[int, int, int]]:
    if not _G_TABLE:
        _G_TABLE.extend(_window_table((GX, GY, 1)))
    return _G_TABLE


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


# -- encodings -------------------------------------------------------------------------


def _int_from(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _int_to32(value: int) -> bytes:
    return value.to_bytes(32, "big")


def decode_public_key(raw: bytes) -> tuple[int, int]:
    """Affine (x, y) of a 65-byte uncompressed key; LocalProtocolError if not on P-256."""
    if len(raw) != PUBLIC_KEY_BYTES or raw[0] != 4:
        raise LocalProtocolError("public key must be 65 bytes starting with 0x04")
    x = _int_from(raw[1:33])
    y = _int_from(raw[33:65])
    if not _on_curve(x, y):
        raise LocalProtocolError("public key is not a point on P-256")
    return (x, y)


def encode_public_key(x: int, y: int) -> bytes:
    return b"\x04" + _int_to32(x) + _int_to32(y)


# -- RFC 6979 deterministic nonce ------------------------------------------------------


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC (RFC 2104) over SHA-256; MicroPython has no hmac module."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (block - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


def _rfc6979_nonces(secret: int, digest: bytes) -> "_NonceStream":
    return _NonceStream(secret, digest)


class _NonceStream:
    """Candidate nonces k of RFC 6979 §3.2 steps b-h (qlen = hlen = 256 bits)."""

    def __init__(self, secret: int, digest: bytes) -> None:
        x = _int_to32(secret)
        h1 = _int_to32(_int_from(digest) % N)  # bits2octets(H(m)), §2.3.4
        v = b"\x01" * 32
        k = b"\x00" * 32
        k = _hmac_sha256(k, v + b"\x00" + x + h1)  # step d
        v = _hmac_sha256(k, v)  # step e
        k = _hmac_sha256(k, v + b"\x01" + x + h1)  # step f
        v = _hmac_sha256(k, v)  # step g
        self.k = k
        self.v = v

    def next(self) -> int:
        while True:
            self.v = _hmac_sha256(self.k, self.v)  # step h.2, tlen = qlen
            candidate = _int_from(self.v)
            # step h.3: prepare K and V for a retry, whether or not this one is used
            self.k = _hmac_sha256(self.k, self.v + b"\x00")
            self.v = _hmac_sha256(self.k, self.v)
            if 1 <= candidate < N:
                return candidate


# -- keys, signing, verification -------------------------------------------------------


class SigningKey:
    """A P-256 private key that signs with deterministic ECDSA."""

    def __init__(self, secret: int) -> None:
        if not 1 <= secret < N:
            raise LocalProtocolError("private key out of range")
        self._secret = secret
        self._public: bytes | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> "SigningKey":
        if len(raw) != SECRET_BYTES:
            raise LocalProtocolError("private key must be 32 bytes")
        return cls(_int_from(raw))

    @classmethod
    def generate(cls, randbytes: "Callable[[int], bytes]") -> "SigningKey":
        """A new key from `randbytes(n) -> bytes` (os.urandom on a device)."""
        while True:
            raw = randbytes(SECRET_BYTES)
            secret = _int_from(raw)
            if 1 <= secret < N:
                return cls(secret)

    def to_bytes(self) -> bytes:
        return _int_to32(self._secret)

    def public_key(self) -> bytes:
        if self._public is None:
            x, y = _to_affine(_multiply(self._secret, _g_table()))
            self._public = encode_public_key(x, y)
        return self._public

    def sign(self, message: bytes) -> bytes:
        """64-byte r || s over SHA-256(message), nonce per RFC 6979."""
        digest = hashlib.sha256(message).digest()
        e = _int_from(digest) % N
        nonces = _rfc6979_nonces(self._secret, digest)
        while True:
            k = nonces.next()
            r = _to_affine(_multiply(k, _g_table()))[0] % N
            if r == 0:
                continue
            s = pow(k, N - 2, N) * (e + r * self._secret) % N
            if s != 0:
                return _int_to32(r) + _int_to32(s)

    def __repr__(self) -> str:
        return "SigningKey(<secret>)"


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` (r || s) is valid for `message` under `public_key`."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        qx, qy = decode_public_key(public_key)
    except LocalProtocolError:
        return False
    r = _int_from(signature[:32])
    s = _int_from(signature[32:])
    if not (1 <= r < N and 1 <= s < N):
        return False
    e = _int_from(hashlib.sha256(message).digest()) % N
    w = pow(s, N - 2, N)
    u1 = e * w % N
    u2 = r * w % N
    point = _add(_multiply(u1, _g_table()), _multiply(u2, _window_table((qx, qy, 1))))
    if point[2] == 0:
        return False
    return _to_affine(point)[0] % N == r
