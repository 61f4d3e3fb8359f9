"""`gridledger edge sign` and `edge inspect`, including every kind of bad message."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from certs.registrar import Registrar
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import cbor, cose
from tests.cli.conftest import SENML_READING, Run


@pytest.fixture
def device(ca: Path, tmp_path: Path, run: Run) -> tuple[Path, Path]:
    cert, key = tmp_path / "gw.cwt", tmp_path / "gw.key"
    result = run("certs", "issue", "--dir", ca, "--device-id", "gw-1", "--meter", "SDM120-1",
                 "--meter", "SDM120-2", "--out", cert, "--key-out", key)
    assert result.status == 0, result.err
    return cert, key


def sign(run: Run, tmp_path: Path, reading: Path, key: Path, *extra: str | Path,
         device_id: str = "gw-1") -> Path:
    out = tmp_path / "batch.cose"
    result = run("edge", "sign", "--key", key, "--device-id", device_id, "--seq", "7",
                 "--sent-at", "1763760005", reading, "-o", out, *extra)
    assert result.status == 0, result.err
    return out


def test_signed_batch_inspects_and_verifies(device: tuple[Path, Path], ca: Path,
                                            tmp_path: Path, reading: Path, run: Run) -> None:
    cert, key = device
    message = sign(run, tmp_path, reading, key)
    result = run("edge", "inspect", message, "--cert", cert, "--ca-dir", ca)
    assert result.status == 0, result.out + result.err
    assert "VERIFIED" in result.out
    assert "SDM120-1" in result.out and "timeout" in result.out


def test_certificate_carried_in_message_is_used(device: tuple[Path, Path], ca: Path,
                                                tmp_path: Path, reading: Path, run: Run) -> None:
    cert, key = device
    message = sign(run, tmp_path, reading, key, "--cert", cert)
    assert run("edge", "inspect", message, "--ca-dir", ca).status == 0


def test_json_output_round_trips_the_senml(device: tuple[Path, Path], ca: Path,
                                           tmp_path: Path, reading: Path, run: Run) -> None:
    cert, key = device
    message = sign(run, tmp_path, reading, key)
    result = run("edge", "inspect", message, "--cert", cert, "--ca-dir", ca, "--json")
    assert result.status == 0
    decoded = json.loads(result.out)
    assert decoded["seq"] == 7 and decoded["device_id"] == "gw-1"
    assert decoded["senml"] == SENML_READING


def test_signing_is_deterministic(device: tuple[Path, Path], tmp_path: Path, reading: Path,
                                  run: Run) -> None:
    _, key = device
    first = sign(run, tmp_path, reading, key).read_bytes()
    second = sign(run, tmp_path, reading, key).read_bytes()
    assert first == second


def test_without_chain_check_exit_is_not_zero(device: tuple[Path, Path], tmp_path: Path,
                                              reading: Path, run: Run) -> None:
    cert, key = device
    message = sign(run, tmp_path, reading, key)
    result = run("edge", "inspect", message, "--cert", cert)
    assert result.status == 1
    assert "not checked" in result.out


def test_without_any_certificate_exit_is_not_zero(device: tuple[Path, Path], tmp_path: Path,
                                                  reading: Path, run: Run) -> None:
    _, key = device
    message = sign(run, tmp_path, reading, key)
    assert run("edge", "inspect", message).status == 1


def test_sign_rejects_bad_senml(device: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    _, key = device
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"bn": "M/", "bt": 1, "n": "1-0:1.8.0", "u": "W", "v": 1}]))
    result = run("edge", "sign", "--key", key, "--device-id", "gw-1", "--seq", "1", bad,
                 "-o", tmp_path / "out")
    assert result.status == 2
    assert result.err.startswith("error [batch.unit]")


# -- bad messages: each has its own code, a one-line message, a non-zero exit ------------


def _message(key: crypto.SigningKey, device_id: str = "gw-1") -> bytes:
    groups = batch_mod.groups_from_senml_json(SENML_READING)
    return batch_mod.sign(batch_mod.Batch(device_id, 1, 1763760005, True, groups), key.sign)


def _reframe(original: bytes, **changes: object) -> bytes:
    """Rebuild a COSE_Sign1 with some parts replaced (keeps the old signature)."""
    parsed = cose.parse(original)
    parts = {"protected": parsed.protected, "unprotected": {}, "payload": parsed.payload,
             "signature": parsed.signature, "tag": 18}
    parts.update(changes)
    body = [parts["protected"], parts["unprotected"], parts["payload"], parts["signature"]]
    return cbor.encode(cbor.Tag(int(parts["tag"]), body))  # type: ignore[call-overload]


def bad_messages(key: crypto.SigningKey) -> dict[str, bytes]:
    good = _message(key)
    wrong_alg = cbor.encode({1: -35, 4: b"gw-1"})
    other_device = _message(key, "gw-2")
    non_canonical = bytearray(good)
    assert non_canonical[0] == 0xD2  # tag 18 in one byte
    return {
        "cbor.truncated": good[:-10],
        "cbor.trailing": good + b"\x00",
        "cbor.invalid": b"\x1c",  # reserved additional information 28
        "cbor.noncanonical": b"\xd8\x12" + good[1:],  # tag 18 written in two bytes
        "cose.tag": _reframe(good, tag=61),
        "cose.alg": _reframe(good, protected=wrong_alg),
        "cose.kid": _reframe(good, payload=cose.parse(other_device).payload),
        "cose.signature": _reframe(good, signature=bytes(64)),
    }


@pytest.mark.parametrize("code", [
    "cbor.truncated", "cbor.trailing", "cbor.invalid", "cbor.noncanonical",
    "cose.tag", "cose.alg", "cose.kid", "cose.signature",
])
def test_bad_message_gives_its_code(code: str, device: tuple[Path, Path], ca: Path,
                                    tmp_path: Path, run: Run) -> None:
    cert, key_path = device
    path = tmp_path / "bad.cose"
    path.write_bytes(bad_messages(crypto.read_private_key(key_path))[code])
    result = run("edge", "inspect", path, "--cert", cert, "--ca-dir", ca)
    assert result.status != 0
    text = result.out + result.err
    assert f"[{code}]" in text, text
    assert "Traceback" not in text


def _certificate(ca: Path, key: crypto.SigningKey, issued_at: int, days: int) -> bytes:
    registrar = Registrar.open(ca)
    return registrar.issue("gw-1", issued_at, key.public_key(), ("SDM120-1",), days).certificate


@pytest.mark.parametrize(("code", "age_days"), [("cert.expired", 10), ("cert.not_yet_valid", -5)])
def test_certificate_validity(code: str, age_days: int, ca: Path, tmp_path: Path,
                              run: Run) -> None:
    key = crypto.SigningKey.generate()
    cert = tmp_path / "c.cwt"
    cert.write_bytes(_certificate(ca, key, int(time.time()) - age_days * 86400, 2))
    message = tmp_path / "m.cose"
    message.write_bytes(_message(key))
    result = run("edge", "inspect", message, "--cert", cert, "--ca-dir", ca)
    assert result.status == 1
    assert f"[{code}]" in result.out


def test_foreign_certificate(ca: Path, tmp_path: Path, run: Run) -> None:
    key = crypto.SigningKey.generate()
    other = tmp_path / "other"
    run("certs", "init", "--dir", other)
    cert = tmp_path / "c.cwt"
    cert.write_bytes(_certificate(other, key, int(time.time()), 2))
    message = tmp_path / "m.cose"
    message.write_bytes(_message(key))
    result = run("edge", "inspect", message, "--cert", cert, "--ca-dir", ca)
    assert result.status == 1
    assert "[cert.foreign]" in result.out


def test_meter_outside_certificate(ca: Path, tmp_path: Path, run: Run) -> None:
    key = crypto.SigningKey.generate()
    cert = tmp_path / "c.cwt"
    cert.write_bytes(_certificate(ca, key, int(time.time()), 2))  # lists only SDM120-1
    message = tmp_path / "m.cose"
    message.write_bytes(_message(key))  # reports SDM120-1 and SDM120-2
    result = run("edge", "inspect", message, "--cert", cert, "--ca-dir", ca)
    assert result.status == 1
    assert "[cert.meter]" in result.out
