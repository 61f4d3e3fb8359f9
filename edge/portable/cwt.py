"""Device certificates: CWTs (RFC 8392) signed by the registrar.

Theory of operation
-------------------
A device certificate is a COSE_Sign1 (tag 18) made by the registrar's P-256 key whose
payload is a CWT claims set:

    1 iss   text  registrar name                      RFC 8392 §3.1.1
    2 sub   text  device id (equals the message kid)  §3.1.2
    4 exp   int   end of validity, Unix seconds       §3.1.4
    6 iat   int   issue time, Unix seconds            §3.1.6
    8 cnf   {1: COSE_Key}  the device's public key    RFC 8747 §3.1
    "meters" [text]  meter serials the device may report for (application claim)

The protected header's kid is the registrar key id: the first 8 bytes of SHA-256 over
the registrar's 65-byte public key.  A certificate whose kid names another key is
"foreign" (issued by another registrar); one whose kid matches but whose signature does
not verify has been altered.  Validity is [iat, exp) against a `now` the caller passes.
Revocation is a set of device ids the caller passes (the ledger keeps it).

Portable: runs on MicroPython, so a gateway can check a peer or its own certificate.
"""

import hashlib

from . import cbor, cose
from .errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificateSignatureError,
    CoseError,
    DecodeError,
    ForeignCertificateError,
    LocalProtocolError,
    MalformedCertificateError,
    RevokedCertificateError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

CLAIM_ISS = 1
CLAIM_SUB = 2
CLAIM_EXP = 4
CLAIM_IAT = 6
CLAIM_CNF = 8
CNF_COSE_KEY = 1
CLAIM_METERS = "meters"

MAX_METERS = 64
MAX_TEXT_CHARS = 64
KEY_ID_BYTES = 8


def key_id(public_key: bytes) -> bytes:
    """The registrar key id: SHA-256(public key)[:8]."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES]


class DeviceCertificate:
    """The verified claims of a device certificate."""

    def __init__(
        self,
        issuer: str,
        device_id: str,
        public_key: bytes,
        issued_at: int,
        expires_at: int,
        meters: list[str],
    ) -> None:
        self.issuer = issuer
        self.device_id = device_id
        self.public_key = public_key
        self.issued_at = issued_at
        self.expires_at = expires_at
        self.meters = meters

    def claims(self) -> dict[object, object]:
        return {
            CLAIM_ISS: self.issuer,
            CLAIM_SUB: self.device_id,
            CLAIM_EXP: self.expires_at,
            CLAIM_IAT: self.issued_at,
            CLAIM_CNF: {CNF_COSE_KEY: cose.cose_key(self.public_key)},
            CLAIM_METERS: list(self.meters),
        }


def issue(
    cert: DeviceCertificate,
    registrar_public_key: bytes,
    sign: "Callable[[bytes], bytes]",
) -> bytes:
    """Encode and sign `cert` with the registrar key (`sign(tbs) -> r || s`)."""
    if not cert.issued_at < cert.expires_at:
        raise LocalProtocolError("certificate must expire after it is issued")
    claims = cert.claims()
    try:
        _claims(claims)  # what parse would refuse, issue refuses too
    except MalformedCertificateError as exc:
        raise LocalProtocolError("invalid certificate: " + str(exc)) from None
    payload = cbor.encode(claims)
    return cose.sign1(payload, key_id(registrar_public_key), sign)


def parse(data: bytes) -> "tuple[cose.Sign1, DeviceCertificate]":
    """Structure and claims of a certificate, without checking its signature."""
    try:
        message = cose.parse(data)
        claims = cbor.decode(message.payload, max_depth=6)
    except (CoseError, DecodeError) as exc:
        raise MalformedCertificateError("certificate: " + str(exc)) from None
    if not isinstance(claims, dict):
        raise MalformedCertificateError("certificate claims must be a map")
    return message, _claims(claims)


def _text_claim(claims: dict[object, object], label: object) -> str:
    value = claims.get(label)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_CHARS:
        raise MalformedCertificateError("claim " + repr(label) + " must be short text")
    return value


def _int_claim(claims: dict[object, object], label: int) -> int:
    value = claims.get(label)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedCertificateError("claim " + str(label) + " must be an integer")
    return value


def _claims(claims: dict[object, object]) -> DeviceCertificate:
    known = (CLAIM_ISS, CLAIM_SUB, CLAIM_EXP, CLAIM_IAT, CLAIM_CNF, CLAIM_METERS)
    for label in claims:
        if label not in known:
            raise MalformedCertificateError("unexpected claim " + repr(label))
    cnf = claims.get(CLAIM_CNF)
    if not isinstance(cnf, dict) or CNF_COSE_KEY not in cnf:
        raise MalformedCertificateError("cnf must hold a COSE_Key")
    try:
        public_key = cose.public_key_from_cose_key(cnf[CNF_COSE_KEY])
    except CoseError as exc:
        raise MalformedCertificateError("cnf: " + str(exc)) from None
    meters = claims.get(CLAIM_METERS, [])
    if not isinstance(meters, list) or len(meters) > MAX_METERS:
        raise MalformedCertificateError("meters must be a list of serials")
    for serial in meters:
        if not isinstance(serial, str) or not 0 < len(serial) <= MAX_TEXT_CHARS:
            raise MalformedCertificateError("meter serials must be short text")
    return DeviceCertificate(
        _text_claim(claims, CLAIM_ISS),
        _text_claim(claims, CLAIM_SUB),
        public_key,
        _int_claim(claims, CLAIM_IAT),
        _int_claim(claims, CLAIM_EXP),
        list(meters),
    )


def verify(
    data: bytes,
    registrar_public_key: bytes,
    now_s: int,
    verify_fn: "Callable[[bytes, bytes, bytes], bool]",
    revoked: "set[str] | None" = None,
) -> DeviceCertificate:
    """Claims of a certificate that chains to the registrar, is valid at `now_s` and is
    not revoked; otherwise the CertificateError subclass that says why."""
    message, cert = parse(data)
    if message.kid != key_id(registrar_public_key):
        raise ForeignCertificateError("certificate was issued by another registrar")
    if not verify_fn(registrar_public_key, message.to_be_signed(), message.signature):
        raise CertificateSignatureError("registrar signature does not verify")
    if now_s < cert.issued_at:
        raise CertificateNotYetValidError("certificate is valid from " + str(cert.issued_at))
    if now_s >= cert.expires_at:
        raise CertificateExpiredError("certificate expired at " + str(cert.expires_at))
    if revoked is not None and cert.device_id in revoked:
        raise RevokedCertificateError("device " + cert.device_id + " is revoked")
    return cert
