"""The handlers that turn any refusal or failure into a JSON answer.

Every refusal is a `shared.calls.Refusal` with a short, stable `code` (documented in docs/receiver.md and the
OpenAPI document). Whatever else goes wrong (unknown route, wrong method, a bug) still answers
JSON, never an HTML page or a traceback.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from api.body import CLOSE
from shared.calls import Refusal
from shared.metrics import APP_REQUESTS_REFUSED, HTTP_ERRORS

logger = logging.getLogger(__name__)

JSON = "application/json"
APP_LABEL = "userdest.app_label"
"""Where a request's environ keeps its app's metric label once its key is known."""


def answer(refusal: Refusal) -> Response:
    """The JSON answer to a refusal: `success` false, its code and message, and any details."""
    body: dict[str, Any] = {"success": False, "code": refusal.code, "message": refusal.message}
    if refusal.errors is not None:
        body["errors"] = refusal.errors
    return Response(orjson.dumps(body), refusal.status, refusal.headers, mimetype=JSON)


# The codes of the HTTP errors Flask and werkzeug raise themselves.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def _request_id(environ: dict[str, Any]) -> str | None:
    value = environ.get("userdest.request_id")
    return value if isinstance(value, str) else None


def handle_refusal(error: Refusal, environ: dict[str, Any]) -> Response:
    HTTP_ERRORS.labels(error.code).inc()
    if error.code == "payload_too_large":
        # What is left of an oversize body, if any, is not worth reading for another request.
        environ[CLOSE] = True
    app = environ.get(APP_LABEL)
    if app is not None:
        APP_REQUESTS_REFUSED.labels(app).inc()
    # The code and the request id are enough to find the request; never its body or key.
    logger.info(
        "refused",
        extra={"request_id": _request_id(environ), "status": error.status, "code": error.code},
    )
    return answer(error)


def handle_http_exception(error: HTTPException, environ: dict[str, Any]) -> Response:
    status = error.code or 500
    code = _HTTP_CODES.get(status, f"http_{status}")
    headers = {}
    if status == 405 and error.response is None:
        # werkzeug puts the allowed methods in its own headers; keep the Allow one.
        headers = {k: v for k, v in error.get_headers() if k.lower() == "allow"}
    return handle_refusal(Refusal(status, code, error.name, headers=headers or None), environ)


def handle_unexpected(error: Exception, environ: dict[str, Any]) -> Response:
    # A bug, not bad input: log where it happened, answer without a traceback. The exception's
    # message is left out of the log as it may quote the data being handled (a trait value).
    logger.error(
        "unexpected error",
        extra={
            "request_id": _request_id(environ),
            "error": type(error).__name__,
            "trace": "".join(traceback.format_tb(error.__traceback__)),
        },
    )
    HTTP_ERRORS.labels("internal_error").inc()
    return answer(
        Refusal(500, "internal_error", "the receiver failed; the request was not accepted")
    )


def handle(error: Exception, environ: dict[str, Any]) -> Response:
    """The answer to any exception a request raised, chosen as Flask chooses among the handlers
    `register_error_handlers` gives it: for the call endpoints, which answer without Flask's
    request machinery (api/views.py)."""
    if isinstance(error, Refusal):
        return handle_refusal(error, environ)
    if isinstance(error, HTTPException):
        return handle_http_exception(error, environ)
    return handle_unexpected(error, environ)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(Refusal, lambda e: handle_refusal(e, request.environ))
    app.register_error_handler(HTTPException, lambda e: handle_http_exception(e, request.environ))
    app.register_error_handler(Exception, lambda e: handle_unexpected(e, request.environ))
