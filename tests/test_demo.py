"""`gridledger demo` through the installed console script, as `./dev demo` runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.portable import batch as batch_mod


def gridledger() -> str:
    return str(Path(sys.executable).parent / "gridledger")


def test_identity_demo_verifies_the_genuine_batch_and_catches_the_forgery(
    tmp_path: Path,
) -> None:
    proc = subprocess.run([gridledger(), "demo", "--identity-only", "--dir", str(tmp_path),
                           "--seed", "3"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "genuine batch verified: yes" in proc.stdout
    assert "tampered batch caught:  yes" in proc.stdout
    assert "[cose.signature]" in proc.stdout
    message, batch = batch_mod.open_message((tmp_path / "batch-1.cose").read_bytes())
    assert batch.device_id == "gw-demo-0001" and batch.seq == 1
    assert message.kcwt is not None


def test_identity_demo_leaves_nothing_behind_without_dir(tmp_path: Path) -> None:
    proc = subprocess.run([gridledger(), "demo", "--identity-only"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_teaches_every_group() -> None:
    proc = subprocess.run([gridledger(), "--help"], capture_output=True, text=True, timeout=60,
                          check=True)
    for group in ("demo", "certs", "edge", "sim"):
        assert group in proc.stdout


def test_demo_runs_the_system_catches_every_fault_and_reconciles(tmp_path: Path) -> None:
    proc = subprocess.run([gridledger(), "demo", "--meters", "2", "--duration", "12",
                           "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "RECONCILED" in out and "NOT RECONCILED" not in out
    for code in ("cose.signature", "rule.replay", "rule.backwards"):
        assert f"x [{code}]" in out and f"caught 0 x [{code}]" not in out
    assert "gw-mqtt: signed seq 1.." in out and "gw-coap: signed seq 1.." in out
    # The ledger it leaves behind verifies on its own.
    check = subprocess.run([gridledger(), "aggregator", "verify", "--data-dir",
                            str(tmp_path / "node")], capture_output=True, text=True,
                           timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "verified" in check.stdout


def test_demo_refuses_nonsense_arguments() -> None:
    proc = subprocess.run([gridledger(), "demo", "--meters", "1"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "demo.usage" in proc.stderr
