"""ES256: RFC 6979 A.2.5 vectors on both backends, cross verification, tampering, bad
keys, and a property test that pure Python and OpenSSL sign byte for byte alike."""

from __future__ import annotations

import hashlib
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import crypto
from edge.portable import p256
from edge.portable.errors import LocalProtocolError

from .helpers import RFC6979_PUBLIC, RFC6979_SIGNATURES, RFC6979_TEST_VECTOR_KEY

BACKENDS = {"pure": p256, "native": crypto}
MESSAGES = sorted(RFC6979_SIGNATURES)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("message", MESSAGES)
def test_rfc6979_a25_vectors(backend: str, message: bytes) -> None:
    module = BACKENDS[backend]
    key = module.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY)
    assert key.public_key() == RFC6979_PUBLIC
    assert key.to_bytes() == RFC6979_TEST_VECTOR_KEY
    assert key.sign(message) == RFC6979_SIGNATURES[message]
    assert module.verify(RFC6979_PUBLIC, message, RFC6979_SIGNATURES[message])


@pytest.mark.parametrize(("signer", "verifier"), [("pure", "native"), ("native", "pure")])
def test_one_backend_verifies_the_other(signer: str, verifier: str) -> None:
    rng = random.Random(6979)
    for _ in range(3):
        secret = rng.randbytes(32)
        key = BACKENDS[signer].SigningKey.from_bytes(secret)
        message = rng.randbytes(rng.randrange(0, 200))
        signature = key.sign(message)
        assert BACKENDS[verifier].verify(key.public_key(), message, signature), "seed 6979"


def test_random_nonce_signatures_verify_on_both_backends_and_differ() -> None:
    key = crypto.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY)
    message = b"sample"
    first, second = key.sign_random_nonce(message), key.sign_random_nonce(message)
    assert first != second != RFC6979_SIGNATURES[message]
    for signature in (first, second):
        assert len(signature) == p256.SIGNATURE_BYTES
        assert crypto.verify(RFC6979_PUBLIC, message, signature)
        assert p256.verify(RFC6979_PUBLIC, message, signature)
        assert not crypto.verify(RFC6979_PUBLIC, b"samplf", signature)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_tampering_fails(backend: str) -> None:
    verify = BACKENDS[backend].verify
    message = b"sample"
    signature = RFC6979_SIGNATURES[message]
    other = p256.SigningKey.from_bytes(bytes(31) + b"\x07").public_key()
    assert not verify(RFC6979_PUBLIC, b"samplf", signature)
    assert not verify(RFC6979_PUBLIC, b"sample ", signature)
    for index in (0, 31, 32, 63):
        assert not verify(RFC6979_PUBLIC, message, _flip(signature, index))
    assert not verify(other, message, signature)
    assert not verify(RFC6979_PUBLIC, message, signature[:63])
    assert not verify(RFC6979_PUBLIC, message, signature + b"\x00")
    assert not verify(RFC6979_PUBLIC, message, bytes(64))
    n = p256.N.to_bytes(32, "big")
    assert not verify(RFC6979_PUBLIC, message, n + signature[32:])
    assert not verify(RFC6979_PUBLIC, message, signature[:32] + n)
    # (r, n - s) is the other valid-looking half of the malleable pair: it verifies on
    # both backends alike, which is why the ledger keys replay on (device, seq).
    s = int.from_bytes(signature[32:], "big")
    flipped = signature[:32] + (p256.N - s).to_bytes(32, "big")
    assert verify(RFC6979_PUBLIC, message, flipped)


def _off_curve_keys() -> list[bytes]:
    x = RFC6979_PUBLIC[1:33]
    y = RFC6979_PUBLIC[33:]
    y_plus_one = (int.from_bytes(y, "big") + 1).to_bytes(32, "big")
    y_plus_p = (int.from_bytes(y, "big") + p256.P).to_bytes(33, "big")[-32:]
    hybrid = bytes([6 | (y[-1] & 1)]) + x + y
    return [
        b"\x04" + x + y_plus_one,  # not on the curve
        b"\x04" + bytes(64),  # (0, 0)
        b"\x04" + p256.P.to_bytes(32, "big") + y,  # x >= p
        b"\x04" + x + y_plus_p,  # y wrapped past p (does not fit: stays off the curve)
        hybrid,  # SEC 1 hybrid form: only 0x04 is accepted
        b"\x02" + x,  # compressed
        b"\x03" + x + y,  # wrong prefix
        RFC6979_PUBLIC[:64],
        b"",
    ]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_off_curve_and_malformed_public_keys_are_rejected(backend: str) -> None:
    signature = RFC6979_SIGNATURES[b"sample"]
    for key in _off_curve_keys():
        assert not BACKENDS[backend].verify(key, b"sample", signature), key.hex()
    for key in _off_curve_keys():
        with pytest.raises(LocalProtocolError):
            p256.decode_public_key(key)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_private_keys_out_of_range_are_local_misuse(backend: str) -> None:
    module = BACKENDS[backend]
    for raw in (bytes(32), p256.N.to_bytes(32, "big"), b"\xff" * 32, bytes(31)):
        with pytest.raises(LocalProtocolError):
            module.SigningKey.from_bytes(raw)
    assert "secret" in repr(module.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY))


def test_pure_key_generation_uses_the_given_random_source() -> None:
    draws = iter([b"\xff" * 32, bytes(32), RFC6979_TEST_VECTOR_KEY])
    key = p256.SigningKey.generate(lambda n: next(draws))
    assert key.public_key() == RFC6979_PUBLIC
    with pytest.raises(LocalProtocolError):
        p256.SigningKey(0)


def test_native_key_files_round_trip(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "keys" / "device.pem"
    key = crypto.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY)
    crypto.write_private_key(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert crypto.read_private_key(path).to_bytes() == RFC6979_TEST_VECTOR_KEY
    pem = crypto.public_key_to_pem(RFC6979_PUBLIC)
    assert crypto.public_key_from_pem(pem) == RFC6979_PUBLIC
    with pytest.raises(LocalProtocolError):
        crypto.public_key_from_pem(b"not pem")
    path.write_bytes(b"garbage")
    with pytest.raises(LocalProtocolError):
        crypto.read_private_key(path)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.integers(min_value=1, max_value=p256.N - 1),
    st.binary(max_size=300),
)
def test_pure_and_native_sign_identically(secret: int, message: bytes) -> None:
    raw = secret.to_bytes(32, "big")
    pure = p256.SigningKey.from_bytes(raw)
    native = crypto.SigningKey.from_bytes(raw)
    assert pure.public_key() == native.public_key()
    signature = pure.sign(message)
    assert native.sign(message) == signature
    assert p256.verify(pure.public_key(), message, signature)
    assert crypto.verify(pure.public_key(), message, signature)
    assert not p256.verify(pure.public_key(), message + b"!", signature)


_SCALARS = st.one_of(st.integers(min_value=1, max_value=2**16),
                    st.integers(min_value=1, max_value=p256.N - 1))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_SCALARS, _SCALARS)
def test_der_signatures_become_r_and_s_of_32_bytes_each(r: int, s: int) -> None:
    """The sliced path (OpenSSL's DER shape) and the decoding fallback agree on any r, s,
    including short integers and ones with a leading zero byte."""
    der = encode_dss_signature(r, s)
    assert crypto._raw_signature(der) == r.to_bytes(32, "big") + s.to_bytes(32, "big")
    with pytest.raises(ValueError):  # another shape is not sliced but decoded, and refused
        crypto._raw_signature(der + b"\x00")


def test_group_law_edge_cases() -> None:
    g = (p256.GX, p256.GY, 1)
    minus_g = (p256.GX, p256.P - p256.GY, 1)
    assert p256._to_affine(p256._add(g, g)) == p256._to_affine(p256._double(g))
    assert p256._add(g, minus_g)[2] == 0
    assert p256._add(p256._INFINITY, g) == g
    assert p256._add(g, p256._INFINITY) == g
    assert p256._multiply(p256.N, p256._g_table())[2] == 0
    assert p256._to_affine(p256._multiply(p256.N - 1, p256._g_table())) == (
        p256.GX,
        p256.P - p256.GY,
    )
    with pytest.raises(LocalProtocolError):
        p256._to_affine(p256._INFINITY)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_signature_whose_check_point_is_infinity_fails(backend: str) -> None:
    # With d = -e / r, u1*G + u2*Q = (e + r*d) / s * G is the point at infinity.
    message = b"sample"
    e = int.from_bytes(hashlib.sha256(message).digest(), "big") % p256.N
    r = 0x1234567
    d = -e * pow(r, p256.N - 2, p256.N) % p256.N
    public = p256.SigningKey(d).public_key()
    signature = r.to_bytes(32, "big") + (7).to_bytes(32, "big")
    assert not BACKENDS[backend].verify(public, message, signature)
