"""`gridledger demo` through the installed console script, as `./dev demo` runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.portable import batch as batch_mod


def gridledger() -> str:
    return str(Path(sys.executable).parent / "gridledger")


def test_demo_verifies_the_genuine_batch_and_catches_the_forgery(tmp_path: Path) -> None:
    proc = subprocess.run([gridledger(), "demo", "--dir", str(tmp_path), "--seed", "3"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "genuine batch verified: yes" in proc.stdout
    assert "tampered batch caught:  yes" in proc.stdout
    assert "[cose.signature]" in proc.stdout
    message, batch = batch_mod.open_message((tmp_path / "batch-1.cose").read_bytes())
    assert batch.device_id == "gw-demo-0001" and batch.seq == 1
    assert message.kcwt is not None


def test_demo_leaves_nothing_behind_without_dir(tmp_path: Path) -> None:
    proc = subprocess.run([gridledger(), "demo"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_teaches_every_group() -> None:
    proc = subprocess.run([gridledger(), "--help"], capture_output=True, text=True, timeout=60,
                          check=True)
    for group in ("demo", "certs", "edge", "sim"):
        assert group in proc.stdout
