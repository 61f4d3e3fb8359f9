"""The whole path with the real commands: `gridledger aggregator init`, `gridledger accounts
add`, `gridledger aggregator run` as a process, a batch over CoAP, login and a receipt
over HTTP, and `gridledger verify` on it, offline."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

from certs.registrar import Registrar
from tests.aggregator.test_run import RunningNode, gridledger, post, signed_batch, wait_for

PASSWORD = "regulator's long password"


def _http(port: int, path: str, body: dict[str, str] | None = None,
          token: str | None = None) -> bytes:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return bytes(answer.read())


def test_a_regulator_fetches_a_receipt_and_verifies_it_offline(tmp_path: Path) -> None:
    registrar = Registrar.init(tmp_path / "ca", "test-registrar")
    data_dir = tmp_path / "node"
    subprocess.run([gridledger(), "aggregator", "init", "--data-dir", str(data_dir),
                    "--ca-dir", str(tmp_path / "ca"), "--chain-id", "gl-e2e"],
                   check=True, capture_output=True, timeout=60)
    subprocess.run([gridledger(), "accounts", "add", "--data-dir", str(data_dir),
                    "--username", "regulator", "--role", "auditor"],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True,
                   timeout=60)
    node = RunningNode(data_dir, tmp_path / "ca")
    try:
        answer = asyncio.run(post(node.coap_port, signed_batch(registrar, 1)))
        assert str(answer.code) == "2.04 Changed", answer.payload
        wait_for(lambda: (node.status() or {}).get("batches_committed") == 1, "a commit",
                 node.proc)
        login = json.loads(_http(node.http_port, "/v1/auth/token",
                                 {"username": "regulator", "password": PASSWORD}))
        receipt = _http(node.http_port, "/v1/readings/gw-run-1/1/receipt",
                        token=login["access_token"])
    finally:
        assert node.stop() == 0
    assert PASSWORD not in node.log.read_text()  # secrets never reach the log
    path = tmp_path / "receipt.json"
    path.write_bytes(receipt)
    genesis = str(data_dir / "genesis.json")
    verified = subprocess.run([gridledger(), "verify", str(path), "--genesis", genesis],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    assert "gw-run-1/1" in verified.stdout and "power 1 of 1" in verified.stdout
    bundle = json.loads(receipt)
    bundle["leaves"][0]["index"] += 1
    path.write_text(json.dumps(bundle))
    refused = subprocess.run([gridledger(), "verify", str(path), "--genesis", genesis],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error [receipt.inclusion]")
