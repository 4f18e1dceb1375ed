"""The receiver's endpoints. A call endpoint does four things: authenticate, check shape cheaply,
stamp metadata, enqueue (STYLE 3). Everything else happens in the workers.

The order of a call request, and so which refusal wins when several apply:
1. a key from the Authorization header is looked up (403) and counted by the rate limit (429);
2. the body is read and decompressed within its bound (400 payload_too_large, 415, 400
   invalid_gzip);
3. the JSON is parsed (400; but 401 where no header key was given, as no key can then be found);
4. without a header key, the body's `writeKey` is looked up (401 if absent, 403, 429);
5. the webhook signature (401), nesting depth (400), the batch envelope (400);
6. trusted domains by Origin, else Referer (403; `Origin: null` matches none), then each call's
   structural checks (400 for a single call, a rejected entry for a call of a batch); without
   Origin or Referer, each call's page is one of those checks (`untrusted_domain`);
7. one message on the `ingest` queue (503 if Redis cannot take it), and only then 200.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from time import monotonic, perf_counter
from typing import Any

import orjson
import redis
from flask import Flask, Response, request
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import NotFound
from werkzeug.wsgi import get_content_length, get_input_stream

from api.auth import (
    check_domains,
    check_signature,
    first_element,
    header_host,
    key_from_body,
)
from api.body import read_body
from api.errors import APP_LABEL, JSON, handle
from api.openapi import document
from api.publish import HighWater, Publisher, make_redis
from shared import metrics
from shared.calls import (
    CALL_TYPES,
    Refusal,
    check_batch,
    check_calls,
    check_depth,
    parse_json,
    refused_message_id,
    too_large,
    usable_message_id,
)
from shared.celery_app import make_celery
from shared.db import make_engine
from shared.envelope import DIRECT_SOURCE, Envelope
from shared.keycache import AuthCache, key_from_authorization
from shared.models import DeadLetter, MaintenanceRun
from shared.queues import INGEST
from shared.queuestate import read_queues
from shared.ratelimit import RateLimiter
from shared.settings import Settings
from shared.tenancy import AuthView
from shared.timeparse import iso, utcnow

logger = logging.getLogger(__name__)

_OK = b'{"success":true}'
_ENVELOPE_FIELDS = tuple(Envelope.__dataclass_fields__)
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
# CORS. A preflight is allowed every header the browser asks for: libraries add their
# own (analytics.js X-Retry-Count on retries; RudderStack AnonymousId, SentAt and Rsa-* on retries),
# and a refused header silently loses the call. These are allowed where the browser names none.
_CORS_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, X-Request-Id, X-Retry-Count, AnonymousId, "
    "SentAt, Rsa-Recovered, Rsa-Retry-Attempt, Rsa-Since-Last-Attempt, Rsa-Since-First-Attempt, "
    "Rsa-Retry-Reason"
)
_CORS_EXPOSED = (
    "Retry-After, X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
)
_HEADER_NAMES = re.compile(
    r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*"
)
_MAX_REQUESTED_HEADERS = 2048


@dataclass(frozen=True, slots=True)
class Route:
    """One kind of call endpoint: its name (Flask endpoint and metric label) and what it takes."""

    endpoint: str
    paths: tuple[str, ...]
    call_type: str | None
    """The type the path fixes (`/v1/track`), or None where each call names its own."""
    batch: bool
    source: str
    summary: str
    arrays: bool = False
    """Whether a JSON array body is taken as a batch (Segment's Webhooks (Actions) batching)."""
    methods: tuple[str, ...] = ("POST",)


# Segment's browser library posts single calls to /v1/t, /v1/i, ... and batches to /v1/b; its mobile
# libraries post batches to /v1/b. They are the same endpoints under a shorter name.
ROUTES: tuple[Route, ...] = (
    *(
        Route(t, (f"/v1/{t}", f"/v1/{t[0]}"), t, False, DIRECT_SOURCE, f"One {t} call")
        for t in CALL_TYPES
    ),
    Route("batch", ("/v1/batch", "/v1/b"), None, True, DIRECT_SOURCE, "A batch of calls"),
    Route("import", ("/v1/import",), None, True, DIRECT_SOURCE, "A batch of historical calls"),
    # Segment's Webhooks (Actions) destination lets the user pick POST, PUT or PATCH.
    Route(
        "webhook",
        ("/webhook",),
        None,
        False,
        "webhook",
        "One call, or an array of calls, from Segment's Webhooks destinations",
        arrays=True,
        methods=("POST", "PUT", "PATCH"),
    ),
)


def request_id(incoming: str | None) -> str:
    """The sender's X-Request-Id where it is a sane token, else a new UUID."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return str(uuid.uuid4())


def remote_addr(environ: dict[str, Any], trusted_proxies: int) -> str | None:
    """The client address: REMOTE_ADDR, or the X-Forwarded-For entry `trusted_proxies` from the
    right, where that many trusted proxies each appended the address they saw."""
    addr = environ.get("REMOTE_ADDR")
    if trusted_proxies > 0:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            hops = forwarded.split(",")
            if len(hops) >= trusted_proxies:
                candidate = hops[-trusted_proxies].strip()
                try:
                    return str(ipaddress.ip_address(candidate))
                except ValueError:
                    pass
    return addr if isinstance(addr, str) else None


def _missing_key() -> Refusal:
    return Refusal(
        401,
        "missing_api_key",
        "no API key: send Authorization: Basic base64(key:), Bearer or Token, or a writeKey",
    )


class Receiver:
    """What the endpoints share within one process: settings, key cache, limiter, publisher."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        client: redis.Redis,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._ready: tuple[float, int, bytes] | None = None
        """The last readiness answer: until when it holds, its status and body."""
        self._ready_lock = threading.Lock()
        self.engine = engine
        self.redis = client
        self.auth = AuthCache(
            engine,
            settings.auth_cache_ttl,
            settings.retry_after_seconds,
            lookups_per_second=settings.auth_lookups_per_second,
        )
        self.limiter = RateLimiter(
            client,
            settings.rate_limit_per_second,
            settings.rate_limit_burst,
            settings.retry_after_seconds,
        )
        self.publisher = Publisher(
            make_celery(settings),
            client,
            settings.retry_after_seconds,
            HighWater(client, settings.redis_high_water),
            settings,
        )
        self._bytes = {r.endpoint: metrics.HTTP_REQUEST_BYTES.labels(r.endpoint) for r in ROUTES}
        self._accepted = {r.endpoint: metrics.CALLS_ACCEPTED.labels(r.endpoint) for r in ROUTES}
        # Queue and dead-letter gauges, read when scraped: every receiver can answer them.
        self.state = metrics.StateCollector(
            lambda: read_queues(self.redis),
            self._open_dead_letters,
            read_redis_memory=self._redis_memory,
            read_maintenance=self._maintenance,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Receiver:
        wait = max(2, math.ceil(settings.broker_timeout))  # libpq rounds shorter waits up to 2 s
        engine = make_engine(
            settings,
            pool_size=2,
            max_overflow=4,
            pool_timeout=settings.broker_timeout,
            connect_args={
                "connect_timeout": wait,
                "options": f"-c statement_timeout={wait * 1000}",
            },
        )
        return cls(settings, engine, make_redis(settings))

    def _redis_memory(self) -> dict[str, int]:
        used, limit = self.publisher.high_water.reading()
        return {"used_memory": used, "maxmemory": limit}

    def _maintenance(self) -> dict[str, float | None]:
        """When the newest maintenance run finished (seconds since the epoch), or None."""
        with self.engine.connect() as conn:
            finished = conn.scalar(select(func.max(MaintenanceRun.finished_at)))
        return {"finished_at": finished.timestamp() if finished is not None else None}

    def _open_dead_letters(self) -> dict[str, int]:
        """Open dead letters by reason (a read, bounded by the engine's statement_timeout)."""
        query = (
            select(DeadLetter.reason, func.count())
            .where(DeadLetter.is_open())
            .group_by(DeadLetter.reason)
        )
        with self.engine.connect() as conn:
            return {str(reason): int(n) for reason, n in conn.execute(query)}

    def close(self) -> None:
        self.engine.dispose()
        self.redis.close()

    def _authenticate(self, key: str, environ: dict[str, Any]) -> AuthView:
        view = self.auth.authenticate(key)
        # From here a refusal is the app's: the error handler counts it under the app's label.
        environ[APP_LABEL] = metrics.app_label(view.app_name)
        if view.scope != "write":
            # A read key is a server's secret; it never belongs in a sender.
            raise Refusal(403, "wrong_scope", "this API key reads; sending calls needs a write key")
        self.limiter.check(view.key_id)
        return view

    def ingest(self, route: Route, environ: dict[str, Any]) -> bytes:
        """The body of the 200 answer to a call request, once it is enqueued; else raises (a
        Refusal, where the request is refused)."""
        settings = self.settings
        view = None
        header_key = key_from_authorization(environ.get("HTTP_AUTHORIZATION"))
        if header_key is not None:
            view = self._authenticate(header_key, environ)

        limit = settings.max_batch_bytes if route.batch or route.arrays else settings.max_call_bytes
        raw, wire = read_body(
            get_input_stream(environ),
            get_content_length(environ),
            environ.get("HTTP_CONTENT_ENCODING"),
            limit,
        )
        received_at = iso(utcnow())
        self._bytes[route.endpoint].observe(len(raw))
        try:
            body = parse_json(raw)
        except Refusal:
            if view is None:
                raise _missing_key() from None
            raise
        if view is None:
            body_key = key_from_body(body)
            if body_key is None:
                raise _missing_key()
            view = self._authenticate(body_key, environ)

        signed = None
        if route.source == "webhook":
            first = first_element(raw) if type(body) is list else None
            signed = check_signature(
                view.webhook_secret, environ.get("HTTP_X_SIGNATURE"), raw, wire, first
            )
        check_depth(body, raw, settings.max_depth)
        as_batch = route.batch or (route.arrays and type(body) is list)
        if route.batch:
            calls, defaults, sent_at = check_batch(body, settings.max_batch_calls)
        elif as_batch:
            # Segment's Webhooks (Actions) with batching on: a JSON array of calls.
            calls, defaults, sent_at = check_batch({"batch": body}, settings.max_batch_calls)
        elif type(body) is dict:
            if len(raw) > settings.max_call_bytes:
                raise too_large(f"a call is at most {settings.max_call_bytes} bytes")
            calls, sent_at = [body], None
            # The path fixes the type; the call is not touched, the worker merges this under it.
            defaults = {"type": route.call_type} if route.call_type else {}
        else:
            raise Refusal(400, "not_an_object", "the body must be a JSON object (one call)")
        domains: tuple[str, ...] = ()
        if view.domains:
            host = header_host(environ.get("HTTP_ORIGIN"), environ.get("HTTP_REFERER"))
            if host is None:
                domains = view.domains  # a server-side source: each call's page decides
            else:
                check_domains(view.domains, host)

        # A signed webhook request comes from Segment itself: only it may ask for an erasure, and
        # only in what its signature covers. Segment's Actions destination signs a batched request
        # over its first element alone: that element is all such a signature vouches for.
        deletions = 0 if signed is None else len(calls) if signed < 2 else 1
        accepted, message_ids, rejected, answers = self._check_calls(
            route, as_batch, calls, raw, domains, defaults, environ, deletions
        )
        rid: str = environ["userdest.request_id"]
        if accepted or rejected:
            envelope = Envelope(
                app_id=view.app_id,
                received_at=received_at,
                request_id=rid,
                calls=accepted,
                message_ids=message_ids,
                key_id=view.key_id,
                remote_addr=remote_addr(environ, settings.trusted_proxies),
                source=route.source,
                sent_at=sent_at,
                defaults=defaults,
                rejected=rejected,
            )
            # Envelope.to_dict() deep-copies every call (dataclasses.asdict); this is the same
            # dictionary without the copy.
            self.publisher.publish({f: getattr(envelope, f) for f in _ENVELOPE_FIELDS}, INGEST)
        self._accepted[route.endpoint].inc(len(accepted))
        app = environ[APP_LABEL]
        if accepted:
            metrics.APP_CALLS.labels(app, "accepted").inc(len(accepted))
        if rejected:
            metrics.APP_CALLS.labels(app, "rejected").inc(len(rejected))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "accepted",
                extra={
                    "request_id": rid,
                    "message_id": message_ids[0] if len(message_ids) == 1 else None,
                    "endpoint": route.endpoint,
                    "app_id": view.app_id,
                    "key_id": view.key_id,
                    "accepted": len(accepted),
                    "rejected": len(rejected),
                },
            )
        if not as_batch:
            return _OK
        return orjson.dumps({"success": True, "accepted": len(accepted), "rejected": answers})

    def _check_calls(
        self,
        route: Route,
        as_batch: bool,
        calls: list[Any],
        raw: bytes,
        domains: tuple[str, ...],
        defaults: dict[str, Any],
        environ: dict[str, Any],
        deletions: int = 0,
    ) -> tuple[list[Any], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
        """Accepted calls with their message ids; rejected entries for the envelope and answer."""
        max_call = self.settings.max_call_bytes
        # A single call's body is already within MAX_CALL_BYTES; a batch's calls are measured one
        # by one only where the whole body is over it.
        checked = check_calls(
            calls,
            route.call_type,
            max_call if as_batch and len(raw) > max_call else None,
            domains,
            defaults,
            deletions,
            utcnow() - timedelta(days=self.settings.dedupe_days) if deletions else None,
        )
        for entry in checked.rejected:
            errors = entry["errors"]
            metrics.CALLS_REJECTED.labels(errors[0]["code"]).inc()
            if not as_batch:
                metrics.APP_CALLS.labels(environ[APP_LABEL], "rejected").inc()
                raise Refusal(400, errors[0]["code"], errors[0]["message"], errors=errors)
        message_ids = [usable_message_id(c) or str(uuid.uuid4()) for c in checked.accepted]
        for entry in checked.rejected:
            # The id the sender can look the refused call up by; its dead letter keeps it.
            entry["message_id"] = refused_message_id(entry["call"])
        answers = [
            {"index": r["index"], "errors": r["errors"], "messageId": r["message_id"]}
            for r in checked.rejected
        ]
        return checked.accepted, message_ids, checked.rejected, answers

    def readiness(self) -> Response:
        """Ready while this receiver can accept calls: Redis answers and is under its high-water
        mark. Postgres is reported, not required: cached keys keep working without it,
        and taking every receiver out of the load balancer would refuse what could be accepted.

        The answer is kept READYZ_CACHE_TTL seconds, as key lookups are: each check takes a
        connection from the pool key lookups use, and probes, scrapers or a loop should not
        compete with them. One check runs at a time; the requests that wait take its answer."""
        ttl = self.settings.readyz_cache_ttl
        with self._ready_lock:
            if ttl > 0 and self._ready is not None and self._clock() < self._ready[0]:
                _, status, body = self._ready
            else:
                status, body = self._check_readiness()
                self._ready = (self._clock() + ttl, status, body)
        headers = {"Retry-After": str(self.settings.retry_after_seconds)} if status != 200 else None
        return Response(body, status, headers, mimetype=JSON)

    def _check_readiness(self) -> tuple[int, bytes]:
        checks = {"redis": "ok", "postgres": "ok"}
        try:
            self.redis.ping()
            if self.publisher.high_water.over():
                checks["redis"] = "over_high_water"
        except redis.RedisError:
            checks["redis"] = "unreachable"
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            checks["postgres"] = "unreachable"
        if checks["redis"] == "ok":
            return 200, orjson.dumps({"success": True, "checks": checks})
        body = {
            "success": False,
            "code": "not_ready",
            "message": "the queue cannot take calls",
            "checks": checks,
        }
        return 503, orjson.dumps(body)


def cors(response: Response, method: str, requested: str | None) -> None:
    """CORS headers of a /v1/* answer. Browsers post from the site itself; the trusted-domain check,
    not CORS, decides who may send. A preflight is answered 204 with no body."""
    headers = response.headers
    headers["Access-Control-Allow-Origin"] = "*"
    headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED
    if method != "OPTIONS" or response.status_code >= 300:
        return
    response.status_code = 204
    response.set_data(b"")
    response.headers.pop("Content-Type", None)
    headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    requested = (requested or "").strip()
    if (
        requested
        and len(requested) <= _MAX_REQUESTED_HEADERS
        and _HEADER_NAMES.fullmatch(requested)
    ):
        headers["Access-Control-Allow-Headers"] = requested
    else:
        headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
    headers["Access-Control-Max-Age"] = "86400"
    headers["Vary"] = "Access-Control-Request-Headers"


def begin(environ: dict[str, Any]) -> None:
    """What every request's environ carries from its start: the clock and its request id."""
    environ["userdest.started"] = perf_counter()
    environ["userdest.request_id"] = request_id(environ.get("HTTP_X_REQUEST_ID"))


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def register_routes(app: Flask, receiver: Receiver) -> None:
    """The call endpoints of ROUTES plus health, readiness, metrics and the OpenAPI document.

    A call request (a route's method on one of its paths) is answered by `dispatch` below, in front
    of Flask: it begins, ingests, answers and finishes the request as Flask would with the hooks
    and error handlers registered here and in api/errors.py, and without Flask's request and app
    contexts, URL matching and Response object, which cost more CPU than the receiver's own work on
    a single call (docs/receiver.md). Everything else (OPTIONS preflights, a wrong method, other
    paths) goes to Flask, where the call routes are registered too, so its URL map and answers
    (405 with Allow, automatic OPTIONS) are unchanged."""
    for route in ROUTES:

        def view(route: Route = route) -> Response:
            return Response(receiver.ingest(route, request.environ), 200, mimetype=JSON)

        for path in route.paths:
            app.add_url_rule(
                path, endpoint=route.endpoint, view_func=view, methods=list(route.methods)
            )

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"success":true,"status":"ok"}', 200, mimetype=JSON)

    admin = receiver.settings.admin_port

    def private(view: Callable[[], Response]) -> Callable[[], Response]:
        """Served on ADMIN_PORT only, where one is set: the public port answers 404 as for any
        path it does not have (gunicorn puts the listening socket's port in SERVER_PORT)."""

        @functools.wraps(view)
        def guarded() -> Response:
            if admin and request.environ.get("SERVER_PORT") != str(admin):
                raise NotFound()  # the same answer as a path the receiver does not have
            return view()

        return guarded

    @app.get("/readyz")
    @private
    def readyz() -> Response:
        return receiver.readiness()

    @app.get("/metrics")
    @private
    def metrics_view() -> Response:
        payload, content_type = metrics.render([receiver.state])
        return Response(payload, 200, content_type=content_type)

    openapi = orjson.dumps(document(ROUTES))

    @app.get("/openapi.json")
    @private
    def openapi_view() -> Response:
        return Response(openapi, 200, mimetype=JSON)

    requests: dict[tuple[str, int], Any] = {}
    durations: dict[str, Any] = {}

    def count(environ: dict[str, Any], endpoint: str, status: int) -> None:
        counter = requests.get((endpoint, status))
        if counter is None:
            counter = requests[(endpoint, status)] = metrics.HTTP_REQUESTS.labels(
                endpoint, str(status)
            )
        counter.inc()
        started = environ.get("userdest.started")
        if started is not None:
            histogram = durations.get(endpoint)
            if histogram is None:
                histogram = durations[endpoint] = metrics.HTTP_REQUEST_SECONDS.labels(endpoint)
            histogram.observe(perf_counter() - started)

    def finish_response(
        response: Response, environ: dict[str, Any], path: str, method: str, endpoint: str
    ) -> Response:
        """Every answer's request id and, on /v1/*, CORS headers; counted by endpoint and status."""
        rid = environ.get("userdest.request_id")
        if rid:
            response.headers["X-Request-Id"] = rid
        if path.startswith("/v1/"):
            cors(response, method, environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"))
        count(environ, endpoint, response.status_code)
        return response

    @app.before_request
    def start() -> None:
        begin(request.environ)

    @app.after_request
    def finish(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        return finish_response(response, request.environ, request.path, request.method, endpoint)

    calls = {(m, path): route for route in ROUTES for path in route.paths for m in route.methods}
    # The headers finish_response gives a 200 answer of a call route, after Content-Type and
    # Content-Length (as Response(..., mimetype=JSON) sets them) and X-Request-Id.
    cors_headers = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Expose-Headers", _CORS_EXPOSED),
    ]
    after_id = {path: cors_headers if path.startswith("/v1/") else [] for _, path in calls}
    flask_app: WsgiApp = app.wsgi_app

    def dispatch(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        route = calls.get((environ.get("REQUEST_METHOD", ""), path))
        if route is None:
            return flask_app(environ, start_response)
        begin(environ)
        try:
            body = receiver.ingest(route, environ)
        except Exception as exc:  # answered as Flask's error handlers answer it
            response = finish_response(
                handle(exc, environ), environ, path, environ["REQUEST_METHOD"], route.endpoint
            )
            return response(environ, start_response)
        headers = [
            ("Content-Type", JSON),
            ("Content-Length", str(len(body))),
            ("X-Request-Id", environ["userdest.request_id"]),
            *after_id[path],
        ]
        count(environ, route.endpoint, 200)
        start_response("200 OK", headers)
        return [body]

    app.wsgi_app = dispatch  # type: ignore[method-assign]


__all__ = ["ROUTES", "Receiver", "Route", "begin", "register_routes", "remote_addr", "request_id"]
