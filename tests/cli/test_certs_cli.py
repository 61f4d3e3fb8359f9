"""`gridledger certs`: registrar keys, device certificates, revocation."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.portable import cwt
from tests.cli.conftest import Run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_key_0600_and_public_key(ca: Path) -> None:
    assert mode(ca / "registrar.key") == 0o600
    key = serialization.load_pem_private_key((ca / "registrar.key").read_bytes(), None)
    public = serialization.load_pem_public_key((ca / "registrar.pub").read_bytes())
    assert key.public_key().public_numbers() == public.public_numbers()


def test_init_refuses_to_replace_a_key(ca: Path, run: Run) -> None:
    before = (ca / "registrar.key").read_bytes()
    result = run("certs", "init", "--dir", ca)
    assert result.status == 2
    assert result.err.startswith("error [certs.registrar]")
    assert (ca / "registrar.key").read_bytes() == before


def test_issue_generates_device_key_and_certificate(ca: Path, tmp_path: Path, run: Run) -> None:
    cert, key = tmp_path / "gw.cwt", tmp_path / "gw.key"
    result = run("certs", "issue", "--dir", ca, "--device-id", "gw-1", "--meter", "M-1",
                 "--meter", "M-2", "--days", "10", "--out", cert, "--key-out", key)
    assert result.status == 0, result.err
    assert mode(key) == 0o600
    _, claims = cwt.parse(cert.read_bytes())
    assert claims.device_id == "gw-1"
    assert claims.meters == ["M-1", "M-2"]
    assert claims.expires_at - claims.issued_at == 10 * 86400


def test_issue_certifies_an_imported_public_key(ca: Path, tmp_path: Path, run: Run) -> None:
    secure_element = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "se.pub"
    pem.write_bytes(secure_element.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    cert = tmp_path / "se.cwt"
    result = run("certs", "issue", "--dir", ca, "--device-id", "gw-se",
                 "--public-key", pem, "--out", cert)
    assert result.status == 0, result.err
    _, claims = cwt.parse(cert.read_bytes())
    raw = secure_element.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert claims.public_key == raw
    assert not (tmp_path / "se.key").exists()


def test_issue_without_key_destination_is_a_usage_error(ca: Path, tmp_path: Path,
                                                        run: Run) -> None:
    result = run("certs", "issue", "--dir", ca, "--device-id", "gw-1", "--out", tmp_path / "c")
    assert result.status == 2
    assert "--key-out" in result.err


def test_issue_rejects_bad_device_id(ca: Path, tmp_path: Path, run: Run) -> None:
    result = run("certs", "issue", "--dir", ca, "--device-id", "gw/1", "--out",
                 tmp_path / "c", "--key-out", tmp_path / "k")
    assert result.status == 2
    assert "device id" in result.err


def test_show_prints_claims_and_checks_chain(ca: Path, tmp_path: Path, run: Run) -> None:
    cert = tmp_path / "gw.cwt"
    run("certs", "issue", "--dir", ca, "--device-id", "gw-7", "--meter", "M-9",
        "--out", cert, "--key-out", tmp_path / "gw.key")
    shown = run("certs", "show", cert)
    assert shown.status == 0
    assert "gw-7" in shown.out and "M-9" in shown.out and "valid now" in shown.out
    assert "not checked" in shown.out
    checked = run("certs", "show", cert, "--ca-dir", ca)
    assert checked.status == 0 and "verified" in checked.out


def test_show_against_another_registrar_says_foreign(ca: Path, tmp_path: Path, run: Run) -> None:
    cert = tmp_path / "gw.cwt"
    run("certs", "issue", "--dir", ca, "--device-id", "gw-7", "--out", cert,
        "--key-out", tmp_path / "gw.key")
    other = tmp_path / "other-ca"
    run("certs", "init", "--dir", other)
    result = run("certs", "show", cert, "--ca-dir", other)
    assert result.status == 1
    assert "cert.foreign" in result.out


def test_revoke_is_recorded_once_and_show_reports_it(ca: Path, tmp_path: Path, run: Run) -> None:
    cert = tmp_path / "gw.cwt"
    run("certs", "issue", "--dir", ca, "--device-id", "gw-7", "--out", cert,
        "--key-out", tmp_path / "gw.key")
    assert "revoked" in run("certs", "revoke", "--dir", ca, "--device-id", "gw-7").out
    assert "already" in run("certs", "revoke", "--dir", ca, "--device-id", "gw-7").out
    result = run("certs", "show", cert, "--ca-dir", ca)
    assert result.status == 1
    assert "cert.revoked" in result.out


def test_show_of_garbage_is_one_line_error(tmp_path: Path, run: Run) -> None:
    junk = tmp_path / "junk.cwt"
    junk.write_bytes(b"\x00not a certificate")
    result = run("certs", "show", junk)
    assert result.status == 2
    assert result.err.startswith("error [cert.structure]")
    assert len(result.err.strip().splitlines()) == 1


def test_missing_file_is_one_line_error(tmp_path: Path, run: Run) -> None:
    result = run("certs", "show", tmp_path / "absent.cwt")
    assert result.status == 2
    assert result.err.startswith("error [io]")
