"""Fixtures for command-line tests: run `gridledger` in-process and capture its output."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridledger.cli import main

SENML_READING = [
    {"bn": "SDM120-1/", "bt": 1763760000, "n": "1-0:1.8.0", "u": "J", "s": 36000000},
    {"n": "1-0:1.7.0", "u": "W", "v": 512.5},
    {"n": "1-0:32.7.0", "u": "V", "v": 230.25},
    {"bn": "SDM120-2/", "bt": 1763760001, "n": "status", "vs": "timeout"},
]


@dataclass
class Result:
    status: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str | Path) -> Result:
        status = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return _run


@pytest.fixture
def ca(tmp_path: Path, run: Run) -> Path:
    directory = tmp_path / "ca"
    assert run("certs", "init", "--dir", directory).status == 0
    return directory


@pytest.fixture
def reading(tmp_path: Path) -> Path:
    path = tmp_path / "reading.json"
    path.write_text(json.dumps(SENML_READING))
    return path
