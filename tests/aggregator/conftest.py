"""Fixtures for the aggregator tests: a registrar, devices, an application, a solo engine.

Randomness is seeded once per run (GL_SEED=... replays it); a failing test prints the seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator
from typing import Any

import pytest

from tests.aggregator.helpers import World

SEED = int(os.environ.get("GL_SEED", random.SystemRandom().randrange(1 << 30)))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture
def world() -> World:
    return World()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        report.sections.append(("seed", f"replay with GL_SEED={SEED}"))
    return report
