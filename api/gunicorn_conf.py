"""gunicorn's own settings for the receiver: `gunicorn -c python:api.gunicorn_conf "api:create_app()"`.

Worker class: gevent (docs/abuse.md has the measurements). gunicorn's default sync worker serves one
connection at a time per process, so a client that connects and sends nothing stops a process (two
stopped `make run`, one stopped the image's default); gthread hands each new connection to a
thread that waits 5 s for its first bytes, so a few hundred idle connections queue every request
behind them. A gevent worker waits on all its connections at once, and kept the throughput of sync
workers on this machine; the receiver's only blocking calls (Redis, Postgres through psycopg 3)
cooperate with gevent's monkey-patching.

gunicorn logs through its own loggers before and beside the Flask app; this makes those lines JSON
too (one JSON object a line), and leaves access logs off: a line per call would cost more
than the call, and the metrics count requests by endpoint and status.

Its root handler carries the name of `shared.logs.configure_logging`'s, so that when `create_app()`
sets up logging it replaces this handler instead of adding a second one: every line once.
"""

import logging
import os
import re
from typing import Any

from gunicorn import glogging

from shared.logs import HANDLER_NAME


class Logger(glogging.Logger):
    """gunicorn's logger, minus the access-log line nobody keeps.

    gunicorn builds every request's access-log fields (a dozen atoms, the headers read) whenever a
    logging configuration is given, then hands them to `gunicorn.access`, which drops them at
    WARNING below. This turns the work off when that logger would drop the line anyway; turn
    access logs on by lowering the logger's level in `logconfig_dict`.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if not self.access_log.isEnabledFor(logging.INFO):
            self._access_log_enabled = False

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        # gunicorn answers a request it cannot parse itself and logs it as one preformatted line,
        # "Invalid request from ip=ADDRESS: ERROR", where ERROR quotes what was sent (the request
        # line with its query string, a header). Anyone can send one: the line keeps the kind of
        # error only, without the client's address (no log line holds one) or their bytes.
        if isinstance(msg, str) and msg.startswith(_INVALID_REQUEST):
            error = msg.partition(": ")[2]
            super().warning("invalid request", extra={"error": invalid_request_kind(error)})
            return
        super().warning(msg, *args, **kwargs)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        # "Error handling request METHOD URI": the URI's query string is the sender's data.
        if isinstance(msg, str) and msg.startswith(_ERROR_HANDLING):
            super().exception("error handling a request")
            return
        super().exception(msg, *args, **kwargs)


_INVALID_REQUEST = "Invalid request from ip="
_ERROR_HANDLING = "Error handling request"
# gunicorn's parse errors read "KIND: 'what was sent'", "KIND (sizes)" or "Proxy request from
# 'host' not allowed": the kind is the text before the first colon, quote or parenthesis.
_KIND_END = re.compile(r"[:'\"(]")


def invalid_request_kind(error: str) -> str:
    """The kind of a gunicorn parse error, without the bytes it quotes."""
    return _KIND_END.split(error, maxsplit=1)[0].strip()[:80] or "unparsed"


logger_class = "api.gunicorn_conf.Logger"


def on_starting(server: Any) -> None:
    """With ADMIN_PORT set, listen on it too, on the first bind's host: the receiver serves
    /readyz, /metrics and /openapi.json there only (api/views.py). Runs before gunicorn opens
    its sockets."""
    admin = os.environ.get("ADMIN_PORT", "").strip()
    if not admin or admin == "0":
        return
    binds = list(server.cfg.bind)
    host = binds[0].rsplit(":", 1)[0] if binds and ":" in binds[0] else "0.0.0.0"  # noqa: S104
    server.cfg.set("bind", [*binds, f"{host}:{int(admin)}"])


worker_class = "gevent"
worker_connections = 1000
"""Connections one process holds at once; past it the kernel's backlog queues new ones."""

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "shared.logs.JsonFormatter"}},
    "handlers": {
        HANDLER_NAME: {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "INFO", "handlers": [HANDLER_NAME]},
    "loggers": {
        "gunicorn.error": {"handlers": [HANDLER_NAME], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}

# gunicorn 27's control socket lives at one path per user (~/.gunicorn/gunicorn.ctl), so two
# receivers on one host (make run beside a test run, or the bench) would fight over it; userdest
# does not use it. Older gunicorns ignore the name.
control_socket_disable = True
