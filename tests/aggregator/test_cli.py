"""`gridledger aggregator init` and `verify`, and opening a node directory."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from aggregator import node as node_mod
from edge import crypto
from edge.portable import batch as batch_mod
from edge.portable import receipt
from edge.portable.batch import Batch, MeterGroup, Record
from gridledger import genesis as genesis_mod
from gridledger.cli import main
from tests.aggregator.helpers import World


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "ca"
    assert run(capsys, "certs", "init", "--dir", directory, "--name", "utility-ca")[0] == 0
    return directory


def test_init_writes_key_genesis_and_ledger(
    tmp_path: Path, ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "node"
    status, out, _ = run(
        capsys,
        "aggregator",
        "init",
        "--data-dir",
        data,
        "--ca-dir",
        ca,
        "--chain-id",
        "gl-region-7",
    )
    assert status == 0 and "gl-region-7" in out
    assert stat.S_IMODE((data / "node.key").stat().st_mode) == 0o600
    genesis = genesis_mod.load(data / "genesis.json")
    assert genesis.chain_id == "gl-region-7" and genesis.engine == "solo"
    assert genesis.registrar_name == "utility-ca"
    assert json.loads((data / "node.json").read_text()) == {"node_id": "node-0"}
    assert (data / "ledger.sqlite").exists()
    status, out, _ = run(capsys, "aggregator", "verify", "--data-dir", data)
    assert status == 0 and "verified" in out and "height" in out


def test_init_refuses_to_replace_a_node(
    tmp_path: Path, ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "node"
    assert run(capsys, "aggregator", "init", "--data-dir", data, "--ca-dir", ca)[0] == 0
    status, _, err = run(capsys, "aggregator", "init", "--data-dir", data, "--ca-dir", ca)
    assert status == 2 and "[aggregator.data_dir]" in err


def test_verify_refuses_a_corrupted_ledger(
    tmp_path: Path, ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "node"
    run(capsys, "aggregator", "init", "--data-dir", data, "--ca-dir", ca)
    node = node_mod.open_node(data)
    world = World()
    world.registrar = crypto.read_private_key(ca / "registrar.key")
    start = node.genesis.genesis_time
    certificate = world.cert("gw-1", meters=("M1",), iat=start - 10, exp=start + 86400)
    group = MeterGroup("M1", node.genesis.genesis_time, [Record("1-0:1.8.0", 5, "J")])
    message = batch_mod.sign(
        Batch("gw-1", 1, node.genesis.genesis_time, True, [group]),
        world.device_key("gw-1").sign,
        certificate,
    )
    now = node.genesis.genesis_time + 1.0
    assert node.engine.submit_message(message, now).status == "accepted"
    actions = node.engine.handle_timeout(now + 5)
    keys = node.genesis.node_keys()
    receipts = [a for a in actions if hasattr(a, "data")]
    _, device_id, entries = receipt.verify(receipts[0].data, keys, crypto.verify)
    assert (device_id, entries) == ("gw-1", [receipt.committed(1, 1)])
    node.store.close()
    conn = sqlite3.connect(data / "ledger.sqlite")
    (raw,) = conn.execute("SELECT data FROM block WHERE height = 1").fetchone()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 1
    conn.execute("UPDATE block SET data = ? WHERE height = 1", (bytes(flipped),))
    conn.commit()
    conn.close()
    status, _, err = run(capsys, "aggregator", "verify", "--data-dir", data)
    assert status == 2 and "[store.corrupt]" in err
