"""The read API's OpenAPI document, served at /openapi.json (its own: the receiver's lists only
ingestion)."""

from __future__ import annotations

from typing import Any

from shared.search import MAX_CONDITIONS, MAX_DEPTH

_PAGE = {"$ref": "#/components/schemas/Page"}
_DOC = {"$ref": "#/components/schemas/Document"}


def _param(name: str, where: str, text: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": text,
            "schema": {"type": "string"}}  # fmt: skip


_ID = _param("id", "path", "a userId, anonymousId or profile number", True)
_KIND = _param(
    "kind", "query", "userId, anonymousId or profileId; without it userId, then anonymousId"
)
_PAGING = [
    _param("limit", "query", "rows of the page, 1 to 100 (default 50)"),
    _param("cursor", "query", "the next_cursor of the page before"),
]
_SPAN = [_param("since", "query", "ISO-8601, inclusive"), _param("until", "query", "ISO-8601")]
_EVENT = _param("event", "query", "only events of this name")

_ROUTES: list[tuple[str, str, str, list[dict[str, Any]], dict[str, Any], bool]] = [
    ("get", "/v1/users/{id}", "A profile with its ids and companies", [_ID, _KIND], _DOC, False),
    ("post", "/v1/users/lookup", 'Profiles by {"email"} or {"phone"} (in the body, out of URLs)', [], _PAGE, True),
    ("get", "/v1/users", "Every profile, by number", _PAGING, _PAGE, False),
    ("post", "/v1/users/search",
     f'Profiles matching {{"filter": ...}}: and/or of comparisons, at most {MAX_CONDITIONS} '
     f"comparisons and {MAX_DEPTH} levels", [], _PAGE, True),
    ("get", "/v1/users/{id}/events", "The profile's events, newest first", [_ID, _KIND, _EVENT, *_SPAN, *_PAGING], _PAGE, False),
    ("get", "/v1/users/{id}/pageviews", "The profile's page and screen views, newest first", [_ID, _KIND, *_SPAN, *_PAGING], _PAGE, False),
    ("get", "/v1/users/{id}/timeline", "Events and views together, newest first", [_ID, _KIND, _EVENT, *_SPAN, *_PAGING], _PAGE, False),
    ("get", "/v1/companies", "Every company, by number", _PAGING, _PAGE, False),
    ("get", "/v1/companies/{group_id}", "A company and a page of its members",
     [_param("group_id", "path", "the groupId", True), *_PAGING], _DOC, False),
    ("get", "/v1/definitions", "Attribute definitions and event names", [], _DOC, False),
    ("get", "/v1/messages/{message_id}", "Where a call is: applied, dead_letter, unacked, waiting, unknown",
     [_param("message_id", "path", "the call's messageId", True)], _DOC, False),
    ("get", "/v1/changes", "Profile and company changes in commit order, from any cursor", _PAGING, _PAGE, False),
]  # fmt: skip

_ERRORS = {
    "400": "bad_limit, bad_cursor, bad_time, bad_kind, bad_json, bad_lookup, bad_filter, "
    "unknown_field, unknown_attribute, too_many_filters, filter_too_deep, filter_too_costly",
    "401": "missing_api_key",
    "403": "invalid_api_key, wrong_scope (a write key)",
    "404": "not_found (never seen, erased and suppressed alike)",
    "429": "rate_limited (Retry-After says when to try again)",
    "503": "database_unavailable, query_timeout, auth_unavailable",
}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, params, schema, body in _ROUTES:
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": params,
            "security": [{"readKey": []}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
                **{s: {"description": d} for s, d in _ERRORS.items()},
            },
        }
        if body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "userdest read API",
            "version": "1",
            "description": "Profiles, history, companies, definitions, message status and a change "
            "feed, for servers holding a read key. Every answer carries lag_seconds: how long "
            "the oldest call waiting to be applied has waited.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"readKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Page": {
                    "type": "object",
                    "required": ["data", "next_cursor", "has_more", "lag_seconds"],
                    "properties": {
                        "data": {"type": "array", "items": {"type": "object"}},
                        "next_cursor": {"type": ["string", "null"]},
                        "has_more": {"type": "boolean"},
                        "lag_seconds": {"type": ["number", "null"]},
                    },
                },
                "Document": {
                    "type": "object",
                    "required": ["data", "lag_seconds"],
                    "properties": {
                        "data": {"type": "object"},
                        "lag_seconds": {"type": ["number", "null"]},
                    },
                },
            },
        },
    }
