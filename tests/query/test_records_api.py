"""Class II records through the API of a real node: an operator writes a customer record,
the salted digest goes on chain, entitled readers check the fields against it."""

from __future__ import annotations

import json
import time
from typing import Any

from aggregator.query.confidential import CustomerFields, check_digest
from tests.query.live import DEADLINE_S, PASSWORD, LiveNode

FIELDS = {"name": "Bob B.", "address": "2 Side St, Flat 4", "contract": "C-42"}


def _put(live: LiveNode, meter: str, fields: dict[str, str], user: str = "op") -> Any:
    return live.http("PUT", f"/v1/meters/{meter}/customer", body=json.dumps(fields).encode(),
                     user=user)


def _wait_on_chain(live: LiveNode, meter: str, digest: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        shown = live.http("GET", f"/v1/meters/{meter}/customer", user="audit").json()
        if shown["chain"] is not None and shown["chain"]["digest"] == digest:
            return shown
        assert time.monotonic() < deadline, f"customer digest {digest} not on chain"
        time.sleep(0.02)


def _resident(live: LiveNode, username: str, meter: str) -> None:
    """A resident of a meter of its own, so these tests leave the fixture's meters alone."""
    if username not in live.tokens:
        live.on_loop(lambda: live.api.accounts.add(username, "resident", PASSWORD, 0,
                                                   (meter,), ()))


def test_operator_writes_a_customer_and_its_digest_goes_on_chain(live: LiveNode) -> None:
    _resident(live, "rita", "M-R1")
    answer = _put(live, "M-R1", FIELDS)
    assert answer.status == 202, answer.body
    digest = answer.json()["digest"]
    _wait_on_chain(live, "M-R1", digest)
    shown = live.http("GET", "/v1/meters/M-R1/customer", user="rita").json()
    assert shown["on_chain"] and shown["chain"]["signer"] == live.opened.node_id
    fields = CustomerFields(shown["name"], shown["address"], shown["contract"])
    assert check_digest(fields, bytes.fromhex(shown["salt"]),
                        bytes.fromhex(shown["chain"]["digest"]))
    assert live.http("GET", "/v1/meters/M-R1/customer", user="alice").status == 403
    stored = live.api.customers.path.read_bytes()  # type: ignore[union-attr]
    assert b"Bob B." not in stored and b"Side St" not in stored


def test_two_quick_updates_both_reach_the_chain_in_order(live: LiveNode) -> None:
    first = _put(live, "M-Q1", {**FIELDS, "name": "Quinn A."}).json()["digest"]
    second = _put(live, "M-Q1", {**FIELDS, "name": "Quinn Z."}).json()["digest"]
    assert first != second
    shown = _wait_on_chain(live, "M-Q1", second)
    assert shown["name"] == "Quinn Z." and shown["on_chain"]


def test_customer_writes_are_for_operators_and_bounded(live: LiveNode) -> None:
    denied = _put(live, "M-B1", FIELDS, user="bob")
    assert (denied.status, denied.json()["error"]) == (403, "access.role")
    assert _put(live, "M-P1", {**FIELDS, "name": "x" * 257}).status == 400
    huge = live.http("PUT", "/v1/meters/M-P1/customer", body=b"{" + b" " * 5000 + b"}",
                     user="op")
    assert (huge.status, huge.json()["error"]) == (413, "http.too_large")
    assert _put(live, "M-P1", {"name": "only a name"}).json()["error"] == "http.invalid"


def test_customers_cli_sets_on_chain_and_shows(live: LiveNode, capsys: Any,
                                               monkeypatch: Any) -> None:
    import io

    from gridledger.cli import main

    common = ["--data-dir", str(live.data_dir), "--customer-keys", str(live.key_file),
              "--meter", "M-C1"]
    fields = json.dumps({"name": "Carol C.", "address": "3 Hill Rd", "contract": "C-99"})
    monkeypatch.setattr("sys.stdin", io.StringIO(fields))
    status = main(["customers", "set", *common, "--node", f"http://127.0.0.1:{live.port}"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "Carol" not in out + err  # the fields are not echoed
    digest = out.split("digest ")[1].split()[0]
    _wait_on_chain(live, "M-C1", digest)
    assert main(["customers", "show", *common]) == 0
    shown = capsys.readouterr().out
    assert "Carol C." in shown and f"chain digest  {digest}" in shown
    assert "on chain      yes" in shown
    monkeypatch.setattr("sys.stdin", io.StringIO('{"name": "only"}'))
    assert main(["customers", "set", *common, "--node", "http://127.0.0.1:9"]) == 2
    assert "confidential.invalid" in capsys.readouterr().err


def test_forged_records_over_http_are_refused_and_counted(live: LiveNode) -> None:
    import hashlib

    from aggregator import tx as tx_mod
    from edge import crypto

    stranger = crypto.SigningKey.from_bytes(hashlib.sha256(b"not a validator").digest())
    node_key = crypto.read_private_key(live.data_dir / "node.key")
    genuine = tx_mod.make_customer("M-F1", bytes(32), int(time.time()), b"node-0",
                                   node_key.sign)
    forged = bytearray(genuine)
    forged[-1] ^= 1
    cases = {
        "tx.signature": bytes(forged),
        "tx.signer": tx_mod.make_customer("M-F1", bytes(32), int(time.time()), b"node-9",
                                          stranger.sign),
        "tx.statement": tx_mod.encode(tx_mod.DOCUMENT, tx_mod.decode(genuine).body),
    }
    before = live.on_loop(lambda: live.node.status()["rejects_by_code"])
    for code, raw in cases.items():
        answer = live.http("POST", "/v1/registry", body=raw, content_type="application/cbor")
        assert (answer.status, answer.json()["error"]) == (400, code)
    after = live.on_loop(lambda: live.node.status()["rejects_by_code"])
    for code in cases:
        assert after.get(code, 0) == before.get(code, 0) + 1
    through_api = live.http("POST", "/v1/devices/enrollments", body=genuine,
                            content_type="application/cbor", user="op")
    assert (through_api.status, through_api.json()["error"]) == (400, "query.tx_kind")


def test_an_index_with_off_chain_document_rows_drops_them(tmp_path: Any) -> None:
    from aggregator.query.ledger import INDEX_FILE, ReadingIndex
    from gridledger.files import open_private_sqlite

    old = open_private_sqlite(tmp_path / INDEX_FILE)
    old.execute("CREATE TABLE document (digest TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                "meter TEXT NOT NULL, valid_from_s INTEGER NOT NULL, valid_until_s INTEGER "
                "NOT NULL, signer TEXT NOT NULL, record BLOB NOT NULL, stored_at_s INTEGER "
                "NOT NULL)")
    old.execute("INSERT INTO document VALUES ('00', 'verification', 'M1', 0, 1, 'n', x'', 5)")
    old.close()
    index = ReadingIndex(tmp_path, None)  # type: ignore[arg-type]
    try:
        assert index.documents_of_meter("M1") == []
    finally:
        index.close()
