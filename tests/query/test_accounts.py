"""Accounts: validation, scrypt hashes, constant-cost authentication, SQLite storage."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest

from aggregator.query import accounts
from aggregator.query.accounts import AccountStore, Principal, ScryptParams
from aggregator.query.errors import (
    AccountError,
    AccountExistsError,
    CredentialsError,
    QuerySetupError,
    UnknownAccountError,
    WeakPasswordError,
)
from tests.query.conftest import CHEAP_SCRYPT, NOW_S

PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path, rng: random.Random) -> AccountStore:
    s = AccountStore(tmp_path, CHEAP_SCRYPT, rng.randbytes)
    yield s
    s.close()


def test_default_scrypt_parameters_are_the_documented_ones() -> None:
    assert ScryptParams(log_n=15, r=8, p=1) == accounts.DEFAULT_SCRYPT
    assert accounts.DEFAULT_SCRYPT.memory_bytes() == 32 * 1024 * 1024


def test_hash_is_phc_string_and_matches_only_its_password() -> None:
    stored = accounts.hash_password(PASSWORD, b"s" * 16, CHEAP_SCRYPT)
    assert stored.startswith("$scrypt$ln=4,r=8,p=1$")
    assert PASSWORD not in stored
    assert accounts.password_matches(PASSWORD, stored)
    assert not accounts.password_matches(PASSWORD + "x", stored)


def test_stored_hash_with_huge_cost_is_refused_not_run() -> None:
    stored = accounts.hash_password(PASSWORD, b"s" * 16, CHEAP_SCRYPT).replace("ln=4", "ln=30")
    with pytest.raises(AccountError):
        accounts.password_matches(PASSWORD, stored)


def test_add_then_authenticate(store: AccountStore) -> None:
    store.add("alice", "resident", PASSWORD, NOW_S, meters=("SDM630-17", "SDM120-1"))
    principal = store.authenticate("alice", PASSWORD)
    assert principal == Principal("alice", "resident", frozenset({"SDM630-17", "SDM120-1"}))


def test_wrong_password_and_unknown_user_give_the_same_error(store: AccountStore) -> None:
    store.add("op", "operator", PASSWORD, NOW_S)
    with pytest.raises(CredentialsError) as wrong:
        store.authenticate("op", "not the password")
    with pytest.raises(CredentialsError) as unknown:
        store.authenticate("nobody", PASSWORD)
    assert str(wrong.value) == str(unknown.value)
    assert wrong.value.code == unknown.value.code == "auth.credentials"


def test_password_over_the_limit_never_matches(store: AccountStore) -> None:
    longest = "p" * accounts.PASSWORD_MAX_BYTES
    store.add("max", "operator", longest, NOW_S)
    assert store.authenticate("max", longest).username == "max"
    with pytest.raises(CredentialsError):
        store.authenticate("max", longest + "x")


@pytest.mark.parametrize("password", ["", "short", "           ", "twelve chars\nmore",
                                      "x" * 1025])
def test_weak_passwords_refused(store: AccountStore, password: str) -> None:
    with pytest.raises(WeakPasswordError):
        store.add("bob", "auditor", password, NOW_S)
    assert store.list() == []


@pytest.mark.parametrize(
    ("username", "role", "meters", "devices"),
    [
        ("bad name", "auditor", (), ()),
        ("x" * 65, "auditor", (), ()),
        ("carol", "admin", (), ()),
        ("carol", "resident", (), ()),                    # a resident needs a meter
        ("carol", "supplier", (), ()),                    # a supplier needs a device
        ("carol", "auditor", ("M1",), ()),                # meters only for residents
        ("carol", "resident", ("M1",), ("gw-1",)),        # devices only for suppliers
        ("carol", "resident", ("bad/serial",), ()),
        ("carol", "resident", tuple(f"M{i}" for i in range(33)), ()),
    ],
)
def test_invalid_accounts_refused(store: AccountStore, username: str, role: str,
                                  meters: tuple[str, ...], devices: tuple[str, ...]) -> None:
    with pytest.raises(AccountError):
        store.add(username, role, PASSWORD, NOW_S, meters, devices)


def test_duplicate_and_remove(store: AccountStore) -> None:
    store.add("sup", "supplier", PASSWORD, NOW_S, devices=("gw-2", "gw-1"))
    with pytest.raises(AccountExistsError):
        store.add("sup", "supplier", PASSWORD, NOW_S, devices=("gw-3",))
    assert [a.devices for a in store.list()] == [("gw-1", "gw-2")]
    store.remove("sup")
    with pytest.raises(UnknownAccountError):
        store.remove("sup")
    with pytest.raises(UnknownAccountError):
        store.get("sup")


def test_database_is_private_wal_and_survives_reopen(tmp_path: Path,
                                                    store: AccountStore) -> None:
    store.add("aud", "auditor", PASSWORD, NOW_S)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    reopened = AccountStore(tmp_path, CHEAP_SCRYPT, create=False)
    try:
        assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reopened.authenticate("aud", PASSWORD).role == "auditor"
    finally:
        reopened.close()
    for path in tmp_path.iterdir():
        assert PASSWORD.encode() not in path.read_bytes()


def test_open_without_create_needs_an_existing_database(tmp_path: Path) -> None:
    with pytest.raises(QuerySetupError):
        AccountStore(tmp_path / "none", CHEAP_SCRYPT, create=False)
