"""What a driver hands the edge agent: one `MeterReading` per meter per poll.

`values` maps an OBIS code to a `Value` in SI (J, W, V, A, Hz, "/", m3); `status` is
"ok" or a short failure code, which the agent turns into a SenML record n="status",
vs=status.  Status codes are stable: they appear in logs, counters and on the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.portable.errors import GridLedgerError, RemoteProtocolError
from edge.portable.modbus import ResponseTimeoutError

OK = "ok"
TIMEOUT = "timeout"          # no answer within the request timeout
CRC = "crc"                  # an answer arrived with a bad CRC
EXCEPTION = "exception"      # the meter answered a Modbus exception
TRUNCATED = "truncated"      # the answer ended early
MALFORMED = "malformed"      # the answer broke the protocol otherwise
CONNECT = "connect"          # TCP connect or serial open failed
OFFLINE = "offline"          # not polled: waiting out the backoff after repeated failures
STATUSES = (OK, TIMEOUT, CRC, EXCEPTION, TRUNCATED, MALFORMED, CONNECT, OFFLINE)

# Error code (edge/portable/errors.py tree and below) -> status.
_STATUS_OF_CODE = {
    "meter.timeout": TIMEOUT,
    "meter.connect": CONNECT,
    "frame.crc": CRC,
    "frame.truncated": TRUNCATED,
    "modbus.exception": EXCEPTION,
}


MeterTimeoutError = ResponseTimeoutError


class MeterConnectError(RemoteProtocolError):
    code = "meter.connect"


def status_of(error: GridLedgerError) -> str:
    return _STATUS_OF_CODE.get(error.code, MALFORMED)


@dataclass(frozen=True)
class Value:
    v: float
    u: str


@dataclass(frozen=True)
class MeterReading:
    meter_id: str
    profile: str
    status: str
    read_at_s: float
    values: dict[str, Value] = field(default_factory=dict)
    error: str = ""
    implausible: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        return {
            "meter": self.meter_id,
            "profile": self.profile,
            "status": self.status,
            "read_at_s": self.read_at_s,
            "values": {obis: {"v": x.v, "u": x.u} for obis, x in sorted(self.values.items())},
            "error": self.error,
            "implausible": list(self.implausible),
        }
