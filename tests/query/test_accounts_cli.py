"""`gridledger accounts add/list/remove` through gridledger.cli.main, password on stdin."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from gridledger.cli import main

PASSWORD = "s3cret-meter-pass"


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: object,
        stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    status, out, err = run(capsys, monkeypatch, "accounts", "add", "--data-dir", tmp_path,
                           "--username", "alice", "--role", "resident", "--meter", "SDM630-17",
                           stdin=PASSWORD + "\n")
    assert status == 0, err
    assert "alice" in out and PASSWORD not in out + err
    assert stat.S_IMODE((tmp_path / "accounts.sqlite").stat().st_mode) == 0o600

    status, out, err = run(capsys, monkeypatch, "accounts", "list", "--data-dir", tmp_path)
    assert status == 0, err
    assert "alice" in out and "resident" in out and "SDM630-17" in out
    assert "$scrypt$" not in out and PASSWORD not in out

    status, out, _ = run(capsys, monkeypatch, "accounts", "remove", "--data-dir", tmp_path,
                         "--username", "alice")
    assert status == 0 and "removed" in out
    status, _, err = run(capsys, monkeypatch, "accounts", "remove", "--data-dir", tmp_path,
                         "--username", "alice")
    assert status == 2 and "account.unknown" in err


@pytest.mark.parametrize("password", ["", "q7zk\n"])
def test_short_password_refused_without_echo(tmp_path: Path, password: str,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    status, out, err = run(capsys, monkeypatch, "accounts", "add", "--data-dir", tmp_path,
                           "--username", "op", "--role", "operator", stdin=password)
    assert status == 2
    assert "account.password" in err and "at least 12 characters" in err
    if password.strip():
        assert password.strip() not in out + err


def test_list_without_database_is_a_clear_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    status, _, err = run(capsys, monkeypatch, "accounts", "list", "--data-dir",
                         tmp_path / "missing")
    assert status == 2 and "query.setup" in err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_asks_twice_without_echo(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([PASSWORD, PASSWORD + "typo"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setattr("sys.stdin", FakeTerminal())
    status = main(["accounts", "add", "--data-dir", str(tmp_path), "--username", "op",
                   "--role", "operator"])
    out, err = capsys.readouterr()
    assert status == 2 and "differ" in err and PASSWORD not in out + err

    answers = iter([PASSWORD, PASSWORD])
    status = main(["accounts", "add", "--data-dir", str(tmp_path), "--username", "op",
                   "--role", "operator"])
    out, err = capsys.readouterr()
    assert status == 0 and PASSWORD not in out + err


def test_duplicate_add_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ("accounts", "add", "--data-dir", tmp_path, "--username", "sup", "--role",
            "supplier", "--device", "gw-1")
    assert run(capsys, monkeypatch, *argv, stdin=PASSWORD)[0] == 0
    status, out, err = run(capsys, monkeypatch, *argv, stdin=PASSWORD)
    assert status == 2 and "account.exists" in err and PASSWORD not in out + err
    status, _, err = run(capsys, monkeypatch, "accounts", "add", "--data-dir", tmp_path,
                         "--username", "res", "--role", "resident", stdin=PASSWORD)
    assert status == 2 and "--meter" in err
