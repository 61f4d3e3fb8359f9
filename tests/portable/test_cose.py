"""COSE_Sign1: round trip, every structural error with its code, COSE_Key, and interop
with pycose 1.1 (run from its own environment, .venv-pycose)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge import crypto
from edge.portable import cbor, cose, p256
from edge.portable.cbor import Tag
from edge.portable.errors import (
    AlgorithmError,
    BadSignatureError,
    CoseError,
    DecodeError,
    LimitError,
    LocalProtocolError,
    MalformedCoseError,
    RemoteProtocolError,
    WrongTagError,
)

from .helpers import DEVICE_SECRET, RFC6979_PUBLIC, RFC6979_TEST_VECTOR_KEY

ROOT = Path(__file__).resolve().parents[2]
PYCOSE_PYTHON = ROOT / ".venv-pycose" / "bin" / "python"
PEER = Path(__file__).resolve().parent / "pycose_peer.py"

KEY = p256.SigningKey.from_bytes(DEVICE_SECRET)
KID = b"gw-0001"
PAYLOAD = cbor.encode({0: 1, 1: "gw-0001"})


def _message(**overrides: object) -> bytes:
    """A COSE_Sign1 built by hand so that each field can be made wrong on its own."""
    protected = overrides.get("protected", cose.protected_header(KID))
    assert isinstance(protected, bytes)
    payload = overrides.get("payload", PAYLOAD)
    assert isinstance(payload, bytes)
    signature = overrides.get("signature", KEY.sign(cose.sig_structure(protected, payload)))
    body = [protected, overrides.get("unprotected", {}), payload, signature]
    tag = overrides.get("tag", cose.COSE_SIGN1_TAG)
    item: object = body if tag is None else Tag(int(str(tag)), body)
    return cbor.encode(item)


def test_round_trip() -> None:
    data = cose.sign1(PAYLOAD, KID, KEY.sign)
    assert data == _message()
    message = cose.parse(data)
    assert (message.alg, message.kid, message.payload) == (cose.ALG_ES256, KID, PAYLOAD)
    assert message.kcwt is None
    cose.verify(message, KEY.public_key())
    cose.verify(message, KEY.public_key(), crypto.verify)


def test_round_trip_with_kcwt() -> None:
    data = cose.sign1(PAYLOAD, KID, KEY.sign, kcwt=b"\xd2\x84")
    message = cose.parse(data)
    assert message.kcwt == b"\xd2\x84"
    assert message.unprotected == {cose.HDR_KCWT: b"\xd2\x84"}
    cose.verify(message, KEY.public_key())


def test_native_signer_gives_the_same_bytes() -> None:
    native = crypto.SigningKey.from_bytes(DEVICE_SECRET)
    assert cose.sign1(PAYLOAD, KID, native.sign) == cose.sign1(PAYLOAD, KID, KEY.sign)


def _protected(header: dict[object, object]) -> bytes:
    return cbor.encode(header)


CASES: list[tuple[str, dict[str, object], type[RemoteProtocolError]]] = [
    ("untagged", {"tag": None}, WrongTagError),
    ("tag 98 (COSE_Sign)", {"tag": 98}, WrongTagError),
    ("tag 17 (COSE_Mac0)", {"tag": 17}, WrongTagError),
    ("protected not bytes", {"protected_raw": {1: -7}}, MalformedCoseError),
    ("protected not CBOR", {"protected": b"\xa1\x01"}, MalformedCoseError),
    ("protected not a map", {"protected": _protected([1, -7])}, MalformedCoseError),  # type: ignore[dict-item]
    ("protected unsorted", {"protected": bytes.fromhex("a204416b0126")}, MalformedCoseError),
    ("alg missing", {"protected": _protected({4: KID})}, AlgorithmError),
    ("alg EdDSA", {"protected": _protected({1: -8, 4: KID})}, AlgorithmError),
    ("alg ES384", {"protected": _protected({1: -35, 4: KID})}, AlgorithmError),
    ("alg as text", {"protected": _protected({1: "ES256", 4: KID})}, AlgorithmError),
    ("alg as float -7.0", {"protected": _protected({1: -7.0, 4: KID})}, AlgorithmError),
    ("kid missing", {"protected": _protected({1: -7})}, MalformedCoseError),
    ("kid empty", {"protected": _protected({1: -7, 4: b""})}, MalformedCoseError),
    ("kid as text", {"protected": _protected({1: -7, 4: "gw"})}, MalformedCoseError),
    ("kid too long", {"protected": _protected({1: -7, 4: b"k" * 65})}, MalformedCoseError),
    ("crit label", {"protected": _protected({1: -7, 2: [1], 4: KID})}, MalformedCoseError),
    ("text label", {"protected": _protected({1: -7, 4: KID, "x": 1})}, MalformedCoseError),
    ("unprotected alg", {"unprotected": {1: -7}}, MalformedCoseError),
    ("unprotected kid", {"unprotected": {4: KID}}, MalformedCoseError),
    ("kcwt not bytes", {"unprotected": {13: "cert"}}, MalformedCoseError),
    ("kcwt too long", {"unprotected": {13: b"c" * 1025}}, MalformedCoseError),
    ("unprotected not a map", {"unprotected": []}, MalformedCoseError),
    ("payload not bytes", {"body": [None, {}, "text", b"s" * 64]}, MalformedCoseError),
    ("nil payload", {"payload_nil": True}, MalformedCoseError),
    ("payload too long", {"payload": b"p" * (cose.MAX_PAYLOAD_BYTES + 1)}, MalformedCoseError),
    ("signature too short", {"signature": b"s" * 63}, MalformedCoseError),
    ("signature too long", {"signature": b"s" * 65}, MalformedCoseError),
    ("signature DER", {"signature": b"\x30" + b"s" * 71}, MalformedCoseError),
    ("signature text", {"signature": "s" * 64}, MalformedCoseError),
    ("three items", {"items": 3}, MalformedCoseError),
    ("five items", {"items": 5}, MalformedCoseError),
    ("body a map", {"body_map": True}, MalformedCoseError),
]


def _case_bytes(overrides: dict[str, object]) -> bytes:
    good = cbor.decode(_message())
    assert isinstance(good, Tag) and isinstance(good.value, list)
    body: list[object] = list(good.value)
    if "protected_raw" in overrides:
        body[0] = overrides["protected_raw"]
        return cbor.encode(Tag(18, body))
    if "body" in overrides:
        body = list(overrides["body"])  # type: ignore[call-overload]
        body[0] = cose.protected_header(KID)
        return cbor.encode(Tag(18, body))
    if "payload_nil" in overrides:
        body[2] = None
        return cbor.encode(Tag(18, body))
    if "items" in overrides:
        count = int(str(overrides["items"]))
        return cbor.encode(Tag(18, ([*body, b""])[:count]))
    if "body_map" in overrides:
        return cbor.encode(Tag(18, dict(enumerate(body))))
    return _message(**overrides)


@pytest.mark.parametrize(("name", "overrides", "error"), CASES, ids=[c[0] for c in CASES])
def test_parse_errors(name: str, overrides: dict[str, object], error: type[CoseError]) -> None:
    data = _case_bytes(overrides)
    with pytest.raises(error) as info:
        cose.parse(data)
    assert info.value.code == error.code
    assert info.value.code.startswith("cose.")


def test_cbor_errors_pass_through_with_their_code() -> None:
    data = cose.sign1(PAYLOAD, KID, KEY.sign)
    with pytest.raises(DecodeError) as info:
        cose.parse(data[:-1])
    assert info.value.code == "cbor.truncated"
    with pytest.raises(DecodeError) as info:
        cose.parse(data + b"\x00")
    assert info.value.code == "cbor.trailing"
    with pytest.raises(LimitError):
        cose.parse(b"\x00" * (cose.MAX_MESSAGE_BYTES + 1))


def test_bad_signature() -> None:
    message = cose.parse(_message())
    other = p256.SigningKey.from_bytes(RFC6979_TEST_VECTOR_KEY).public_key()
    for verify_fn in (p256.verify, crypto.verify):
        with pytest.raises(BadSignatureError) as info:
            cose.verify(message, other, verify_fn)
        assert info.value.code == "cose.signature"
    forged = cose.parse(_message(signature=b"\x01" * 64))
    with pytest.raises(BadSignatureError):
        cose.verify(forged, KEY.public_key())
    # The signature covers the protected bytes and the payload.
    for overrides in ({"payload": PAYLOAD + b"\x00"}, {"protected": cose.protected_header(b"x")}):
        signature = cose.parse(_message()).signature
        moved = cose.parse(_message(signature=signature, **overrides))
        with pytest.raises(BadSignatureError):
            cose.verify(moved, KEY.public_key())


def test_sign1_misuse() -> None:
    for kid, payload in ((b"", PAYLOAD), (b"k" * 65, PAYLOAD), (KID, b"p" * 16385)):
        with pytest.raises(LocalProtocolError):
            cose.sign1(payload, kid, KEY.sign)
    with pytest.raises(LocalProtocolError):
        cose.sign1(PAYLOAD, KID, lambda tbs: b"short")
    with pytest.raises(LocalProtocolError):
        cose.sign1(PAYLOAD, KID, KEY.sign, kcwt=b"c" * (cose.MAX_KCWT_BYTES + 1))
    assert cose.parse(cose.sign1(PAYLOAD, KID, KEY.sign, kcwt=b"c" * cose.MAX_KCWT_BYTES))


def test_cose_key() -> None:
    key = cose.cose_key(RFC6979_PUBLIC)
    assert key == {1: 2, -1: 1, -2: RFC6979_PUBLIC[1:33], -3: RFC6979_PUBLIC[33:]}
    assert cose.public_key_from_cose_key(cbor.decode(cbor.encode(key))) == RFC6979_PUBLIC
    bad: list[tuple[object, type[CoseError]]] = [
        ([], MalformedCoseError),
        ({**key, 1: 1}, AlgorithmError),  # OKP
        ({**key, -1: 2}, AlgorithmError),  # P-384
        ({**key, 1: 2.0}, AlgorithmError),
        ({**key, -1: True}, AlgorithmError),
        ({**key, -2: b"x" * 31}, MalformedCoseError),
        ({k: v for k, v in key.items() if k != -3}, MalformedCoseError),
        ({**key, -3: bytes(32)}, MalformedCoseError),  # off the curve
    ]
    for value, error in bad:
        with pytest.raises(error):
            cose.public_key_from_cose_key(value)
    with pytest.raises(LocalProtocolError):
        cose.cose_key(b"\x04" + bytes(64))


# -- interop with pycose 1.1 ------------------------------------------------------------


def _pycose(request: dict[str, str]) -> dict[str, object]:
    if not PYCOSE_PYTHON.exists():
        pytest.fail(f"{PYCOSE_PYTHON} is missing: run ./dev to create .venv-pycose")
    proc = subprocess.run(
        [str(PYCOSE_PYTHON), str(PEER)],
        input=json.dumps(request).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    answer = json.loads(proc.stdout)
    assert isinstance(answer, dict)
    return answer


@pytest.mark.interop
def test_pycose_verifies_our_message() -> None:
    data = cose.sign1(PAYLOAD, KID, KEY.sign, kcwt=b"\x01\x02")
    cose_key = cbor.encode(cose.cose_key(KEY.public_key())).hex()
    answer = _pycose({"op": "verify", "message": data.hex(), "cose_key": cose_key})
    assert answer == {"ok": True, "payload": PAYLOAD.hex(), "kid": KID.hex()}
    tampered = data[:-1] + bytes([data[-1] ^ 0x01])
    answer = _pycose({"op": "verify", "message": tampered.hex(), "cose_key": cose_key})
    assert answer["ok"] is False


@pytest.mark.interop
def test_we_verify_a_pycose_message() -> None:
    public = KEY.public_key()
    answer = _pycose(
        {
            "op": "sign",
            "d": DEVICE_SECRET.hex(),
            "x": public[1:33].hex(),
            "y": public[33:].hex(),
            "kid": KID.hex(),
            "payload": PAYLOAD.hex(),
        }
    )
    data = bytes.fromhex(str(answer["message"]))
    message = cose.parse(data)
    assert (message.kid, message.payload) == (KID, PAYLOAD)
    cose.verify(message, public)
    cose.verify(message, public, crypto.verify)
    rejected = 0
    for index in range(len(data)):
        flipped = data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]
        try:
            cose.verify(cose.parse(flipped), public)
        except RemoteProtocolError:
            rejected += 1
    assert rejected == len(data)
