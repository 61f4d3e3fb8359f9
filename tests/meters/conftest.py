"""Shared helpers: deadlines instead of sleeps, seeds printed on failure, loopback only."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.ports import free_port  # noqa: F401  (re-exported to the tests here)

# pymodbus logs every failed request on its own; the tests assert on our status codes.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

LOOPBACK = "127.0.0.1"


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


async def wait_until_async(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0,
                           what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def run(coro: Awaitable[Any], timeout_s: float = 30.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout_s)
    return asyncio.run(bounded())


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A fresh seed per test (or GL_SEED=...), printed so that a failure can be replayed."""
    value = int(os.environ.get("GL_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"seed={value} (replay with GL_SEED={value})")
    return value
