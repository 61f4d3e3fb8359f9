"""Structured logs: one JSON object per line on stderr (journald keeps them as they are).

    {"t": 1763760000.123, "level": "info", "event": "batch_made", "seq": 42, ...}

`event` is a stable snake_case name; the other keys are the event's fields, passed as
`extra={"fields": {...}}`.  Nothing secret is ever a field (keys are never logged).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

LOGGER = "gridledger.agent"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"t": round(record.created, 3), "level": record.levelname.lower(),
                               "event": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup(level: str = "info") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # pymodbus and aiocoap log every failed request; our status records and events say it.
    for name in ("pymodbus", "coap", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return logger


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, name, extra={"fields": fields})
