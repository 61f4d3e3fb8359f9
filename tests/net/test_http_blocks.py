"""GET /v1/blocks/{height} over a real socket, served from a real node directory."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import aiocoap
import pytest

from aggregator.block import commit_sign_bytes
from aggregator.net.engine_node import EngineNode
from aggregator.net.http import parse_height
from edge import crypto

from .conftest import (
    Pki,
    coap_client,
    coap_post,
    loopback_config,
    make_node,
    run,
    serving,
    wait_until,
)
from .test_engine_node import ledger_node


async def fetch(port: int, path: str) -> tuple[int, str, dict[str, object]]:
    def get() -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.headers["content-type"], r.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers["content-type"], exc.read()

    status, kind, body = await asyncio.to_thread(get)
    return status, kind, json.loads(body)


def test_committed_block_is_served_with_txs_results_and_commit(pki: Pki, tmp_path: Path) -> None:
    device = pki.device("gw-blocks")
    messages = [device.message(1), device.message(2)]

    async def scenario() -> None:
        async with ledger_node(pki, tmp_path / "node", pooled=False) as (server, keys), \
                coap_client() as cl:
            node = server.node
            assert isinstance(node, EngineNode)
            for message in messages:
                answer = await coap_post(cl, server.ports["coap"], message)
                assert answer.code == aiocoap.CHANGED, answer.payload
            await wait_until(lambda: node.status()["batches_committed"] == 2, what="commit")
            store = node._engine.store
            port = server.ports["http"]
            status, kind, status_json = await fetch(port, "/v1/status")
            assert (status, kind) == (200, "application/json")
            assert status_json["mempool_txs"] == 0 and "mempool_bytes" in status_json
            shown: list[dict[str, object]] = []
            for height in range(1, store.height + 1):
                status, kind, body = await fetch(port, f"/v1/blocks/{height}")
                assert (status, kind) == (200, "application/json")
                assert body["hash"] == store.block(height).hash().hex()
                assert body["header"]["height"] == height  # type: ignore[index]
                shown.append(body)
            txs = [t for b in shown for t in b["txs"]]  # type: ignore[attr-defined]
            batches = [(t["kind"], t["device_id"], t["seq"]) for t in txs]
            assert batches == [("batch", "gw-blocks", 1), ("batch", "gw-blocks", 2)]
            results = [r for b in shown for r in b["results"]]  # type: ignore[attr-defined]
            assert [r["tx_hash"] for r in results] == [t["hash"] for t in txs]
            assert {r["code"] for r in results} == {"ok"}
            assert all(r["violations"] == [] for r in results)
            first = shown[0]
            header = first["header"]
            assert isinstance(header, dict)
            assert set(header) == {"version", "chain_id", "height", "time_s", "prev_hash",
                                   "txs_root", "log_root", "log_size", "state_root",
                                   "violations", "proposer"}
            assert header["chain_id"] == "gl-net-test"
            commit = first["commit"]
            assert isinstance(commit, dict) and commit["block_hash"] == first["hash"]
            [signature] = commit["signatures"]
            assert signature["node_id"] in keys
            seen = store.seen_commit(1)
            assert seen is not None and seen.signatures[0][1].hex() == signature["signature"]
            signed = commit_sign_bytes("gl-net-test", 1, bytes.fromhex(str(first["hash"])))
            assert crypto.verify(keys[signature["node_id"]], signed,
                                 bytes.fromhex(signature["signature"]))

    run(scenario())


@pytest.mark.parametrize("path, status, code", [
    ("/v1/blocks/0", 404, "http.no_block"),
    ("/v1/blocks/1", 404, "http.no_block"),
    ("/v1/blocks/9223372036854775807", 404, "http.no_block"),
    ("/v1/blocks/9999999999999999999", 404, "http.no_block"),
    ("/v1/blocks/abc", 400, "http.height"),
    ("/v1/blocks/-1", 400, "http.height"),
    ("/v1/blocks/1.0", 400, "http.height"),
    ("/v1/blocks/%C2%B2", 400, "http.height"),
    ("/v1/blocks/12345678901234567890", 400, "http.height"),
])
def test_missing_or_malformed_height_is_a_json_error(
    pki: Pki, tmp_path: Path, path: str, status: int, code: str
) -> None:
    async def scenario() -> None:
        async with ledger_node(pki, tmp_path / "node", pooled=False) as (server, _):
            got, kind, body = await fetch(server.ports["http"], path)
            assert (got, kind) == (status, "application/json")
            assert body["error"] == code and isinstance(body["detail"], str)

    run(scenario())


def test_a_node_without_a_ledger_has_no_blocks(pki: Pki) -> None:
    async def scenario() -> None:
        async with serving(make_node(pki), loopback_config()) as server:
            got, _, body = await fetch(server.ports["http"], "/v1/blocks/1")
            assert (got, body["error"]) == (404, "http.no_block")

    run(scenario())


def test_parse_height() -> None:
    assert parse_height("0") == 0 and parse_height("0042") == 42
    for text in ("", " 1", "1 ", "+1", "١", "1e3", "9" * 20):
        assert parse_height(text) is None
