"""Real processes for the agent tests: simulated meters, the agent, the responder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.registrar import Registrar
from edge import crypto
from gridledger.genesis import Genesis, Validator
from tests.agent.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "gw-0001"


@dataclass
class Identity:
    directory: Path
    key: Path
    cert: Path
    genesis: Path
    node_key: crypto.SigningKey
    registrar_public_key: bytes


def make_identity(directory: Path, device_id: str = DEVICE) -> Identity:
    now_s = int(time.time())
    registrar = Registrar.init(directory / "ca")
    issued = registrar.issue(device_id, now_s - 60)
    assert issued.device_key is not None
    key, cert = directory / f"{device_id}.key", directory / f"{device_id}.cwt"
    crypto.write_private_key(key, issued.device_key)
    cert.write_bytes(issued.certificate)
    node_key = crypto.SigningKey.generate()
    genesis = Genesis("gl-test", now_s, "registrar", registrar.public_key,
                      (Validator("node-0", node_key.public_key()),))
    genesis.dump(directory / "genesis.json")
    return Identity(directory, key, cert, directory / "genesis.json", node_key,
                    registrar.public_key)


class Process:
    """A child process whose output goes to a file; stopped politely, then killed."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def terminate(self, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the agent logs its tasks' stacks
            time.sleep(0.5)
            raise
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def gridledger(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridledger", *args]


class Sims:
    """`gridledger sim meter` processes; the first line of each one's stdout says where
    to connect.  All of them are stopped when the test ends."""

    def __init__(self) -> None:
        self.processes: list[Process] = []

    def start(self, directory: Path, *args: str) -> str:
        out = directory / f"sim-{len(self.processes)}.out"
        process = Process(gridledger("sim", "meter", *args), out).start()
        self.processes.append(process)
        wait_until(lambda: "\n" in process.text(), 15, "the simulator to start")
        return process.text().splitlines()[0].strip()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate(5)


def agent_argv(identity: Identity, state_dir: Path, meters: list[str],
               *extra: str) -> list[str]:
    argv = ["edge", "run", "--device-id", DEVICE, "--key", str(identity.key),
            "--cert", str(identity.cert), "--genesis", str(identity.genesis),
            "--state-dir", str(state_dir), "--clock", "synced", "--log-level", "info"]
    for meter in meters:
        argv += ["--meter", meter]
    return gridledger(*argv, *extra)


def responder(identity: Identity, out: Path, log: Path, *where: str) -> Process:
    argv = [sys.executable, "-m", "tests.agent.responder",
            "--node-key", identity.node_key.to_bytes().hex(),
            "--registrar", identity.registrar_public_key.hex(), "--out", str(out), *where]
    return Process(argv, log)


def arrivals(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]


def status(state_dir: Path) -> dict[str, Any]:
    done = subprocess.run(gridledger("edge", "status", "--state-dir", str(state_dir), "--json"),
                          cwd=ROOT, capture_output=True, check=True, timeout=30)
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def log_events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
