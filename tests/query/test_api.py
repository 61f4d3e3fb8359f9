"""The query API of a real node over loopback HTTP: login, tables, proofs, documents,
customers, registry transactions and the error answers."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import time
from pathlib import Path

from aggregator import tx as tx_mod
from aggregator.block import decode_header
from aggregator.merkle import verify_consistency
from aggregator.query import tablejson
from aggregator.query.receipts import trust_from_genesis, verify_receipt
from edge import crypto
from tests.query.live import GW_A_LAST, M_ALICE, LiveNode


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- login -------------------------------------------------------------------------------


def test_login_gives_a_short_lived_token_and_wrong_passwords_are_refused(
        live: LiveNode) -> None:
    answer = live.login("audit")
    assert answer.status == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["expires_in"] == 900 and body["access_token"].count(".") == 2
    wrong = live.login("audit", "not the password at all")
    assert (wrong.status, wrong.json()["error"]) == (401, "auth.credentials")
    nobody = live.login("nobody-here", "not the password at all")
    assert nobody.json() == wrong.json()  # an unknown user looks the same
    assert b"not the password" not in wrong.body


def test_token_requests_are_rate_limited_per_username(live: LiveNode) -> None:
    statuses = [live.login("mallory", "wrong password number x").status for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    limited = live.login("mallory", "wrong password number x")
    assert limited.json()["error"] == "rate.limited"
    assert int(limited.headers["retry-after"]) >= 1


def test_one_accounts_queries_are_rate_limited(live: LiveNode) -> None:
    from aggregator.query.ratelimit import Limit, QueryLimiter

    live.on_loop(lambda: setattr(live.api, "queries",
                                 QueryLimiter(Limit(burst=3, rate_per_s=0.01))))
    try:
        statuses = [live.http("GET", "/v1/chain", user="audit").status for _ in range(4)]
        other = live.http("GET", "/v1/chain", user="alice")
    finally:
        live.on_loop(lambda: setattr(live.api, "queries", None))
    assert statuses == [200, 200, 200, 429] and other.status == 200
    limited = live.http("GET", "/v1/chain", user="audit")  # limit lifted again
    assert limited.status == 200


def test_forged_and_malformed_tokens_get_their_codes(live: LiveNode) -> None:
    good = live.token("audit")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    none_header = _b64u(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    claims["role"] = "operator"
    raised = _b64u(json.dumps(claims).encode())
    cases = {
        f"{none_header}.{payload}.": "token.alg",
        f"{header}.{raised}.{signature}": "token.signature",
        "not-a-token": "token.malformed",
        "a" * 9000: "token.too_large",
    }
    for token, code in cases.items():
        answer = live.http("GET", "/v1/chain", token=token)
        assert (answer.status, answer.json()["error"]) == (401, code), token[:40]
        assert answer.headers["www-authenticate"] == "Bearer"


def test_oversized_bodies_and_unknown_routes_get_coded_answers(live: LiveNode) -> None:
    huge = json.dumps({"username": "alice", "password": "x" * 5000}).encode()
    answer = live.http("POST", "/v1/auth/token", body=huge)
    assert (answer.status, answer.json()["error"]) == (413, "http.too_large")
    answer = live.http("GET", "/v1/nothing-here", user="audit")
    assert (answer.status, answer.json()["error"]) == (404, "http.not_found")
    answer = live.http("PUT", "/v1/chain", user="audit")
    assert (answer.status, answer.json()["error"]) == (405, "http.method")


def test_malformed_login_bodies_are_400_not_500(live: LiveNode) -> None:
    for body in (b"", b"{", b"[]", b'{"username": 5}', json.dumps({"username": "x" * 65,
                                                                   "password": "p"}).encode()):
        answer = live.http("POST", "/v1/auth/token", body=body)
        assert (answer.status, answer.json()["error"]) == (400, "http.invalid"), body


# -- chain, readings, tables -------------------------------------------------------------


def test_chain_status_names_height_volume_and_nodes(live: LiveNode) -> None:
    status = live.http("GET", "/v1/chain", user="alice").json()
    assert status["chain_id"] == "gl-query-test" and status["height"] >= 1
    assert status["batches"] >= 7 and status["txs"] >= 7 and status["readings"] >= 8
    assert status["nodes"] == [{"node_id": "node-0", "power": 1, "http": "127.0.0.1:8080",
                                "head": status["height"], "block_hash": status["block_hash"],
                                "reachable": True}]


def test_readings_of_a_meter_in_three_formats_and_paged(live: LiveNode) -> None:
    rows = live.http("GET", f"/v1/meters/{M_ALICE}/readings", user="alice").json()
    assert {(r["device_id"], r["seq"]) for r in rows} >= {("gw-a", 1), ("gw-mix", 1)}
    energy = [r for r in rows if r["obis"] == "1-0:1.8.0" and r["device_id"] == "gw-a"]
    assert [r["value"] for r in energy][:3] == [1_001_000, 1_002_000, 1_003_000]
    assert all(r["unit"] == "J" for r in energy)
    table = live.http("GET", f"/v1/meters/{M_ALICE}/readings?format=tablejson",
                      user="alice").json()
    assert set(table) == {"Type", "Property", "Structure", "Cell"}
    assert table["Cell"]["rows"][0][:2] == [rows[0]["meter"], rows[0]["time_s"]]
    text = live.http("GET", f"/v1/meters/{M_ALICE}/readings?format=csv", user="alice")
    assert text.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(text.body.decode())))
    assert len(parsed) == len(rows) and parsed[0]["meter"] == M_ALICE
    first = live.http("GET", f"/v1/meters/{M_ALICE}/readings?limit=2", user="alice")
    assert len(first.json()) == 2 and 'rel="next"' in first.headers["link"]
    after = first.headers["link"].split("after=")[1].split(">")[0].split("&")[0]
    second = live.http("GET", f"/v1/meters/{M_ALICE}/readings?limit=2&after={after}",
                       user="alice").json()
    assert second == rows[2:4]


def test_time_range_filters_and_a_reversed_range_is_400(live: LiveNode) -> None:
    rows = live.http("GET", f"/v1/meters/{M_ALICE}/readings", user="audit").json()
    t = rows[0]["time_s"]
    none = live.http("GET", f"/v1/meters/{M_ALICE}/readings?from={t + 3600}", user="audit")
    assert none.json() == []
    some = live.http("GET", f"/v1/meters/{M_ALICE}/readings?from={t}&to={t + 3600}",
                     user="audit").json()
    assert len(some) == len([r for r in rows if t <= r["time_s"] < t + 3600])
    bad = live.http("GET", f"/v1/meters/{M_ALICE}/readings?from=10&to=5", user="audit")
    assert (bad.status, bad.json()["error"]) == (400, "query.range")


def test_devices_violations_and_credit(live: LiveNode) -> None:
    mine = live.http("GET", "/v1/devices", user="alice").json()
    assert {d["device_id"] for d in mine} == {"gw-a", "gw-mix"}  # they read M-A1
    gw_a = live.http("GET", "/v1/devices/gw-a", user="alice").json()[0]
    assert gw_a["last_seq"] == GW_A_LAST and gw_a["violations"] == 1
    assert gw_a["credit"] == 800
    violations = live.http("GET", "/v1/devices/gw-a/violations", user="sup").json()
    assert [(v["code"], v["seq"]) for v in violations] == [("rule.gap", GW_A_LAST)]
    assert live.http("GET", "/v1/violations", user="bob").json() == []  # not bob's device
    credit = {c["device_id"]: c for c in live.http("GET", "/v1/credit", user="sup").json()}
    assert set(credit) == {"gw-a"} and credit["gw-a"]["credit"] == 800


# -- proofs ------------------------------------------------------------------------------


def test_receipt_verifies_offline_and_as_signjson(live: LiveNode) -> None:
    trust = trust_from_genesis(live.opened.genesis)
    answer = live.http("GET", "/v1/readings/gw-mix/1/receipt", user="audit")
    verified = verify_receipt(answer.body, trust, crypto.verify)
    assert (verified.device_id, verified.seq, verified.meters) == ("gw-mix", 1, ("M-A1", "M-B1"))
    signed = live.http("GET", "/v1/readings/gw-mix/1/receipt?format=signjson",
                       user="audit").json()
    payload = tablejson.verify_sign_json(signed, live.opened.genesis.node_keys())
    assert payload == answer.json()


def test_consistency_proof_links_two_headers(live: LiveNode) -> None:
    header = live.http("GET", "/v1/headers/1", user="bob").json()
    raw = bytes.fromhex(header["header_bytes"])
    assert hashlib.sha256(raw).hexdigest() == header["hash"] == header["commit"]["block_hash"]
    first = decode_header(raw)
    status = live.http("GET", "/v1/chain", user="bob").json()
    proof = live.http("GET", f"/v1/log/consistency?from={first.log_size}"
                      f"&to={status['log_size']}", user="bob").json()
    assert proof["first_root"] == first.log_root.hex()
    assert proof["second_root"] == status["log_root"]
    verify_consistency(first.log_size, status["log_size"], first.log_root,
                       bytes.fromhex(status["log_root"]),
                       [bytes.fromhex(h) for h in proof["proof"]])
    beyond = live.http("GET", "/v1/log/consistency?from=1&to=99999999", user="bob")
    assert (beyond.status, beyond.json()["error"]) == (400, "query.range")


def test_unknown_things_are_404_with_codes(live: LiveNode) -> None:
    for path, code in (("/v1/readings/gw-a/999/receipt", "query.not_found"),
                       ("/v1/headers/99999", "query.not_found"),
                       ("/v1/devices/gw-zzz", "query.not_found"),
                       (f"/v1/documents/{'0' * 64}", "document.not_found"),
                       (f"/v1/documents/{'0' * 64}/record", "document.not_found")):
        answer = live.http("GET", path, user="audit")
        assert (answer.status, answer.json()["error"]) == (404, code), path
    for path in ("/v1/headers/0", "/v1/headers/abc", "/v1/readings/gw%20a/1/receipt",
                 "/v1/readings/gw-a/-1/receipt", "/v1/documents/ABC",
                 "/v1/meters/M-A1/readings?format=xml", "/v1/devices?limit=0"):
        answer = live.http("GET", path, user="audit")
        assert (answer.status, answer.json()["error"]) == (400, "http.invalid"), path


# -- class II and III --------------------------------------------------------------------


def test_customer_fields_with_the_salt_that_checks_the_digest(live: LiveNode) -> None:
    from aggregator.query.confidential import CustomerFields, check_digest

    shown = live.http("GET", f"/v1/meters/{M_ALICE}/customer", user="alice").json()
    assert (shown["name"], shown["address"], shown["contract"]) == ("Alice A.", "1 Main St",
                                                                   "C-17")
    fields = CustomerFields(shown["name"], shown["address"], shown["contract"])
    assert check_digest(fields, bytes.fromhex(shown["salt"]), bytes.fromhex(shown["digest"]))
    missing = live.http("GET", "/v1/meters/M-B1/customer", user="bob")
    assert (missing.status, missing.json()["error"]) == (404, "customer.not_found")


def test_document_upload_read_record_and_lapsed_verification_flag(live: LiveNode) -> None:
    from aggregator.query.documents import check_document, verify_record

    rows = live.http("GET", "/v1/meters/M-B1/readings", user="bob").json()
    assert rows and not any(r["verification_lapsed"] for r in rows)
    data = b"%PDF verification of M-B1 " + str(time.time()).encode()
    expired = rows[0]["time_s"] - 1
    answer = live.http("POST", f"/v1/documents?kind=verification&meter=M-B1&valid_from_s=0"
                       f"&valid_until_s={expired}", body=data,
                       content_type="application/octet-stream", user="op")
    assert answer.status == 202, answer.body
    digest = answer.json()["digest"]
    assert digest == hashlib.sha256(data).hexdigest()
    assert live.http("GET", f"/v1/documents/{digest}", user="bob").body == data
    record = live.wait_document(digest, user="bob")
    assert record["tx_hash"] == answer.json()["tx_hash"] and record["height"] >= 1
    signed = verify_record(bytes.fromhex(record["record"]), live.opened.genesis.node_keys())
    check_document(data, signed.record)
    assert (record["kind"], record["meter"], record["valid_until_s"]) == (
        "verification", "M-B1", expired)
    genesis = live.opened.genesis  # the check of docs/guides/resident-auditor.md
    signers = tx_mod.record_signers(genesis.registrar_public_key, genesis.node_keys())
    opened = tx_mod.open_document(bytes.fromhex(record["record"]), signers, crypto.verify)
    assert opened.digest == hashlib.sha256(data).digest() and opened.signer == "node-0"
    block = live.http("GET", f"/v1/blocks/{record['height']}", user="audit").json()
    assert record["tx_hash"] in {t["tx_hash"] for t in block["results"]}
    again = live.http("POST", f"/v1/documents?kind=verification&meter=M-B1&valid_from_s=0"
                      f"&valid_until_s={expired}", body=data,
                      content_type="application/octet-stream", user="op")
    assert (again.status, again.json()["error"]) == (409, "document.exists")
    # Batches judged before the record stay as the chain judged them; later ones are flagged.
    committed = live.committed()
    assert live.submit(live.gateways["gw-b"].message(3)).outcome == "accepted"
    live.wait_committed(committed + 1)
    flagged = live.http("GET", "/v1/meters/M-B1/readings", user="bob").json()
    assert [r["seq"] for r in flagged if r["verification_lapsed"]] == [3, 3]
    assert all(not r["verification_lapsed"] for r in flagged if r["device_id"] != "gw-b"
               or r["seq"] != 3)
    violations = live.http("GET", "/v1/devices/gw-b/violations", user="bob").json()
    assert [(v["seq"], v["meter"]) for v in violations
            if v["code"] == "rule.verification"] == [(3, "M-B1")]
    listed = live.http("GET", "/v1/meters/M-B1/documents", user="bob").json()
    assert digest in {d["digest"] for d in listed}
    bad = live.http("POST", "/v1/documents?kind=verification&meter=M-B1&valid_from_s=5"
                    "&valid_until_s=5", body=b"x", content_type="application/octet-stream",
                    user="op")
    assert (bad.status, bad.json()["error"]) == (400, "document.record")


# -- registry transactions through the API -----------------------------------------------


def test_operator_enrolls_and_revokes_devices_as_chain_transactions(live: LiveNode) -> None:
    gateway = live.gateway("gw-enrolled", ("M-E1",))
    committed = live.committed()
    answer = live.http("POST", "/v1/devices/enrollments", body=live.enrollment(gateway),
                       content_type="application/cbor", user="op")
    assert answer.status == 202, answer.body
    wrong_kind = live.http("POST", "/v1/devices/revocations", body=live.enrollment(gateway),
                           content_type="application/cbor", user="op")
    assert (wrong_kind.status, wrong_kind.json()["error"]) == (400, "query.tx_kind")
    garbage = live.http("POST", "/v1/devices/revocations", body=b"\xff\x00",
                        content_type="application/cbor", user="op")
    assert garbage.status == 400 and garbage.json()["error"].startswith(("tx.", "cbor."))
    deadline = time.monotonic() + 10
    while live.http("GET", "/v1/devices/gw-enrolled", user="audit").status != 200:
        assert time.monotonic() < deadline, "enrollment not committed"
        time.sleep(0.02)
    assert live.submit(gateway.message(1, kcwt=False)).outcome == "accepted"
    live.wait_committed(committed + 1)
    device = live.http("GET", "/v1/devices/gw-enrolled", user="audit").json()[0]
    assert device["enrolled"] and device["batches"] == 1 and not device["revoked"]
    receipt = live.http("GET", "/v1/readings/gw-enrolled/1/receipt", user="audit")
    assert receipt.json()["certificate"] == gateway.certificate.hex()  # not in the batch
    verify_receipt(receipt.body, trust_from_genesis(live.opened.genesis), crypto.verify)
    revoked = live.http("POST", "/v1/devices/revocations",
                        body=live.revocation("gw-enrolled"), content_type="application/cbor",
                        user="op")
    assert revoked.status == 202
    deadline = time.monotonic() + 10
    while not live.http("GET", "/v1/devices/gw-enrolled", user="audit").json()[0]["revoked"]:
        assert time.monotonic() < deadline, "revocation not committed"
        time.sleep(0.02)


def test_accounts_managed_through_the_api(live: LiveNode) -> None:
    body = json.dumps({"username": "carol", "role": "resident", "password": "carol's password",
                       "meters": ["M-C1"]}).encode()
    assert live.http("POST", "/v1/accounts", body=body, user="op").status == 201
    again = live.http("POST", "/v1/accounts", body=body, user="op")
    assert (again.status, again.json()["error"]) == (409, "account.exists")
    weak = json.dumps({"username": "dan", "role": "auditor", "password": "short"}).encode()
    assert live.http("POST", "/v1/accounts", body=weak, user="op").json()["error"] == \
        "account.password"
    listed = live.http("GET", "/v1/accounts?format=csv", user="op").body.decode()
    assert "carol,resident,M-C1" in listed and "scrypt" not in listed
    assert live.login("carol", "carol's password").status == 200
    assert live.http("DELETE", "/v1/accounts/carol", user="op").status == 204
    gone = live.http("DELETE", "/v1/accounts/carol", user="op")
    assert (gone.status, gone.json()["error"]) == (404, "account.unknown")


def test_the_reading_index_is_derived_data_rebuilt_block_by_block(live: LiveNode,
                                                                  tmp_path: Path) -> None:
    from aggregator import node as node_mod
    from aggregator.query.ledger import LedgerReader, ReadingIndex

    reader = LedgerReader(live.data_dir / node_mod.LEDGER_FILE, live.opened.genesis.chain_id)
    index = ReadingIndex(tmp_path, reader)
    try:
        heights = []
        while not heights or heights[-1] < reader.height:
            heights.append(index.catch_up(txs_max=1))  # one block a call at this budget
        assert heights == list(range(1, reader.height + 1))
        assert (tmp_path / "query.sqlite").stat().st_mode & 0o077 == 0
        rebuilt = index.readings(M_ALICE, 0, 2**40, 0, 1000)
        served = live.http("GET", f"/v1/meters/{M_ALICE}/readings?limit=1000",
                           user="audit").json()
        assert [(r[3], r[4], r[5], r[6]) for r in rebuilt] == [
            (r["device_id"], r["seq"], r["obis"], r["value"]) for r in served]
    finally:
        index.close()
        reader.close()
