"""COSE_Sign1 (RFC 9052) with ES256, and EC2 COSE_Key (RFC 9053).

Theory of operation
-------------------
A message is the tagged array (tag 18, RFC 9052 §4.2)

    [protected: bstr .cbor {1: alg, 4: kid}, unprotected: {} / {13: kcwt},
     payload: bstr, signature: bstr]

and the signature covers the Sig_structure of §4.4,

    ["Signature1", protected bytes, external_aad = h'', payload bytes],

encoded deterministically.  ES256 (alg -7, RFC 9053 §2.1) signs it with ECDSA P-256 /
SHA-256 and a 64-byte r || s signature.  The protected header is kept as the exact bytes
received, because the signature covers those bytes and not their meaning.

`parse` checks only structure (tag, array shape, header types, algorithm, sizes);
`verify` checks the signature against a key the caller chose.  Keeping them apart lets
the caller look the key up by kid in between, and lets an aggregator batch the costly
verifications.

Header labels used: 1 alg, 4 kid, 13 kcwt (RFC 9528 §3.6).  Unknown protected or
unprotected labels are rejected: a gateway has no reason to send them.
Limits: kid at most 64 bytes, payload at most 16 KiB, kcwt at most 1 KiB.

Portable: runs on MicroPython.
"""

from . import cbor, p256
from .errors import (
    AlgorithmError,
    BadSignatureError,
    DecodeError,
    LocalProtocolError,
    MalformedCoseError,
    WrongTagError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

COSE_SIGN1_TAG = 18
ALG_ES256 = -7
HDR_ALG = 1
HDR_KID = 4
HDR_KCWT = 13

MAX_KID_BYTES = 64
MAX_PAYLOAD_BYTES = 16384
MAX_KCWT_BYTES = 1024
MAX_MESSAGE_BYTES = MAX_PAYLOAD_BYTES + MAX_KCWT_BYTES + 256

# COSE_Key labels (RFC 9052 §7, RFC 9053 §7.1)
KEY_KTY = 1
KEY_CRV = -1
KEY_X = -2
KEY_Y = -3
KTY_EC2 = 2
CRV_P256 = 1


class Sign1:
    """A parsed COSE_Sign1, not yet verified."""

    def __init__(
        self,
        protected: bytes,
        alg: int,
        kid: bytes,
        unprotected: dict[object, object],
        payload: bytes,
        signature: bytes,
    ) -> None:
        self.protected = protected
        self.alg = alg
        self.kid = kid
        self.unprotected = unprotected
        self.payload = payload
        self.signature = signature

    @property
    def kcwt(self) -> bytes | None:
        value = self.unprotected.get(HDR_KCWT)
        return value if isinstance(value, bytes) else None

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected, self.payload)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


SIG_CONTEXT = "Signature1"


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes ES256 signs (RFC 9052 §4.4), with an empty external_aad."""
    return cbor.encode([SIG_CONTEXT, protected, b"", payload])


def check_sign1_sizes(kid: bytes, payload: bytes) -> None:
    """Refuse to sign what no verifier here would accept: kid and payload beyond limits."""
    if not 0 < len(kid) <= MAX_KID_BYTES or len(payload) > MAX_PAYLOAD_BYTES:
        raise LocalProtocolError("kid or payload too long for a COSE_Sign1")


def protected_header(kid: bytes) -> bytes:
    return cbor.encode({HDR_ALG: ALG_ES256, HDR_KID: kid})


def sign1(
    payload: bytes,
    kid: bytes,
    sign: "Callable[[bytes], bytes]",
    kcwt: bytes | None = None,
) -> bytes:
    """A tagged COSE_Sign1 over `payload`; `sign(tbs) -> r || s` is the key's ES256."""
    check_sign1_sizes(kid, payload)
    if kcwt is not None and (not isinstance(kcwt, bytes) or len(kcwt) > MAX_KCWT_BYTES):
        raise LocalProtocolError("kcwt must be at most " + str(MAX_KCWT_BYTES) + " bytes")
    protected = protected_header(kid)
    signature = sign(sig_structure(protected, payload))
    if len(signature) != p256.SIGNATURE_BYTES:
        raise LocalProtocolError("ES256 signature must be 64 bytes")
    unprotected: dict[object, object] = {}
    if kcwt is not None:
        unprotected[HDR_KCWT] = kcwt
    return cbor.encode(cbor.Tag(COSE_SIGN1_TAG, [protected, unprotected, payload, signature]))


def parse(data: bytes) -> Sign1:
    """Structure of a tagged COSE_Sign1; raises a CoseError or DecodeError subclass."""
    item = cbor.decode(data, max_size_bytes=MAX_MESSAGE_BYTES)
    if not isinstance(item, cbor.Tag) or item.tag != COSE_SIGN1_TAG:
        raise WrongTagError("not a tagged COSE_Sign1 (tag 18)")
    body = item.value
    if not isinstance(body, list) or len(body) != 4:
        raise MalformedCoseError("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise MalformedCoseError("protected header and payload must be byte strings")
    if not isinstance(signature, bytes) or not isinstance(unprotected, dict):
        raise MalformedCoseError("signature must be bytes and unprotected header a map")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MalformedCoseError("payload longer than " + str(MAX_PAYLOAD_BYTES) + " bytes")
    alg, kid = _parse_protected(protected)
    _check_unprotected(unprotected)
    if len(signature) != p256.SIGNATURE_BYTES:
        raise MalformedCoseError("ES256 signature must be 64 bytes")
    return Sign1(protected, alg, kid, unprotected, payload, signature)


def _parse_protected(protected: bytes) -> tuple[int, bytes]:
    try:
        header = cbor.decode(protected, max_depth=2)
    except DecodeError as exc:
        raise MalformedCoseError("protected header: " + str(exc)) from None
    if not isinstance(header, dict):
        raise MalformedCoseError("protected header must be a map")
    for label in header:
        if label not in (HDR_ALG, HDR_KID):
            raise MalformedCoseError("unexpected protected header label " + repr(label))
    alg = header.get(HDR_ALG)
    if not _is_int(alg) or alg != ALG_ES256:  # -7.0 is a float, not an algorithm
        raise AlgorithmError("algorithm " + repr(alg) + " is not ES256 (-7)")
    kid = header.get(HDR_KID)
    if not isinstance(kid, bytes) or not 0 < len(kid) <= MAX_KID_BYTES:
        raise MalformedCoseError("kid must be 1.." + str(MAX_KID_BYTES) + " bytes")
    return ALG_ES256, kid


def _check_unprotected(unprotected: dict[object, object]) -> None:
    for label, value in unprotected.items():
        if label != HDR_KCWT:
            raise MalformedCoseError("unexpected unprotected header label " + repr(label))
        if not isinstance(value, bytes) or len(value) > MAX_KCWT_BYTES:
            raise MalformedCoseError("kcwt must be at most " + str(MAX_KCWT_BYTES) + " bytes")


def verify(
    message: Sign1,
    public_key: bytes,
    verify_fn: "Callable[[bytes, bytes, bytes], bool]" = p256.verify,
) -> None:
    """Raise BadSignatureError unless `message` is signed by `public_key` (65 bytes)."""
    if not verify_fn(public_key, message.to_be_signed(), message.signature):
        raise BadSignatureError("signature does not verify for kid " + repr(message.kid))


# -- COSE_Key for P-256 public keys ----------------------------------------------------


def cose_key(public_key: bytes) -> dict[object, object]:
    """EC2 COSE_Key map for a 65-byte uncompressed P-256 public key."""
    p256.decode_public_key(public_key)
    return {KEY_KTY: KTY_EC2, KEY_CRV: CRV_P256, KEY_X: public_key[1:33], KEY_Y: public_key[33:]}


def public_key_from_cose_key(key: object) -> bytes:
    """65-byte public key from an EC2 P-256 COSE_Key; MalformedCoseError otherwise."""
    if not isinstance(key, dict):
        raise MalformedCoseError("COSE_Key must be a map")
    kty = key.get(KEY_KTY)
    crv = key.get(KEY_CRV)
    if not _is_int(kty) or not _is_int(crv) or kty != KTY_EC2 or crv != CRV_P256:
        raise AlgorithmError("COSE_Key is not an EC2 P-256 key")
    x = key.get(KEY_X)
    y = key.get(KEY_Y)
    if not isinstance(x, bytes) or not isinstance(y, bytes) or len(x) != 32 or len(y) != 32:
        raise MalformedCoseError("COSE_Key x and y must be 32 bytes each")
    raw = b"\x04" + x + y
    try:
        p256.decode_public_key(raw)
    except LocalProtocolError:
        raise MalformedCoseError("COSE_Key is not a point on P-256") from None
    return raw
