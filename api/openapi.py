"""The OpenAPI 3.1 document of the receiver, served at /openapi.json.

Built from the same route table the app registers (api.views.ROUTES), so a new endpoint cannot be
served without being described; tests/api/test_openapi.py checks both ways.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.views import Route

CALL_ERROR_CODES = [
    "not_an_object",
    "type_mismatch",
    "missing_type",
    "unknown_type",
    "deletion_not_allowed",
    "deletion_needs_message_id",
    "deletion_expired",
    "missing_user_id",
    "missing_previous_id",
    "invalid_message_id",
    "missing_event",
    "missing_group_id",
    "invalid_traits",
    "invalid_properties",
    "invalid_context",
    "invalid_timestamp",
    "inexact_id",
    "untrusted_domain",
    "call_too_large",
]
"""Codes of one call's problems: in a batch's `rejected` entries, and as a single call's 400."""

ERROR_CODES = {
    400: [
        "invalid_json",
        "too_deep",
        "invalid_gzip",
        "truncated_body",
        "invalid_batch",
        "invalid_integrations",
        "payload_too_large",
        *(c for c in CALL_ERROR_CODES if c != "call_too_large"),
    ],
    401: ["missing_api_key", "missing_signature", "bad_signature"],
    403: ["invalid_api_key", "untrusted_domain", "wrong_scope"],
    415: ["unsupported_encoding"],
    429: ["rate_limited"],
    503: [
        "broker_unavailable",
        "broker_unreplicated",
        "broker_full",
        "auth_unavailable",
        "auth_busy",
    ],
}
"""Codes of refused requests, by HTTP status."""

_DESCRIPTIONS = {
    400: (
        "The body is not JSON, not an object, nests too deeply, or a single call fails a check; "
        "or payload_too_large: over 32 KB a call, 500 KB or 2,500 calls a batch, measured after "
        "decompression (400, as Segment's API answers it)."
    ),
    401: "No API key was given, or a webhook signature is missing or wrong.",
    403: "The API key is unknown or revoked, or the sending site is not a trusted domain.",
    415: "Content-Encoding other than gzip.",
    429: "The key is over its rate limit; see Retry-After.",
    503: "Redis cannot be reached or is near its memory limit, or an unseen key cannot be looked "
    "up now (Postgres down, or too many unknown keys); nothing was accepted. See Retry-After.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS[status]
            + " Codes: "
            + ", ".join(f"`{c}`" for c in ERROR_CODES[status])
            + ".",
            "content": _json(_ref("Error")),
        }
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        out[str(status)] = response
    return out


_CALL_ERRORS = (400, 401, 403, 415, 429, 503)

_SCHEMAS: dict[str, Any] = {
    "Call": {
        "type": "object",
        "description": "One Segment call, as Segment's libraries send it. `null` fields "
        "count as absent. Unknown fields are kept and passed on untouched.",
        "properties": {
            "type": {"enum": ["identify", "track", "page", "screen", "group", "alias"]},
            "userId": {"type": ["string", "number", "null"]},
            "anonymousId": {"type": ["string", "number", "null"]},
            "previousId": {"type": ["string", "number", "null"], "description": "alias only"},
            "groupId": {"type": ["string", "number", "null"], "description": "group only"},
            "event": {"type": ["string", "null"], "description": "track only"},
            "name": {"type": ["string", "null"]},
            "messageId": {"type": ["string", "null"], "maxLength": 99},
            "traits": {"type": ["object", "null"]},
            "properties": {"type": ["object", "null"]},
            "context": {"type": ["object", "null"]},
            "integrations": {"type": ["object", "null"]},
            "timestamp": {"type": ["string", "null"], "format": "date-time"},
            "originalTimestamp": {"type": ["string", "null"], "format": "date-time"},
            "sentAt": {"type": ["string", "null"], "format": "date-time"},
            "writeKey": {"type": "string", "description": "the API key, where no header has it"},
        },
        "additionalProperties": True,
    },
    "Batch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "maxItems": 2500, "items": _ref("Call")},
            "context": {"type": "object", "description": "merged under each call's own"},
            "integrations": {"type": "object", "description": "merged under each call's own"},
            "sentAt": {"type": "string", "format": "date-time"},
            "writeKey": {"type": "string"},
        },
    },
    "Success": {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"const": True}},
    },
    "BatchResult": {
        "type": "object",
        "required": ["success", "accepted", "rejected"],
        "properties": {
            "success": {"const": True},
            "accepted": {"type": "integer", "description": "calls enqueued"},
            "rejected": {
                "type": "array",
                "description": "calls that failed a check; each is kept as a dead letter",
                "items": {
                    "type": "object",
                    "required": ["index", "errors", "messageId"],
                    "properties": {
                        "index": {"type": "integer"},
                        "errors": {"type": "array", "items": _ref("CallError")},
                        "messageId": {
                            "type": "string",
                            "description": "the call's own messageId where the checks take it, "
                            "else a new UUID: its dead letter keeps it, and `userdest messages "
                            "show` finds the call by it",
                        },
                    },
                },
            },
        },
    },
    "CallError": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "enum": CALL_ERROR_CODES},
            "message": {"type": "string"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["success", "code", "message"],
        "properties": {
            "success": {"const": False},
            "code": {"type": "string", "description": "stable, short reason code"},
            "message": {"type": "string"},
            "errors": {"type": "array", "items": _ref("CallError")},
        },
    },
    "Readiness": {
        "type": "object",
        "properties": {
            "success": {"type": "boolean"},
            "checks": {
                "type": "object",
                "properties": {
                    "redis": {"enum": ["ok", "unreachable"]},
                    "postgres": {"enum": ["ok", "unreachable"]},
                },
            },
        },
    },
}

_SECURITY_SCHEMES = {
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "The API key as user name and an empty password, as Segment's libraries "
        "send it.",
    },
    "bearer": {"type": "http", "scheme": "bearer"},
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Token <key>`.",
    },
}
_SECURITY: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}, {"token": []}, {}]


def _call_operation(route: Route, path: str, method: str = "POST") -> dict[str, Any]:
    batch = route.batch
    description = {
        True: "Top-level `context` and `integrations` are defaults merged under each call's own. "
        "Calls that fail a check are answered in `rejected` and kept as dead letters; the others "
        "are enqueued.",
        False: "Without a header key, the body's `writeKey` is used (`security: {}`).",
    }[batch]
    if route.source == "webhook":
        description += (
            " The body is one call, or (Segment's Webhooks (Actions) destination with batching on)"
            " a JSON array of calls, answered like a batch. With a webhook secret, `X-Signature`"
            " is the hex HMAC-SHA1 of the body, or of an array's first element as it stands in"
            " the body (how Actions signs a batch)."
        )
    alias = path != route.paths[0]
    body: dict[str, Any] = _ref("Batch" if batch else "Call")
    if route.arrays:
        body = {"oneOf": [body, {"type": "array", "items": _ref("Call")}]}
    operation: dict[str, Any] = {
        "operationId": route.endpoint
        + ("_short" if alias else "")
        + ("" if method == "POST" else "_" + method.lower()),
        "summary": route.summary + (f" (short form of {route.paths[0]})" if alias else ""),
        "description": description,
        "tags": ["calls"],
        "security": _SECURITY,
        "parameters": [
            {
                "name": "Content-Encoding",
                "in": "header",
                "schema": {"enum": ["gzip", "identity"]},
            },
            {"name": "X-Request-Id", "in": "header", "schema": {"type": "string"}},
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": body},
                "text/plain": {"schema": body},
            },
        },
        "responses": {
            "200": {
                "description": "Enqueued (the broker confirmed the write).",
                "content": _json(_ref("BatchResult" if batch else "Success")),
            },
            **_errors(*_CALL_ERRORS),
        },
    }
    if route.source == "webhook":
        operation["parameters"].append(
            {"name": "X-Signature", "in": "header", "schema": {"type": "string"}}
        )
    return operation


def _get(operation_id: str, summary: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["operations"],
            "responses": {"200": {"description": summary, "content": content}, **extra},
        }
    }


def document(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `routes` plus the operational endpoints."""
    paths: dict[str, Any] = {}
    for route in routes:
        for path in route.paths:
            paths[path] = {m.lower(): _call_operation(route, path, m) for m in route.methods}
    paths["/healthz"] = _get("healthz", "The process is up.", _json(_ref("Success")))
    paths["/readyz"] = _get(
        "readyz",
        "Redis and Postgres are reachable.",
        _json(_ref("Readiness")),
        **{"503": {"description": "A dependency is down.", "content": _json(_ref("Readiness"))}},
    )
    paths["/metrics"] = _get(
        "metrics", "Prometheus metrics.", {"text/plain": {"schema": {"type": "string"}}}
    )
    paths["/openapi.json"] = _get("openapi", "This document.", _json({"type": "object"}))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "userdest receiver",
            "version": "1",
            "description": "Segment-compatible HTTP Tracking API: calls are authenticated, checked "
            "and enqueued; workers apply them. Every answer is JSON with `success`, and on "
            "failure a stable `code` and a `message`.",
        },
        "paths": paths,
        "components": {"schemas": _SCHEMAS, "securitySchemes": _SECURITY_SCHEMES},
    }
