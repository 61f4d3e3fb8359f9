"""Class II and III records on chain: document and customer transactions, the
verification rule during execution, determinism, persistence and tampering."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aggregator import rules, tx
from aggregator.app import Application, FinalizeRequest, verification_periods
from aggregator.engine import REJECTED
from edge.portable import cwt
from tests.aggregator.helpers import NODE_ID, T0, World, key, run_block, stored_engine

FILE = b"%PDF-1.7 verification certificate of M1"
DIGEST = hashlib.sha256(FILE).digest()


def doc_tx(world: World, kind: str = "verification", meter: str = "M1",
           start: int = T0 - 400 * 86400, until: int = T0 - 86400,
           digest: bytes = DIGEST, by_registrar: bool = False) -> bytes:
    if by_registrar:
        kid, sign = cwt.key_id(world.registrar.public_key()), world.registrar.sign
    else:
        kid, sign = NODE_ID.encode(), world.node.sign
    return tx.make_document(digest, kind, meter, start, until, kid, sign)


def customer_tx(world: World, meter: str = "M1", time_s: int = T0,
                digest: bytes = bytes(range(32))) -> bytes:
    return tx.make_customer(meter, digest, time_s, NODE_ID.encode(), world.node.sign)


def test_a_document_record_goes_into_the_state_and_its_root(world: World) -> None:
    app = world.app()
    before = app.state.root()
    [result] = run_block(app, [doc_tx(world)]).results
    assert result.code == "ok"
    value = app.state.records["document/" + DIGEST.hex()]
    assert value[:1] and app.state.periods == {"M1": ((T0 - 400 * 86400, T0 - 86400),)}
    assert verification_periods(app.state.records) == dict(app.state.periods)
    assert app.state.root() != before


def test_an_expired_verification_flags_the_meter_on_chain(world: World) -> None:
    app = world.app()
    run_block(app, [doc_tx(world)])
    result = run_block(app, [world.batch_tx("gw-1", 1, meters=("M1", "M2"))])
    [batch] = result.results
    assert batch.committed
    assert [(v.code, v.meter_id) for v in batch.violations] == [(rules.VERIFICATION, "M1")]
    assert result.violations == 1 and app.state.violations == 1


def test_a_renewal_earlier_in_the_same_block_clears_the_flag(world: World) -> None:
    app = world.app()
    renewal = doc_tx(world, start=T0 - 86400, until=T0 + 365 * 86400, digest=bytes(32))
    result = run_block(app, [doc_tx(world), renewal, world.batch_tx("gw-1", 1)])
    assert [r.code for r in result.results] == ["ok", "ok", "ok"]
    assert result.results[2].violations == ()


def test_calibration_and_accreditation_do_not_judge_readings(world: World) -> None:
    app = world.app()
    run_block(app, [doc_tx(world, kind="calibration"),
                    doc_tx(world, kind="accreditation", meter="", digest=bytes(32),
                           by_registrar=True)])
    assert app.state.periods == {}
    assert run_block(app, [world.batch_tx("gw-1", 1)]).results[0].violations == ()


def test_same_block_same_state_root_on_two_applications(world: World) -> None:
    txs = [doc_tx(world), customer_tx(world), world.batch_tx("gw-1", 1),
           doc_tx(world, digest=bytes(32), by_registrar=True)]
    first, second = world.app(), world.app()
    a, b = run_block(first, txs), run_block(second, txs)
    assert a.state_root == b.state_root
    assert a.changed_records == b.changed_records and len(a.changed_records) == 3


def test_records_survive_a_restart_and_the_store_verifies(world: World, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world)
    for raw in (doc_tx(world), customer_tx(world)):
        assert engine.submit(raw, T0).status != REJECTED
    engine.handle_timeout(T0 + 5)
    state = engine.app.state
    assert len(state.records) == 2
    engine.store.close()  # type: ignore[attr-defined]
    reopened = stored_engine(path, world)
    assert reopened.app.state.records == state.records
    assert reopened.app.state.periods == state.periods
    assert reopened.app.state.root() == state.root()


def test_a_duplicate_document_is_refused(world: World) -> None:
    app = world.app()
    result = run_block(app, [doc_tx(world), doc_tx(world, until=T0 + 86400)])
    assert [r.code for r in result.results] == ["ok", "document.exists"]


def test_customer_records_replace_only_newer(world: World) -> None:
    app = world.app()
    newer = customer_tx(world, time_s=T0 + 1, digest=bytes(32))
    result = run_block(app, [customer_tx(world), newer, customer_tx(world, time_s=T0 - 5),
                             customer_tx(world, time_s=T0 + 3600)], time_s=T0 + 2)
    assert [r.code for r in result.results] == ["ok", "ok", "tx.stale", "tx.time"]
    assert app.state.records["customer/M1"][:3] == b"\x84X "  # [digest, ...]


def _forged(raw: bytes) -> bytes:
    decoded = tx.decode(raw)
    body = bytearray(decoded.body)
    body[-1] ^= 1  # the last byte of the signature
    return tx.encode(decoded.kind, bytes(body))


def _cases(world: World) -> dict[str, bytes]:
    stranger = key(150)
    unknown = tx.make_document(DIGEST, "verification", "M1", T0 - 10, T0 + 10,
                               b"node-9", stranger.sign)
    customer_body = tx.decode(customer_tx(world)).body
    enroll_body = tx.decode(world.enroll_tx("gw-1")).body
    revoke_body = tx.decode(world.revoke_tx("gw-1")).body
    return {
        "tx.signature": _forged(doc_tx(world)),
        "tx.signer": unknown,
        "tx.statement": tx.encode(tx.DOCUMENT, customer_body),
        "tx.statement ": tx.encode(tx.DOCUMENT, enroll_body),
        "tx.statement  ": tx.encode(tx.CUSTOMER, revoke_body),
        "tx.registrar": tx.encode(tx.ENROLL, customer_body),
        "tx.signature ": _forged(customer_tx(world)),
        "tx.signer ": tx.make_customer("M1", bytes(32), T0, b"lab-7", stranger.sign),
    }


def test_tampered_records_are_refused_with_stable_codes(world: World) -> None:
    cases = _cases(world)
    app = world.app()
    for code, raw in cases.items():
        assert app.check_tx(raw, T0).code == code.strip()
    result = run_block(app, list(cases.values()))
    assert [r.code for r in result.results] == [c.strip() for c in cases]
    assert app.state.records == {}


def test_tampered_records_are_counted_by_code(world: World) -> None:
    engine = world.engine()
    for raw in _cases(world).values():
        assert engine.submit(raw, T0).status == REJECTED
    counts = engine.counters.rejects_by_code
    assert counts == {"tx.signature": 2, "tx.signer": 2, "tx.statement": 3, "tx.registrar": 1}


@pytest.mark.parametrize("field,value", [
    (1, b"short"), (2, "manual"), (3, ""), (4, T0 + 10),
])
def test_malformed_document_fields(world: World, field: int, value: object) -> None:
    from edge.portable import cbor, cose

    payload = {1: DIGEST, 2: "verification", 3: "M1", 4: T0, 5: T0 + 10}
    payload[field] = value
    body = cose.sign1(cbor.encode(payload), NODE_ID.encode(), world.node.sign)
    app = Application(world.config)
    assert app.check_tx(tx.encode(tx.DOCUMENT, body), T0).code == "tx.statement"


def test_check_tx_of_a_valid_record_is_ok(world: World) -> None:
    app = world.app()
    assert app.check_tx(doc_tx(world), T0).ok
    assert app.check_tx(customer_tx(world), T0).ok
    request = FinalizeRequest(1, T0, (doc_tx(world),), NODE_ID)
    assert app.execute(request).results[0].code == "ok"


def test_check_tx_refuses_a_document_already_on_chain(world: World) -> None:
    app = world.app()
    run_block(app, [doc_tx(world)])
    assert app.check_tx(doc_tx(world), T0).code == "document.exists"


def test_an_altered_record_row_makes_the_store_refuse_to_open(world: World,
                                                              tmp_path: Path) -> None:
    import sqlite3

    from aggregator import fastcbor
    from aggregator.store import StoreCorruptError
    from tests.aggregator.helpers import open_store

    path = tmp_path / "ledger.sqlite"
    engine = stored_engine(path, world)
    assert engine.submit(customer_tx(world), T0).status != REJECTED
    engine.handle_timeout(T0 + 5)
    engine.store.close()  # type: ignore[attr-defined]
    conn = sqlite3.connect(path)
    conn.execute("UPDATE record SET data = ? WHERE key = 'customer/M1'",
                 (fastcbor.encode([bytes(32), "node-0", T0, bytes(32)]),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorruptError):
        open_store(path, world)
