"""The error tree of GridLedger.

Every error the project raises on purpose derives from GridLedgerError and carries a
stable `code` (a short dotted string that logs, counters, CoAP diagnostics and exit
messages use) and a one-line message.  Bytes from outside that are wrong raise a
RemoteProtocolError subclass; misuse by the caller raises LocalProtocolError.  Any other
exception escaping a decoder is a bug, and the fuzz tests say so.

    GridLedgerError
    ├── LocalProtocolError            local.misuse       caller passed something invalid
    │   ├── ProfileError              profile.invalid    meter profile file (hardware/profiles.py)
    │   │   └── UnknownProfileError   profile.unknown
    │   └── SimulatorError            sim.invalid        simulator set-up (simulator/model.py)
    └── RemoteProtocolError           remote.invalid
        ├── ResponseTimeoutError      meter.timeout      no answer in time (modbus.py)
        ├── MeterConnectError         meter.connect      port or TCP connect (edge/meters)
        ├── DecodeError               cbor.*             CBOR bytes (cbor.py)
        │   ├── TruncatedError        cbor.truncated
        │   ├── TrailingBytesError    cbor.trailing
        │   ├── NonCanonicalError     cbor.noncanonical
        │   ├── UnsupportedError      cbor.unsupported
        │   └── LimitError            cbor.limit
        ├── CoseError                 cose.*             COSE_Sign1 (cose.py)
        │   ├── WrongTagError         cose.tag
        │   ├── MalformedCoseError    cose.structure
        │   ├── AlgorithmError        cose.alg
        │   ├── KidMismatchError      cose.kid
        │   └── BadSignatureError     cose.signature
        ├── BatchError                batch.*            batch envelope (batch.py)
        ├── CertificateError          cert.*             device certificates (cwt.py)
        │   ├── CertificateExpiredError   cert.expired
        │   ├── CertificateNotYetValidError cert.not_yet_valid
        │   ├── ForeignCertificateError   cert.foreign
        │   ├── CertificateSignatureError cert.signature
        │   ├── RevokedCertificateError   cert.revoked
        │   └── MalformedCertificateError cert.structure
        └── FrameError                frame.*            meter framing (modbus.py, dsmr.py)
            ├── CrcError              frame.crc          CRC-16/MODBUS or CRC-16/ARC mismatch
            ├── TruncatedFrameError   frame.truncated    frame ended early, bytes left over
            ├── MalformedFrameError   frame.malformed    lengths or fields inconsistent
            ├── FrameLimitError       frame.limit        over a documented size limit
            ├── UnsupportedFunctionError frame.function  Modbus function we cannot frame
            └── ModbusExceptionError  modbus.exception   the meter answered an exception

Portable: runs on MicroPython, so no typing, dataclasses or f-string "=" here.
"""


class GridLedgerError(Exception):
    """Base of every error GridLedger raises on purpose."""

    code = "error"

    def __init__(self, message: str = "", code: str = "") -> None:
        super().__init__(message or self.__class__.__name__)  # MicroPython lacks Exception.__init__
        self.message = message or self.__class__.__name__
        if code:
            self.code = code

    def __str__(self) -> str:
        return self.message


class LocalProtocolError(GridLedgerError):
    """The caller asked for something invalid (our bug or the operator's input)."""

    code = "local.misuse"


class RemoteProtocolError(GridLedgerError):
    """Bytes from outside broke the protocol."""

    code = "remote.invalid"


# -- CBOR ------------------------------------------------------------------------------


class DecodeError(RemoteProtocolError):
    code = "cbor.invalid"


class TruncatedError(DecodeError):
    code = "cbor.truncated"


class TrailingBytesError(DecodeError):
    code = "cbor.trailing"


class NonCanonicalError(DecodeError):
    code = "cbor.noncanonical"


class UnsupportedError(DecodeError):
    code = "cbor.unsupported"


class LimitError(DecodeError):
    code = "cbor.limit"


# -- COSE ------------------------------------------------------------------------------


class CoseError(RemoteProtocolError):
    code = "cose.invalid"


class WrongTagError(CoseError):
    code = "cose.tag"


class MalformedCoseError(CoseError):
    code = "cose.structure"


class AlgorithmError(CoseError):
    code = "cose.alg"


class KidMismatchError(CoseError):
    code = "cose.kid"


class BadSignatureError(CoseError):
    code = "cose.signature"


# -- batch envelope --------------------------------------------------------------------


class BatchError(RemoteProtocolError):
    code = "batch.invalid"


# -- device certificates ---------------------------------------------------------------


class CertificateError(RemoteProtocolError):
    code = "cert.invalid"


class CertificateExpiredError(CertificateError):
    code = "cert.expired"


class CertificateNotYetValidError(CertificateError):
    code = "cert.not_yet_valid"


class ForeignCertificateError(CertificateError):
    code = "cert.foreign"


class CertificateSignatureError(CertificateError):
    code = "cert.signature"


class RevokedCertificateError(CertificateError):
    code = "cert.revoked"


class MalformedCertificateError(CertificateError):
    code = "cert.structure"


# -- meter framing (Modbus RTU, DSMR P1) -----------------------------------------------


class FrameError(RemoteProtocolError):
    code = "frame.invalid"
