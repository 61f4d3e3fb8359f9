"""The errors of the query side, with the HTTP status each one answers with.

A request that is wrong (bad password, forged token, tampered ciphertext or document)
raises a RemoteProtocolError subclass; an operator's or caller's mistake (a weak
password at `accounts add`, a key file readable by others) a LocalProtocolError.
Codes are stable: logs, counters, HTTP problem bodies and CLI exit messages use them.

    GridLedgerError
    ├── LocalProtocolError
    │   └── QuerySetupError              query.setup            data dir, key file, parameters
    │       ├── AccountError             account.invalid        username, role, meters, devices
    │       │   ├── AccountExistsError   account.exists
    │       │   ├── UnknownAccountError  account.unknown
    │       │   └── WeakPasswordError    account.password
    │       └── KeyFileError             keys.file              class II key file unsafe or bad
    └── RemoteProtocolError
        ├── CredentialsError             auth.credentials       unknown user or wrong password
        ├── TokenError                   token.invalid
        │   ├── TokenMalformedError      token.malformed        not a JWS compact JWT
        │   ├── TokenTooLargeError       token.too_large
        │   ├── TokenAlgorithmError      token.alg              "none", HS256, anything not ES256
        │   ├── TokenSignatureError      token.signature
        │   ├── TokenExpiredError        token.expired
        │   ├── TokenNotYetValidError    token.not_yet_valid
        │   ├── TokenAudienceError       token.audience         another chain
        │   ├── TokenIssuerError         token.issuer           not a node of this chain
        │   └── TokenClaimsError         token.claims           missing or ill-typed claim
        ├── RateLimitedError             rate.limited           carries retry_after_s
        ├── ConfidentialError            confidential.invalid   sealed class II record
        │   ├── UnknownKeyError          confidential.key       key id not in the key ring
        │   └── DecryptError             confidential.decrypt   tag, record id or key id changed
        ├── DocumentError                document.invalid       class III
        │   ├── DocumentNotFoundError    document.not_found
        │   ├── DocumentLimitError       document.limit
        │   ├── DocumentIntegrityError   document.integrity     stored file no longer matches
        │   ├── DocumentRecordError      document.record        record malformed or badly signed
        │   └── DocumentMismatchError    document.mismatch      file is not the recorded one
        ├── TableError                   table.invalid          row does not fit its columns
        └── SignJsonError                signjson.invalid       raised with a finer code:
                                         signjson.structure, signjson.alg, signjson.signature
"""

from __future__ import annotations

from edge.portable.errors import GridLedgerError, LocalProtocolError, RemoteProtocolError


class QuerySetupError(LocalProtocolError):
    code = "query.setup"


class AccountError(QuerySetupError):
    code = "account.invalid"


class AccountExistsError(AccountError):
    code = "account.exists"


class UnknownAccountError(AccountError):
    code = "account.unknown"


class WeakPasswordError(AccountError):
    code = "account.password"


class KeyFileError(QuerySetupError):
    code = "keys.file"


class CredentialsError(RemoteProtocolError):
    code = "auth.credentials"


class TokenError(RemoteProtocolError):
    code = "token.invalid"


class TokenMalformedError(TokenError):
    code = "token.malformed"


class TokenTooLargeError(TokenError):
    code = "token.too_large"


class TokenAlgorithmError(TokenError):
    code = "token.alg"


class TokenSignatureError(TokenError):
    code = "token.signature"


class TokenExpiredError(TokenError):
    code = "token.expired"


class TokenNotYetValidError(TokenError):
    code = "token.not_yet_valid"


class TokenAudienceError(TokenError):
    code = "token.audience"


class TokenIssuerError(TokenError):
    code = "token.issuer"


class TokenClaimsError(TokenError):
    code = "token.claims"


class RateLimitedError(RemoteProtocolError):
    code = "rate.limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConfidentialError(RemoteProtocolError):
    code = "confidential.invalid"


class UnknownKeyError(ConfidentialError):
    code = "confidential.key"


class DecryptError(ConfidentialError):
    code = "confidential.decrypt"


class DocumentError(RemoteProtocolError):
    code = "document.invalid"


class DocumentNotFoundError(DocumentError):
    code = "document.not_found"


class DocumentLimitError(DocumentError):
    code = "document.limit"


class DocumentIntegrityError(DocumentError):
    code = "document.integrity"


class DocumentRecordError(DocumentError):
    code = "document.record"


class DocumentMismatchError(DocumentError):
    code = "document.mismatch"


class TableError(RemoteProtocolError):
    code = "table.invalid"


class SignJsonError(RemoteProtocolError):
    code = "signjson.invalid"


# What the HTTP layer answers for each error; the most specific class listed wins.
# A stored document failing its own hash is our fault (500), not the client's.
_HTTP_STATUS: tuple[tuple[type[GridLedgerError], int], ...] = (
    (DocumentIntegrityError, 500),
    (DocumentNotFoundError, 404),
    (DocumentLimitError, 413),
    (UnknownAccountError, 404),
    (AccountExistsError, 409),
    (AccountError, 400),
    (CredentialsError, 401),
    (TokenError, 401),
    (RateLimitedError, 429),
    (UnknownKeyError, 500),
    (DecryptError, 500),
    (QuerySetupError, 500),
    (RemoteProtocolError, 400),
)


def http_status(exc: GridLedgerError) -> int:
    """The HTTP status a query-side error answers with (400 for any other remote error)."""
    for cls, status in _HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 500
