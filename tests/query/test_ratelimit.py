"""Token buckets against an injected clock: bursts, refill, LRU bound, the three limits."""

from __future__ import annotations

import random

import pytest

from aggregator.query import ratelimit
from aggregator.query.errors import QuerySetupError, RateLimitedError
from aggregator.query.ratelimit import Bucket, KeyedLimiter, Limit, TokenRequestLimiter
from tests.query.conftest import NOW_S


def test_bucket_burst_then_refill() -> None:
    bucket = Bucket(Limit(burst=3, rate_per_s=0.5), NOW_S)
    assert [bucket.take(NOW_S) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(NOW_S) == pytest.approx(2.0)
    assert bucket.take(NOW_S + 1.9) > 0
    assert bucket.take(NOW_S + 2.0) == 0.0
    assert bucket.take(NOW_S + 1000) == 0.0  # refill capped at burst
    assert [bucket.take(NOW_S + 1000) for _ in range(3)] == [0.0, 0.0, pytest.approx(2.0)]


def test_clock_going_back_gives_no_tokens() -> None:
    bucket = Bucket(Limit(burst=1, rate_per_s=1.0), NOW_S)
    assert bucket.take(NOW_S) == 0.0
    assert bucket.take(NOW_S - 100) > 0
    assert bucket.take(NOW_S + 1) == 0.0


def test_long_run_rate_matches_the_limit(rng: random.Random) -> None:
    limit = Limit(burst=5, rate_per_s=2.0)
    bucket = Bucket(limit, NOW_S)
    now_s, granted = float(NOW_S), 0
    for _ in range(20_000):
        now_s += rng.uniform(0, 0.05)
        granted += bucket.take(now_s) == 0.0
    elapsed_s = now_s - NOW_S
    assert granted <= limit.burst + elapsed_s * limit.rate_per_s + 1e-9
    assert granted >= elapsed_s * limit.rate_per_s - 1


def test_keyed_limiter_is_bounded_and_drops_least_recent() -> None:
    limiter = KeyedLimiter(Limit(burst=1, rate_per_s=0.001), keys_max=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key, NOW_S) == 0.0
    assert limiter.take("a", NOW_S) > 0      # touches "a": "b" is now the oldest
    assert limiter.take("d", NOW_S) == 0.0   # evicts "b"
    assert len(limiter) == 3
    assert limiter.take("a", NOW_S) > 0      # "a" kept its empty bucket
    assert limiter.take("b", NOW_S) == 0.0   # "b" starts afresh


def test_keyed_limiter_memory_bounded_under_many_keys(rng: random.Random) -> None:
    limiter = KeyedLimiter(ratelimit.PER_ADDRESS, keys_max=100)
    for _ in range(5000):
        limiter.take(f"10.{rng.randrange(256)}.{rng.randrange(256)}.1" + "x" * 500, NOW_S)
    assert len(limiter) == 100
    assert all(len(k) <= ratelimit.KEY_CHARS_MAX for k in limiter._buckets)


def test_per_address_limit() -> None:
    limiter = TokenRequestLimiter()
    for i in range(ratelimit.PER_ADDRESS.burst):
        limiter.check("192.0.2.1", f"user{i}", NOW_S)
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("192.0.2.1", "another", NOW_S)
    assert caught.value.code == "rate.limited"
    assert caught.value.retry_after_s == pytest.approx(6.0)
    limiter.check("192.0.2.2", "another", NOW_S)       # other addresses unaffected
    limiter.check("192.0.2.1", "another", NOW_S + 6)   # refilled


def test_per_username_limit_across_addresses() -> None:
    limiter = TokenRequestLimiter()
    for i in range(ratelimit.PER_USERNAME.burst):
        limiter.check(f"198.51.100.{i}", "alice", NOW_S)
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("198.51.100.99", "alice", NOW_S)
    assert "username" in str(caught.value)
    assert caught.value.retry_after_s == pytest.approx(12.0)


def test_global_limit() -> None:
    limiter = TokenRequestLimiter()
    for i in range(ratelimit.GLOBAL.burst):
        limiter.check(f"203.0.113.{i}", f"u{i}", NOW_S)
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("203.0.113.200", "u200", NOW_S)
    assert "node" in str(caught.value)
    limiter.check("203.0.113.200", "u200", NOW_S + 1 / ratelimit.GLOBAL.rate_per_s)


def test_refused_requests_cost_no_bucket_anything() -> None:
    limiter = TokenRequestLimiter()
    for i in range(ratelimit.PER_ADDRESS.burst):
        limiter.check("192.0.2.66", f"spray{i}", NOW_S)
    for i in range(1000):  # one client hammering: refused, and the node bucket keeps its tokens
        with pytest.raises(RateLimitedError):
            limiter.check("192.0.2.66", f"spray{i}", NOW_S)
    for i in range(ratelimit.GLOBAL.burst - ratelimit.PER_ADDRESS.burst):
        limiter.check(f"198.51.100.{i}", f"user{i}", NOW_S)
    with pytest.raises(RateLimitedError):
        limiter.check("198.51.100.200", "late", NOW_S)


def test_the_longest_wait_is_reported() -> None:
    limiter = TokenRequestLimiter()
    for i in range(ratelimit.PER_USERNAME.burst):
        limiter.check(f"203.0.113.{i}", "bob", NOW_S)
    for i in range(ratelimit.PER_ADDRESS.burst):
        limiter.check("203.0.113.50", f"other{i}", NOW_S)
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("203.0.113.50", "bob", NOW_S)
    assert caught.value.retry_after_s == pytest.approx(12.0)
    assert "username" in str(caught.value)


@pytest.mark.parametrize(("burst", "rate"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_invalid_limits(burst: int, rate: float) -> None:
    with pytest.raises(QuerySetupError):
        Bucket(Limit(burst, rate), NOW_S)
    with pytest.raises(QuerySetupError):
        KeyedLimiter(Limit(1, 1.0), keys_max=0)
