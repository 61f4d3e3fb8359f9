"""Device certificates: issue, parse, verify, and each CertificateError with its code."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import crypto
from edge.portable import cbor, cose, cwt, p256
from edge.portable.cwt import DeviceCertificate
from edge.portable.errors import (
    CertificateError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificateSignatureError,
    ForeignCertificateError,
    LocalProtocolError,
    MalformedCertificateError,
    RevokedCertificateError,
)

from .helpers import DEVICE_SECRET, NOW_S, REGISTRAR_SECRET

REGISTRAR = p256.SigningKey.from_bytes(REGISTRAR_SECRET)
OTHER_REGISTRAR = p256.SigningKey.from_bytes(bytes(31) + b"\x09")
DEVICE = p256.SigningKey.from_bytes(DEVICE_SECRET)
YEAR_S = 365 * 86400


def _cert(**changes: Any) -> DeviceCertificate:
    fields: dict[str, Any] = {
        "issuer": "utility-north",
        "device_id": "gw-0001",
        "public_key": DEVICE.public_key(),
        "issued_at": NOW_S - 10,
        "expires_at": NOW_S + YEAR_S,
        "meters": ["ISK5-0001", "ISK5-0002"],
    }
    fields.update(changes)
    return DeviceCertificate(**fields)


def _issue(cert: DeviceCertificate | None = None, registrar: p256.SigningKey = REGISTRAR) -> bytes:
    return cwt.issue(cert or _cert(), registrar.public_key(), registrar.sign)


def _verify(data: bytes, now_s: int = NOW_S, revoked: set[str] | None = None) -> DeviceCertificate:
    return cwt.verify(data, REGISTRAR.public_key(), now_s, p256.verify, revoked)


def _same(a: DeviceCertificate, b: DeviceCertificate) -> bool:
    fields = ("issuer", "device_id", "public_key", "issued_at", "expires_at", "meters")
    return all(getattr(a, name) == getattr(b, name) for name in fields)


def test_issue_parse_verify() -> None:
    data = _issue()
    message, parsed = cwt.parse(data)
    assert message.kid == cwt.key_id(REGISTRAR.public_key())
    assert len(message.kid) == 8
    assert _same(parsed, _cert())
    assert _same(_verify(data), _cert())
    assert _same(cwt.verify(data, REGISTRAR.public_key(), NOW_S, crypto.verify), _cert())
    assert _same(_verify(data, revoked={"gw-0002"}), _cert())
    claims = cbor.decode(message.payload)
    assert isinstance(claims, dict)
    assert claims[cwt.CLAIM_CNF] == {1: cose.cose_key(DEVICE.public_key())}
    assert claims["meters"] == ["ISK5-0001", "ISK5-0002"]


def test_native_registrar_issues_the_same_bytes() -> None:
    native = crypto.SigningKey.from_bytes(REGISTRAR_SECRET)
    assert cwt.issue(_cert(), native.public_key(), native.sign) == _issue()


def test_validity_window_is_half_open() -> None:
    data = _issue()
    _verify(data, NOW_S - 10)
    _verify(data, NOW_S + YEAR_S - 1)
    with pytest.raises(CertificateExpiredError) as info:
        _verify(data, NOW_S + YEAR_S)
    assert info.value.code == "cert.expired"
    with pytest.raises(CertificateNotYetValidError) as info2:
        _verify(data, NOW_S - 11)
    assert info2.value.code == "cert.not_yet_valid"


def test_foreign_registrar() -> None:
    data = _issue(registrar=OTHER_REGISTRAR)
    with pytest.raises(ForeignCertificateError) as info:
        _verify(data)
    assert info.value.code == "cert.foreign"


def test_altered_certificate() -> None:
    data = _issue()
    message, _ = cwt.parse(data)
    claims = cbor.decode(message.payload)
    assert isinstance(claims, dict)
    claims[cwt.CLAIM_EXP] = NOW_S + 100 * YEAR_S
    forged = cbor.encode(
        cbor.Tag(18, [message.protected, {}, cbor.encode(claims), message.signature])
    )
    for verify_fn in (p256.verify, crypto.verify):
        with pytest.raises(CertificateSignatureError) as info:
            cwt.verify(forged, REGISTRAR.public_key(), NOW_S, verify_fn)
        assert info.value.code == "cert.signature"
    # A certificate signed by another key but naming our registrar's kid.
    payload = cbor.encode(_cert().claims())
    impostor = cose.sign1(payload, cwt.key_id(REGISTRAR.public_key()), OTHER_REGISTRAR.sign)
    with pytest.raises(CertificateSignatureError):
        _verify(impostor)


def test_revoked() -> None:
    with pytest.raises(RevokedCertificateError) as info:
        _verify(_issue(), revoked={"gw-0001"})
    assert info.value.code == "cert.revoked"


def _signed_claims(claims: object) -> bytes:
    return cose.sign1(cbor.encode(claims), cwt.key_id(REGISTRAR.public_key()), REGISTRAR.sign)


def _claims(**changes: Any) -> dict[Any, Any]:
    claims = _cert().claims()
    for key, value in changes.items():
        label: object = int(key[1:]) if key.startswith("c") else key
        if value is None:
            del claims[label]
        else:
            claims[label] = value
    return claims


MALFORMED: list[tuple[str, object]] = [
    ("claims not a map", [1, 2]),
    ("unknown claim", _claims(c7=b"cti")),
    ("unknown text claim", _claims(role="admin")),
    ("iss missing", _claims(c1=None)),
    ("iss empty", _claims(c1="")),
    ("iss too long", _claims(c1="r" * 65)),
    ("sub not text", _claims(c2=b"gw")),
    ("exp missing", _claims(c4=None)),
    ("exp float", _claims(c4=float(NOW_S + YEAR_S))),
    ("iat true", _claims(c6=True)),
    ("cnf missing", _claims(c8=None)),
    ("cnf without key", _claims(c8={2: b"x"})),
    ("cnf key off curve", _claims(c8={1: {1: 2, -1: 1, -2: bytes(32), -3: bytes(32)}})),
    ("cnf key OKP", _claims(c8={1: {1: 1, -1: 6, -2: bytes(32)}})),
    ("meters not a list", _claims(meters="ISK5-0001")),
    ("meters too many", _claims(meters=[f"m{i}" for i in range(65)])),
    ("meter serial empty", _claims(meters=[""])),
    ("meter serial not text", _claims(meters=[1])),
]


@pytest.mark.parametrize(("name", "claims"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_claims(name: str, claims: object) -> None:
    data = _signed_claims(claims)
    for call in (lambda: cwt.parse(data), lambda: _verify(data)):
        with pytest.raises(MalformedCertificateError) as info:
            call()
        assert info.value.code == "cert.structure"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\xd2\x80", bytes.fromhex("d1840000000040"), b"\xa0", b"\xd2" + b"\x84" * 3],
)
def test_malformed_bytes(data: bytes) -> None:
    with pytest.raises(MalformedCertificateError) as info:
        _verify(data)
    assert info.value.code == "cert.structure"
    assert isinstance(info.value, CertificateError)


def test_meters_claim_is_optional() -> None:
    data = _signed_claims(_claims(meters=None))
    assert _verify(data).meters == []


def test_issue_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        _issue(_cert(issued_at=NOW_S, expires_at=NOW_S))
    bad = (
        {"meters": [f"m{i}" for i in range(65)]},
        {"meters": [""]},
        {"issuer": ""},
        {"device_id": "g" * 65},
    )
    for changes in bad:
        with pytest.raises(LocalProtocolError):
            _issue(_cert(**changes))
    with pytest.raises(LocalProtocolError):
        _issue(_cert(public_key=b"\x04" + bytes(64)))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_mutated_certificates_raise_only_certificate_errors(data: st.DataObject) -> None:
    cert = bytearray(_issue())
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        index = data.draw(st.integers(min_value=0, max_value=len(cert) - 1))
        cert[index] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        _verify(bytes(cert))
    except CertificateError as exc:
        assert exc.code.startswith("cert.")
