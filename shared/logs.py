"""Logs as one JSON object a line, so they can be searched by request id and message id.

    logger.info("refused", extra={"request_id": rid, "code": "invalid_api_key"})

prints `{"ts": "...Z", "level": "INFO", "logger": "api.views", "msg": "refused",
"request_id": "...", "code": "invalid_api_key"}`. Whatever is passed with `extra=` becomes a field.

Never put an API key, a request body or a call's traits or properties in a log line. As a second
line of defence, extra fields whose names say they hold such things are replaced by "[redacted]".
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

HANDLER_NAME = "userdest-json"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_REDACTED = frozenset(
    {
        "api_key",
        "apikey",
        "authorization",
        "body",
        "call",
        "calls",
        "password",
        "properties",
        "secret",
        "traits",
        "write_key",
        "writekey",
    }
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one compact JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = "[redacted]" if key.lower() in _REDACTED else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to `stream` (stderr) as JSON lines, at `level` and above.

    Calling it again replaces its own handler and leaves other handlers (pytest's, say) alone.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:
            root.removeHandler(existing)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
