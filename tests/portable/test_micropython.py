"""The portable core under the real MicroPython interpreter gives the same bytes and the
same error codes as under CPython.

All cases go to MicroPython in one launch (tests/portable/mpy_side.py reads them as JSON
and prints one JSON line each); CPython runs the very same `handle` on the same cases.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import crypto
from edge.portable import batch, cbor, cose, cwt, p256
from tests import mpy

from . import mpy_side
from .helpers import (
    DEVICE_SECRET,
    NOW_S,
    REGISTRAR_SECRET,
    RFC6979_PUBLIC,
    RFC6979_SIGNATURES,
    RFC6979_TEST_VECTOR_KEY,
    typical_batch,
)
from .test_cbor import REJECTIONS

pytestmark = pytest.mark.micropython

SEED = 20261121
SIDE_SCRIPT = Path(mpy_side.__file__).read_text()
DEVICE = p256.SigningKey.from_bytes(DEVICE_SECRET)
REGISTRAR = p256.SigningKey.from_bytes(REGISTRAR_SECRET)


def _double_hex(value: float) -> str:
    return struct.pack(">d", value).hex()


def _spec(value: object) -> dict[str, str]:
    if isinstance(value, float):
        return {"f": _double_hex(value)}
    if isinstance(value, int):
        return {"i": str(value)}
    return {"s": str(value)}


def _batch_case(value: batch.Batch, secret: bytes = DEVICE_SECRET) -> dict[str, Any]:
    return {
        "op": "sign_batch",
        "secret": secret.hex(),
        "device_id": value.device_id,
        "seq": str(value.seq),
        "sent_at": str(value.sent_at_s),
        "synced": value.clock_synced,
        "groups": [
            [
                group.meter_id,
                str(group.read_time_s),
                [[r.name, _spec(r.value), r.unit] for r in group.records],
            ]
            for group in value.meters
        ],
    }


def _cert_case() -> dict[str, Any]:
    return {
        "op": "cert_issue",
        "secret": REGISTRAR_SECRET.hex(),
        "issuer": "utility-north",
        "device_id": "gw-0001",
        "public_key": DEVICE.public_key().hex(),
        "iat": str(NOW_S - 10),
        "exp": str(NOW_S + 86400),
        "meters": ["ISK5-0001", "ISK5-0002"],
    }


def _cert(case: dict[str, Any]) -> bytes:
    return cwt.issue(mpy_side.make_cert(case), REGISTRAR.public_key(), REGISTRAR.sign)


def _other_batch() -> batch.Batch:
    groups = [
        batch.MeterGroup("m-1", NOW_S, [batch.Record.status("timeout")]),
        batch.MeterGroup(
            "gas.7",
            NOW_S - 60,
            [
                batch.Record("0-1:24.2.1", 12345.5, "m3"),
                batch.Record("1-0:1.7.0", -250, "W"),
                batch.Record("1-0:13.7.0", 0.1, "/"),  # a double: exact only at 64 bits
                batch.Record("1-0:14.7.0", 49.98046875, "Hz"),
                batch.Record("1-0:32.7.0", 6.097555160522461e-5, "V"),  # half subnormal
                batch.Record("1-0:31.7.0", 65520.0, "A"),  # just above half range
            ],
        ),
    ]
    return batch.Batch("gw.2", 2**40, 0, False, groups)


FLOATS = [
    0.0, -0.0, 1.0, 1.5, 230.5, 65504.0, 65520.0, 100000.0, 0.1, 1.1, 1.0e300, -4.1,
    5.960464477539063e-8, 6.097555160522461e-5, 6.103515625e-5, 1.401298464324817e-45,
    1.1754942106924411e-38, 3.4028234663852886e38, 1.0000001192092896,
    float("inf"), float("-inf"), float("nan"),
]  # fmt: skip


def _outcome(kind: str, data: bytes, **extra: object) -> dict[str, Any]:
    return {"op": "outcome", "kind": kind, "data": data.hex(), **extra}


def _raw_sign1(header: dict[object, object], unprotected: object, signature: bytes) -> bytes:
    return cbor.encode(cbor.Tag(18, [cbor.encode(header), unprotected, b"", signature]))


def _malformed_corpus() -> list[dict[str, Any]]:
    """Rejections from the CBOR, COSE, batch and certificate tests, plus a few valid ones."""
    rng = random.Random(SEED)
    cases = [_outcome("cbor", bytes.fromhex(hex_)) for hex_, _ in REJECTIONS]
    good = batch.sign(typical_batch(), DEVICE.sign)
    message = cose.parse(good)
    pack = cbor.decode(message.payload)
    assert isinstance(pack, dict)

    def resigned(obj: object, kid: bytes = b"gw-0001") -> bytes:
        return cose.sign1(cbor.encode(obj), kid, DEVICE.sign)

    bad_version = {**pack, 0: 2}
    bad_unit = cbor.decode(message.payload)
    assert isinstance(bad_unit, dict)
    bad_unit[5][2][1] = "V"
    cases += [
        _outcome("batch", good),
        _outcome("signed-batch", good, public_key=DEVICE.public_key().hex()),
        _outcome("signed-batch", good, public_key=RFC6979_PUBLIC.hex()),
        _outcome("batch", resigned(pack, b"gw-0002")),
        _outcome("batch", resigned(bad_version)),
        _outcome("batch", resigned(bad_unit)),
        _outcome("batch", resigned([1])),
        _outcome("cose", good[:-1]),
        _outcome("cose", good + b"\x00"),
        _outcome("cose", good[1:]),  # untagged
        _outcome("cose", _raw_sign1({1: -7.0, 4: b"k"}, {}, bytes(64))),
        _outcome("cose", _raw_sign1({1: -7, 4: b"k"}, {}, bytes(63))),
        _outcome("cose", _raw_sign1({1: -7}, {}, bytes(64))),
        _outcome("cose", _raw_sign1({1: -7, 4: b"k"}, {5: 1}, bytes(64))),
        _outcome("cbor", b"\x67" + "\u6c34\U00010151".encode()),
    ]  # fmt: skip
    cert_case = _cert_case()
    cert = _cert(cert_case)
    registrar = REGISTRAR.public_key().hex()
    for now, revoked in ((NOW_S, []), (NOW_S + 86400, []), (NOW_S - 11, []), (NOW_S, ["gw-0001"])):
        cases.append(_outcome("cert", cert, registrar=registrar, now=now, revoked=revoked))
    altered = bytearray(cert)
    altered[-70] ^= 0x01  # inside the payload
    cases.append(_outcome("cert", bytes(altered), registrar=registrar, now=NOW_S))
    cases.append(_outcome("cert", cert, registrar=DEVICE.public_key().hex(), now=NOW_S))
    cases.append(_outcome("cert", cert[:-3], registrar=registrar, now=NOW_S))
    # Random byte flips of valid messages, seeded.
    for _ in range(10):
        data = bytearray(rng.choice([good, cert]))
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        cases.append(_outcome("batch", bytes(data)))
    return cases


_HYPOTHESIS_CORPUS: list[bytes] = []


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    st.binary(min_size=1, max_size=24)
    | st.lists(st.sampled_from([b"\xa1", b"\x82", b"\xd2", b"\x61\xc3", b"\xf9", b"\x18", b"\x00"]),
               min_size=1, max_size=8).map(b"".join)
)  # fmt: skip
def _collect_hypothesis_bytes(data: bytes) -> None:
    _HYPOTHESIS_CORPUS.append(data)


_HYPOTHESIS_FLOATS: list[float] = []


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.floats() | st.floats(width=32) | st.floats(width=16) | st.floats(max_value=1e-4))
def _collect_hypothesis_floats(value: float) -> None:
    _HYPOTHESIS_FLOATS.append(value)


def _random_batch(rng: random.Random) -> batch.Batch:
    """A batch of seeded random shape: integer registers and binary-fraction values."""
    quantities = [name for name, unit in batch.OBIS_UNITS.items()]
    groups = []
    for index in range(rng.randrange(1, 5)):
        records = []
        for name in rng.sample(quantities, rng.randrange(1, 8)):
            unit = batch.OBIS_UNITS[name]
            if unit in batch.SUM_UNITS:
                value: int | float = rng.randrange(2**48)
            else:
                value = rng.randrange(-(2**20), 2**20) / 2 ** rng.randrange(0, 12)
            records.append(batch.Record(name, value, unit))
        if rng.random() < 0.3:
            records.append(batch.Record.status(rng.choice(["ok", "timeout", "crc"])))
        groups.append(batch.MeterGroup(f"m-{index}", rng.randrange(2**32), records))
    return batch.Batch(
        "gw-r", rng.randrange(2**63), rng.randrange(2**40), rng.random() < 0.5, groups
    )


def _hypothesis_corpus() -> list[dict[str, Any]]:
    if not _HYPOTHESIS_CORPUS:
        _collect_hypothesis_bytes()
    return [_outcome("cbor", data) for data in _HYPOTHESIS_CORPUS]


def _floats() -> list[float]:
    if not _HYPOTHESIS_FLOATS:
        _collect_hypothesis_floats()
    return _HYPOTHESIS_FLOATS


def _all_cases() -> dict[str, list[dict[str, Any]]]:
    return {
        "batches": [
            _batch_case(typical_batch()),
            _batch_case(typical_batch("gw-0002", 0)),
            _batch_case(_other_batch()),
            *(_batch_case(_random_batch(random.Random(SEED + i))) for i in range(6)),
        ],
        "ecdsa": [
            {"op": "ecdsa", "secret": RFC6979_TEST_VECTOR_KEY.hex(), "message": message.hex()}
            for message in sorted(RFC6979_SIGNATURES)
        ],
        "cert_issue": [_cert_case()],
        "floats": [{"op": "floats", "values": [_double_hex(v) for v in FLOATS + _floats()]}],
        "corpus": _malformed_corpus() + _hypothesis_corpus(),
    }


@pytest.fixture(scope="module")
def answers() -> dict[str, list[Any]]:
    """Every case's answer from MicroPython, in one interpreter launch."""
    groups = _all_cases()
    flat = [case for cases in groups.values() for case in cases]
    out = mpy.run(SIDE_SCRIPT, stdin=json.dumps(flat).encode(), timeout_s=120)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [line["index"] for line in lines] == list(range(len(flat))), out[-2000:]
    result: dict[str, list[Any]] = {}
    start = 0
    for name, cases in groups.items():
        result[name] = [line["answer"] for line in lines[start : start + len(cases)]]
        start += len(cases)
    return result


def test_signed_batches_are_byte_identical(answers: dict[str, list[Any]]) -> None:
    cases = _all_cases()["batches"]
    native = crypto.SigningKey.from_bytes(DEVICE_SECRET)
    for case, from_mpy in zip(cases, answers["batches"], strict=True):
        value = mpy_side.make_batch(case)
        ours = batch.sign(value, DEVICE.sign)
        assert from_mpy == ours.hex(), f"seed {SEED}"
        assert batch.sign(value, native.sign) == ours
        message, opened = batch.open_message(bytes.fromhex(from_mpy))
        cose.verify(message, DEVICE.public_key(), crypto.verify)
        assert opened.meters == value.meters


def test_rfc6979_vectors_on_micropython(answers: dict[str, list[Any]]) -> None:
    for message, (public, signature, verified) in zip(
        sorted(RFC6979_SIGNATURES), answers["ecdsa"], strict=True
    ):
        assert bytes.fromhex(public) == RFC6979_PUBLIC
        assert bytes.fromhex(signature) == RFC6979_SIGNATURES[message]
        assert verified is True


def test_certificates_cross_interpreters(answers: dict[str, list[Any]]) -> None:
    case = _cert_case()
    from_mpy = bytes.fromhex(answers["cert_issue"][0])
    assert from_mpy == _cert(case)
    cert = cwt.verify(from_mpy, REGISTRAR.public_key(), NOW_S, crypto.verify)
    assert cert.device_id == "gw-0001"
    # ...and the other way: a certificate issued here verifies there (the corpus's first
    # certificate case), with the same answer.
    corpus = _all_cases()["corpus"]
    index = next(i for i, c in enumerate(corpus) if c["kind"] == "cert")
    assert answers["corpus"][index] == "ok:gw-0001:" + DEVICE.public_key().hex()


def test_floats_encode_alike(answers: dict[str, list[Any]]) -> None:
    case = _all_cases()["floats"][0]
    assert answers["floats"][0] == mpy_side.handle(case)


def test_same_error_codes_on_both_interpreters(answers: dict[str, list[Any]]) -> None:
    corpus = _all_cases()["corpus"]
    assert len(corpus) >= 40
    on_cpython = [mpy_side.handle(case) for case in corpus]
    mismatches = [
        (case["kind"], case["data"][:80], here, there)
        for case, here, there in zip(corpus, on_cpython, answers["corpus"], strict=True)
        if here != there
    ]
    assert not mismatches, f"seed {SEED}: {mismatches}"
    assert not [a for a in on_cpython if a.startswith("crash:")]
    assert sum(a.startswith("err:") for a in on_cpython) >= 40
