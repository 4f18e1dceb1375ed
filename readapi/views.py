"""The read API's endpoints: authenticate a read key, count it against its rate, run one read
under a statement timeout, answer a page or a document with the apply lag.

Every list answers `{"data": [...], "next_cursor": ..., "has_more": ..., "lag_seconds": ...}`;
a document answers `{"data": {...}, "lag_seconds": ...}`; a refusal
`{"success": false, "code": ..., "message": ...}` with a stable code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import redis
from flask import Flask, Response, request
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from readapi.openapi import document
from shared import changefeed, messages, readmodel, search
from shared.calls import Refusal
from shared.db import make_engine
from shared.keycache import AuthCache, key_from_authorization
from shared.models import Identity
from shared.queuestate import read_queues
from shared.ratelimit import RateLimiter
from shared.redisconn import make_redis
from shared.settings import Settings
from shared.timeparse import parse_iso

logger = logging.getLogger(__name__)

JSON = "application/json"
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
"""Rows one page holds at most (Segment's Profile API allows as many)."""
LAG_EVERY = 1.0
"""Seconds one process reuses a reading of the queues' lag: a reading scans the unacked set."""

Reader = Callable[[Session, int], dict[str, Any]]


def _refusal(error: Refusal) -> Response:
    body = {"success": False, "code": error.code, "message": error.message}
    return Response(orjson.dumps(body), error.status, error.headers, mimetype=JSON)


class ReadApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        timeout = settings.read_statement_timeout_ms
        self.engine: Engine = make_engine(
            settings,
            connect_args={
                "options": f"-c statement_timeout={timeout} -c default_transaction_read_only=on",
                "connect_timeout": max(1, int(settings.broker_timeout)),
            },
            pool_timeout=settings.broker_timeout,
        )
        self.redis = make_redis(settings)  # a redis:// or a sentinel:// URL alike
        self.auth = AuthCache(
            self.engine,
            settings.auth_cache_ttl,
            settings.retry_after_seconds,
            lookups_per_second=settings.auth_lookups_per_second,
        )
        self.limiter = RateLimiter(
            self.redis, settings.read_rate_limit_per_second, 0, settings.retry_after_seconds
        )
        self._lag: tuple[float, float | None] = (-LAG_EVERY, None)
        self._lag_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()
        self.redis.close()

    def lag_seconds(self) -> float | None:
        """The age of the oldest call still waiting in a queue (0 when none waits; None when
        Redis cannot say): a call sent less than this ago may not be visible yet."""
        now = time.monotonic()
        with self._lag_lock:
            read_at, lag = self._lag
            if now - read_at < LAG_EVERY:
                return lag
        try:
            lags = [q.lag_seconds or 0.0 for q in read_queues(self.redis).values()]
            lag = max(lags, default=0.0)
        except redis.RedisError:
            lag = None
        with self._lag_lock:
            self._lag = (now, lag)
        return lag

    def authenticate(self) -> int:
        """The app id of the request's read key, counted against its rate."""
        key = key_from_authorization(request.headers.get("Authorization"))
        if key is None:
            raise Refusal(401, "missing_api_key", "send a read key: Authorization: Bearer KEY")
        view = self.auth.authenticate(key)
        if view.scope != "read":
            raise Refusal(403, "wrong_scope", "this API key sends calls; reading needs a read key")
        try:
            self.limiter.check(view.key_id)
        except Refusal as refusal:
            if refusal.status == 429:
                raise
            # Redis down: reads go on without a count rather than stop.
        return view.app_id

    def answer(self, read: Reader, costly: str | None = None) -> Response:
        """Authenticate, run `read` in a read-only transaction, add the apply lag. A statement
        timeout is 400 `costly` where the caller's filter chose the work, 503 otherwise."""
        app_id = self.authenticate()
        try:
            with Session(self.engine) as session:
                body = read(session, app_id)
        except readmodel.BadCursor as exc:
            raise Refusal(400, "bad_cursor", str(exc)) from None
        except readmodel.NotFound:
            # Never seen, erased and suppressed ids answer alike.
            raise Refusal(404, "not_found", "nothing by that id") from None
        except search.BadFilter as exc:
            raise Refusal(400, exc.code, str(exc)) from None
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == "57014":  # query_canceled: the timeout
                if costly is not None:
                    raise Refusal(400, costly, "the filter takes too long; narrow it") from None
                raise Refusal(503, "query_timeout", "the read took too long; retry later",
                              headers=self._retry()) from None  # fmt: skip
            raise self._unavailable(exc) from None
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None
        body["lag_seconds"] = self.lag_seconds()
        return Response(orjson.dumps(body), 200, mimetype=JSON)

    def _retry(self) -> dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after_seconds)}

    def _unavailable(self, exc: Exception) -> Refusal:
        logger.warning("read failed", extra={"error": type(exc).__name__})
        return Refusal(503, "database_unavailable", "Postgres cannot be reached; retry later",
                       headers=self._retry())  # fmt: skip


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise Refusal(400, "bad_limit", f"limit is 1 to {MAX_LIMIT}")
    return int(raw)


def _body() -> dict[str, Any]:
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError:
        raise Refusal(400, "bad_json", "the body is not JSON") from None
    if type(body) is not dict:
        raise Refusal(400, "bad_json", "the body is a JSON object")
    return body


def _body_limit(body: dict[str, Any]) -> int:
    limit = body.get("limit", DEFAULT_LIMIT)
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise Refusal(400, "bad_limit", f"limit is 1 to {MAX_LIMIT}")
    return limit


def _cursor(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise Refusal(400, "bad_cursor", "a cursor is the next_cursor of an earlier page")
    return value


def _span() -> tuple[datetime | None, datetime | None]:
    out = []
    for name in ("since", "until"):
        raw = request.args.get(name)
        when = parse_iso(raw) if raw is not None else None
        if raw is not None and when is None:
            raise Refusal(400, "bad_time", f"{name} is an ISO-8601 time")
        out.append(when)
    return out[0], out[1]


def _kind() -> str | None:
    kind = request.args.get("kind")
    if kind is not None and kind not in readmodel.ID_KINDS:
        raise Refusal(400, "bad_kind", f"kind is one of {', '.join(readmodel.ID_KINDS)}")
    return kind


def _page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return readmodel.page_of(rows, limit)


def register_routes(app: Flask, api: ReadApi) -> None:
    app.register_error_handler(Refusal, _refusal)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 500:
            cause = getattr(error, "original_exception", None) or error
            logger.error("read failed", exc_info=cause)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
        return _refusal(Refusal(status, code, error.name))

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"ok":true}', 200, mimetype=JSON)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(orjson.dumps(document()), 200, mimetype=JSON)

    @app.get("/v1/users/<id>")
    def user(id: str) -> Response:
        kind = _kind()

        def read(session: Session, app_id: int) -> dict[str, Any]:
            found = readmodel.find_user(session, app_id, id, kind)
            ids = readmodel.identities_of(session, app_id, found.id)
            doc = readmodel.user_document(session, app_id, found)
            names = {"user": "userId", "anonymous": "anonymousId"}
            identities = [{"kind": names[k], "value": v} for k, v in ids]
            return {"data": {"profile_id": found.id, **doc, "identities": identities}}

        return api.answer(read)

    @app.post("/v1/users/lookup")
    def lookup() -> Response:
        body = _body()
        fields = [f for f in ("email", "phone") if f in body]
        if len(fields) != 1 or not isinstance(body[fields[0]], str) or not body[fields[0]]:
            raise Refusal(400, "bad_lookup", 'send {"email": ...} or {"phone": ...}')
        limit, after = _body_limit(body), _cursor(body.get("cursor"))
        field = fields[0]
        return api.answer(
            lambda s, a: _page(
                readmodel.users_by_contact(s, a, field, body[field], limit + 1, after), limit
            )
        )

    @app.get("/v1/users")
    def users() -> Response:
        limit, after = _limit(), _cursor(request.args.get("cursor"))
        return api.answer(
            lambda s, a: _page(readmodel.user_list(s, a, None, limit + 1, after), limit)
        )

    @app.post("/v1/users/search")
    def users_search() -> Response:
        body = _body()
        limit, after = _body_limit(body), _cursor(body.get("cursor"))
        where = body.get("filter")
        return api.answer(
            lambda s, a: _page(readmodel.user_list(s, a, where, limit + 1, after), limit),
            costly="filter_too_costly",
        )

    def history(id: str, reader: Callable[..., list[dict[str, Any]]], events: bool) -> Response:
        limit, after, span, kind = _limit(), _cursor(request.args.get("cursor")), _span(), _kind()
        extra = {"event": request.args.get("event")} if events else {}

        def read(session: Session, app_id: int) -> dict[str, Any]:
            # The history reads take an id of either kind; a kind names the profile first.
            name = id
            if kind is not None:
                found = readmodel.find_user(session, app_id, id, kind)
                name = found.user_id or _any_anonymous(session, app_id, found.id)
            rows = reader(session, app_id, name, limit + 1, after, span=span, **extra)
            return _page(rows, limit)

        return api.answer(read)

    @app.get("/v1/users/<id>/events")
    def events(id: str) -> Response:
        return history(id, readmodel.user_events, True)

    @app.get("/v1/users/<id>/pageviews")
    def pageviews(id: str) -> Response:
        return history(id, readmodel.user_pageviews, False)

    @app.get("/v1/users/<id>/timeline")
    def timeline(id: str) -> Response:
        return history(id, readmodel.user_timeline, True)

    @app.get("/v1/companies")
    def companies() -> Response:
        limit, after = _limit(), _cursor(request.args.get("cursor"))
        return api.answer(lambda s, a: _page(readmodel.company_list(s, a, limit + 1, after), limit))

    @app.get("/v1/companies/<group_id>")
    def company(group_id: str) -> Response:
        limit, after = _limit(), _cursor(request.args.get("cursor"))

        def read(session: Session, app_id: int) -> dict[str, Any]:
            doc = readmodel.company_profile(session, app_id, group_id, limit, after)
            next_cursor = doc.pop("next_cursor")
            return {"data": doc, "next_cursor": next_cursor, "has_more": next_cursor is not None}

        return api.answer(read)

    @app.get("/v1/definitions")
    def definitions() -> Response:
        return api.answer(
            lambda s, a: {
                "data": {
                    "attributes": readmodel.attribute_list(s, a),
                    "events": readmodel.event_list(s, a),
                }
            }
        )

    @app.get("/v1/messages/<message_id>")
    def message(message_id: str) -> Response:
        def read(session: Session, app_id: int) -> dict[str, Any]:
            postgres = messages.in_postgres(session, app_id, message_id)
            places = None
            if not messages.settled(postgres):
                try:
                    places = messages.in_redis(api.redis, app_id, message_id)
                except redis.RedisError:
                    places = None
            return {"data": {"message_id": message_id, "state": messages.state(postgres, places),
                             **postgres}}  # fmt: skip

        return api.answer(read)

    @app.get("/v1/changes")
    def changes() -> Response:
        limit, after = _limit(), _cursor(request.args.get("cursor"))
        return api.answer(lambda s, a: changefeed.page(s, a, limit, after))


def _any_anonymous(session: Session, app_id: int, pk: int) -> str:
    value = session.scalar(
        select(Identity.value)
        .where(Identity.app_id == app_id, Identity.user_pk == pk, Identity.kind == "anonymous")
        .limit(1)
    )
    if value is None:
        raise readmodel.NotFound("no id names that profile")
    return value
