"""Receipts on a BFT cluster: four validator processes (`aggregator.cluster.local`), one
batch over CoAP, the receipt fetched from two nodes with one token, and each verified
offline against the genesis: a precommit certificate by more than 2/3 of the voting power
over the block hash, which a version 2 header makes cover the whole block, so the receipt
holds the header and not the block."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from aggregator.cluster import local
from aggregator.query.accounts import AccountStore
from aggregator.query.receipts import trust_from_genesis, verify_receipt
from certs.registrar import Registrar
from edge import crypto
from gridledger import genesis as genesis_mod
from tests.aggregator.test_run import post, signed_batch
from tests.query.conftest import CHEAP_SCRYPT

DEADLINE_S = 60.0
PASSWORD = "cluster auditor password"


def _get(address: str, path: str, token: str | None = None,
         body: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://{address}{path}", data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _committed(entry: dict[str, Any]) -> bool:
    status = local.node_status(entry) or {}
    return int(str(status.get("batches_committed", 0))) >= 1


def test_a_cluster_receipt_verifies_against_the_genesis(tmp_path: Path) -> None:
    cluster = local.create(tmp_path / "cluster", 4, chain_id="gl-query-bft")
    first, third = cluster["nodes"][0], cluster["nodes"][2]
    store = AccountStore(Path(first["dir"]), CHEAP_SCRYPT)
    store.add("regulator", "auditor", PASSWORD, int(time.time()))
    store.close()
    registrar = Registrar.open(Path(cluster["ca_dir"]))
    try:
        local.start(tmp_path / "cluster", cluster)
        local.wait_ready(cluster, DEADLINE_S)
        coap_port = int(first["coap"].rsplit(":", 1)[1])
        answer = asyncio.run(post(coap_port, signed_batch(registrar, 1)))
        assert str(answer.code) == "2.04 Changed", answer.payload
        _wait(lambda: _committed(first) and _committed(third), "the batch on both nodes")
        token = _get(first["http"], "/v1/auth/token",
                     body={"username": "regulator", "password": PASSWORD})["access_token"]
        receipts = [_get(e["http"], "/v1/readings/gw-run-1/1/receipt", token)
                    for e in (first, third)]  # node-2 accepts node-0's token
        nodes = _get(first["http"], "/v1/chain", token)["nodes"]
    finally:
        local.stop(cluster)
        for entry in cluster["nodes"]:
            if local.alive(entry.get("pid")):
                os.kill(entry["pid"], signal.SIGKILL)
    genesis = genesis_mod.load(Path(first["dir"]) / "genesis.json")
    trust = trust_from_genesis(genesis)
    for receipt in receipts:
        assert receipt["block"] is None and "round" in receipt["commit"]
        assert receipt["commit"]["value_id"] == receipt["commit"]["block_hash"]
        assert len(json.dumps(receipt)) < 8 * 1024
        verified = verify_receipt(json.dumps(receipt), trust, crypto.verify)
        assert verified.total_power == 4 and verified.signed_power >= 3
        assert (verified.device_id, verified.seq) == ("gw-run-1", 1)
    assert receipts[0]["header"] == receipts[1]["header"]  # one chain, one header
    assert [n["node_id"] for n in nodes] == [f"node-{i}" for i in range(4)]
    assert all(n["reachable"] and n["head"] >= 1 for n in nodes), nodes
