"""Fixtures for the agent tests: a real Mosquitto per session, deadlines, printed seeds."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

LOOPBACK = "127.0.0.1"
MOSQUITTO = "/usr/sbin/mosquitto"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """A real broker on a loopback port that can be stopped and started again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} {LOOPBACK}\nallow_anonymous true\n"
                               "persistence false\n")
        self.log = directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.port), 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def seed() -> int:
    """A fresh seed per test (or GL_SEED=...), printed so that a failure can be replayed."""
    value = int(os.environ.get("GL_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"seed={value} (replay with GL_SEED={value})")
    return value


@pytest.fixture
def sims() -> Iterator[Any]:
    from tests.agent.harness import Sims

    running = Sims()
    yield running
    running.stop()
