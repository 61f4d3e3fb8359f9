"""Transaction envelope and registry statements: round trips and documented errors."""

from __future__ import annotations

import pytest

from aggregator import tx
from edge.portable import cbor
from edge.portable.errors import RemoteProtocolError
from tests.aggregator.helpers import T0, World, key


def test_envelope_round_trip_and_hash(world: World) -> None:
    message = world.message("gw-1", 1)
    raw = tx.encode(tx.BATCH, message)
    decoded = tx.decode(raw)
    assert (decoded.kind, decoded.body, decoded.raw) == (tx.BATCH, message, raw)
    assert decoded.hash == tx.tx_hash(raw) and len(decoded.hash) == 32
    assert tx.encode(tx.BATCH, message) == raw  # deterministic


def test_a_batch_encoded_for_admission_decodes_as_its_bytes_would(world: World) -> None:
    message = world.message("gw-1", 2)
    raw = tx.encode_batch(message)
    assert raw == tx.encode(tx.BATCH, message)
    remembered, fresh = tx.decode(raw), tx._decode(raw)
    assert (remembered.kind, remembered.body, remembered.raw, remembered.hash) == (
        fresh.kind, fresh.body, fresh.raw, fresh.hash)
    assert remembered.body_hash == fresh.body_hash


def test_the_decoded_memo_keeps_only_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tx, "DECODED_MAX", 3)
    raws = [tx.encode_batch(bytes([n]) * 40) for n in range(5)]
    assert [raw in tx._remembered for raw in raws] == [False, False, True, True, True]
    assert tx.decode(raws[0]).body == bytes([0]) * 40  # decoded again when forgotten
    assert raws[0] in tx._remembered and raws[2] not in tx._remembered


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (cbor.encode([9, b"x"]), "tx.format"),
        (cbor.encode([True, b"x"]), "tx.format"),
        (cbor.encode([1, "text"]), "tx.format"),
        (cbor.encode({1: b"x"}), "tx.format"),
        (cbor.encode([1, b"x", 3]), "cbor.limit"),
        (b"\x82\x01", "cbor.truncated"),
        (cbor.encode([1, b"x"]) + b"\x00", "cbor.trailing"),
        (b"\x00" * (tx.TX_BYTES_MAX + 1), "tx.limit"),
    ],
)
def test_envelope_errors_have_codes(raw: bytes, code: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        tx.decode(raw)
    assert info.value.code == code


def test_enrollment_round_trip(world: World) -> None:
    raw = world.enroll_tx("gw-1", {"M2": "sdm120", "M1": "abb_b23"}, T0)
    decoded = tx.decode(raw)
    assert decoded.kind == tx.ENROLL
    enrollment = tx.open_enrollment(
        decoded.body, world.registrar.public_key(), world.config.verify_fn
    )
    assert enrollment.certificate == world.cert("gw-1")
    assert enrollment.profiles == (("M1", "abb_b23"), ("M2", "sdm120"))
    assert enrollment.time_s == T0


def test_revocation_round_trip(world: World) -> None:
    decoded = tx.decode(world.revoke_tx("gw-1", T0, "key leaked"))
    revocation = tx.open_revocation(
        decoded.body, world.registrar.public_key(), world.config.verify_fn
    )
    assert (revocation.device_id, revocation.time_s, revocation.reason) == (
        "gw-1",
        T0,
        "key leaked",
    )


def test_statement_by_another_key_is_refused(world: World) -> None:
    other = key(7)
    raw = tx.make_revocation("gw-1", T0, "", other.public_key(), other.sign)
    with pytest.raises(tx.RegistrarSignatureError):
        tx.open_revocation(
            tx.decode(raw).body, world.registrar.public_key(), world.config.verify_fn
        )
    # Right kid, wrong signature.
    forged = tx.make_revocation("gw-1", T0, "", world.registrar.public_key(), other.sign)
    with pytest.raises(tx.RegistrarSignatureError):
        tx.open_revocation(
            tx.decode(forged).body, world.registrar.public_key(), world.config.verify_fn
        )


def test_statement_of_the_wrong_shape(world: World) -> None:
    body = tx.decode(world.revoke_tx("gw-1")).body
    with pytest.raises(tx.StatementError):
        tx.open_enrollment(body, world.registrar.public_key(), world.config.verify_fn)
    bad_reason = tx.make_revocation(
        "gw-1",
        T0,
        "x" * (tx.REASON_CHARS_MAX + 1),
        world.registrar.public_key(),
        world.registrar.sign,
    )
    with pytest.raises(tx.StatementError):
        tx.open_revocation(
            tx.decode(bad_reason).body, world.registrar.public_key(), world.config.verify_fn
        )
    bad_profile = world.enroll_tx("gw-1", {"M1": "no such/name"})
    with pytest.raises(tx.StatementError):
        tx.open_enrollment(
            tx.decode(bad_profile).body, world.registrar.public_key(), world.config.verify_fn
        )
