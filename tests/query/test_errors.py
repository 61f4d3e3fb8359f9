"""The query error tree: stable distinct codes, the right base class, an HTTP status each."""

from __future__ import annotations

import inspect

import pytest

from aggregator.query import errors
from edge.portable.errors import GridLedgerError, LocalProtocolError, RemoteProtocolError

CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass)
           if issubclass(c, GridLedgerError) and c.__module__ == errors.__name__]


def test_codes_are_distinct_and_drawn_in_the_docstring() -> None:
    codes = [c.code for c in CLASSES]
    assert len(codes) == len(set(codes))
    for cls in CLASSES:
        assert cls.__name__ in (errors.__doc__ or "") and cls.code in (errors.__doc__ or "")


def test_every_class_is_local_or_remote() -> None:
    for cls in CLASSES:
        assert issubclass(cls, LocalProtocolError | RemoteProtocolError)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.CredentialsError("x"), 401),
        (errors.TokenExpiredError("x"), 401),
        (errors.TokenAlgorithmError("x"), 401),
        (errors.RateLimitedError("x", 3.0), 429),
        (errors.DocumentNotFoundError("x"), 404),
        (errors.DocumentLimitError("x"), 413),
        (errors.DocumentIntegrityError("x"), 500),
        (errors.DocumentMismatchError("x"), 400),
        (errors.AccountExistsError("x"), 409),
        (errors.UnknownAccountError("x"), 404),
        (errors.WeakPasswordError("x"), 400),
        (errors.KeyFileError("x"), 500),
        (errors.DecryptError("x"), 500),
        (errors.SignJsonError("x", "signjson.alg"), 400),
        (LocalProtocolError("x"), 500),
    ],
)
def test_http_status(error: GridLedgerError, status: int) -> None:
    assert errors.http_status(error) == status


def test_rate_limited_carries_retry_after() -> None:
    assert errors.RateLimitedError("slow down", 2.5).retry_after_s == 2.5
