"""Rate limits for POST /v1/auth/token and for each account's queries: token buckets with
an injected clock.

Theory of operation
-------------------
A bucket holds up to `burst` tokens and refills at `rate_per_s`; a request takes one
token or is refused with the time until one is back (HTTP 429, Retry-After).
`KeyedLimiter` keeps one bucket per key (client address, username) in an LRU map of at
most `keys_max` entries: when full, the bucket touched longest ago is dropped, which is
the one most likely to have refilled anyway.  Memory is thus bounded whatever the number
of addresses an attacker uses; what such an attacker still meets is the global bucket.

`TokenRequestLimiter` checks the client's address, the username asked for and the
global bucket, and takes a token from all three only if all three have one.  A refused
request therefore costs no bucket anything: one client hammering the endpoint empties
its own address bucket and then nothing else, so it cannot drain the global bucket and
lock everyone out.

Limits (with reasons)
---------------------
    GLOBAL       burst 20, 5/s     each login costs ~0.15 s of one core (scrypt N = 2^15);
                                    5/s keeps login below one of the node's two cores
    PER_ADDRESS  burst 10, 1/6 s   a person retyping a password never meets it
    PER_USERNAME burst 5, 1/12 s   slows online guessing of one account from many
                                    addresses to 300 guesses an hour; the price is that an
                                    attacker can hold one user's logins off while it lasts
    PER_ACCOUNT_QUERIES  burst 100, 50/s   every authenticated request of one account: a
                                    node answers ~460 receipts/s on one core
                                    (docs/query-access.md), so one leaked or runaway
                                    token gets about a tenth of it and cannot starve
                                    ingest on the same event loop; a person's dashboard
                                    or an export paging 1000 rows a request never meets it
    KEYS_MAX     10 000            per keyed limiter; ~200 bytes a bucket, ~2 MB at most
    KEY_CHARS_MAX  128             longer keys are cut: usernames have at most 64 chars
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from .errors import QuerySetupError, RateLimitedError


@dataclass(frozen=True)
class Limit:
    burst: int
    rate_per_s: float


GLOBAL = Limit(burst=20, rate_per_s=5.0)
PER_ADDRESS = Limit(burst=10, rate_per_s=1 / 6)
PER_USERNAME = Limit(burst=5, rate_per_s=1 / 12)
PER_ACCOUNT_QUERIES = Limit(burst=100, rate_per_s=50.0)
KEYS_MAX = 10_000
KEY_CHARS_MAX = 128


class Bucket:
    """One token bucket; `now_s` must not go backwards (a step back counts as no time)."""

    __slots__ = ("_limit", "_tokens", "_updated_s")

    def __init__(self, limit: Limit, now_s: float) -> None:
        if limit.burst < 1 or limit.rate_per_s <= 0:
            raise QuerySetupError("a rate limit needs burst >= 1 and a positive rate")
        self._limit = limit
        self._tokens = float(limit.burst)
        self._updated_s = now_s

    def _refill(self, now_s: float) -> None:
        elapsed_s = max(0.0, now_s - self._updated_s)
        self._tokens = min(float(self._limit.burst),
                           self._tokens + elapsed_s * self._limit.rate_per_s)
        self._updated_s = max(self._updated_s, now_s)

    def wait_s(self, now_s: float) -> float:
        """Seconds until a token is available; 0.0 if one is now.  Takes nothing."""
        self._refill(now_s)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self._limit.rate_per_s

    def take(self, now_s: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        wait_s = self.wait_s(now_s)
        if wait_s == 0.0:
            self._tokens -= 1.0
        return wait_s


class KeyedLimiter:
    """A bucket per key, at most `keys_max` of them, least recently used dropped first."""

    def __init__(self, limit: Limit, keys_max: int = KEYS_MAX) -> None:
        if keys_max < 1:
            raise QuerySetupError("keys_max must be at least 1")
        self.limit = limit
        self.keys_max = keys_max
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: str, now_s: float) -> Bucket:
        """The bucket of `key`, made full if new, marked as most recently used."""
        key = key[:KEY_CHARS_MAX]
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(self.limit, now_s)
            self._buckets[key] = bucket
            if len(self._buckets) > self.keys_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: str, now_s: float) -> float:
        return self.bucket(key, now_s).take(now_s)


class QueryLimiter:
    """The per-account limit of authenticated requests (PER_ACCOUNT_QUERIES)."""

    def __init__(self, limit: Limit = PER_ACCOUNT_QUERIES, keys_max: int = KEYS_MAX) -> None:
        self._accounts = KeyedLimiter(limit, keys_max)

    def check(self, username: str, now_s: float) -> None:
        """Take a token for `username`; RateLimitedError (with retry_after_s) if none."""
        wait_s = self._accounts.take(username, now_s)
        if wait_s > 0:
            raise RateLimitedError(f"too many requests for this account; retry in "
                                   f"{math.ceil(wait_s)} s", wait_s)


class TokenRequestLimiter:
    """The global, per-address and per-username limits of the token endpoint."""

    def __init__(self, global_limit: Limit = GLOBAL, per_address: Limit = PER_ADDRESS,
                 per_username: Limit = PER_USERNAME, keys_max: int = KEYS_MAX) -> None:
        self._global = KeyedLimiter(global_limit, 1)
        self._addresses = KeyedLimiter(per_address, keys_max)
        self._usernames = KeyedLimiter(per_username, keys_max)

    def check(self, address: str, username: str, now_s: float) -> None:
        """Return if the request may go on; RateLimitedError (with retry_after_s) if not."""
        buckets = (("address", self._addresses.bucket(address, now_s)),
                   ("username", self._usernames.bucket(username, now_s)),
                   ("node", self._global.bucket("", now_s)))
        waits = [(bucket.wait_s(now_s), name) for name, bucket in buckets]
        wait_s, name = max(waits)
        if wait_s > 0:
            raise RateLimitedError(f"too many token requests for this {name}; "
                                   f"retry in {math.ceil(wait_s)} s", wait_s)
        for _, bucket in buckets:
            bucket.take(now_s)
