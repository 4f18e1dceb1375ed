"""API keys looked up by hash and remembered per process for AUTH_CACHE_TTL seconds: the receiver
and the read API both authenticate through it, so a revoked key stops working on both within the
same time."""

from __future__ import annotations

import binascii
import hmac
import logging
import math
import threading
import time
from base64 import b64decode
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.calls import Refusal
from shared.metrics import AUTH_LOOKUPS
from shared.tenancy import AuthView, hash_key, load_auth_view

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 256
"""Longer values are refused without a look-up; userdest's keys are 35 characters."""

_HIT = AUTH_LOOKUPS.labels("hit")
_MISS = AUTH_LOOKUPS.labels("miss")
_STALE = AUTH_LOOKUPS.labels("stale")
_BUSY = AUTH_LOOKUPS.labels("busy")


def clean_key(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def key_from_authorization(header: str | None) -> str | None:
    """The key in `Basic base64(key:)`, `Bearer key` or `Token key`; None if there is none."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme in ("bearer", "token"):
        return clean_key(credentials)
    if scheme == "basic":
        try:
            decoded = b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        user, _, password = decoded.partition(":")
        # Segment's libraries send the key as the user name; some tools put it in the password.
        return clean_key(user) or clean_key(password)
    return None


def _refused() -> Refusal:
    return Refusal(403, "invalid_api_key", "the API key is unknown or revoked")


class AuthCache:
    """Key look-ups by hash, remembered per process for `ttl` seconds, misses included.

    When Postgres cannot be reached, a key seen before keeps its last answer (ingestion goes on
    while the database is down; a revocation cannot be written then anyway); an unseen key gets
    503.

    A flood of random keys must not slow the valid ones: keys that exist and keys that do
    not are remembered apart, each at most `max_entries`, so misses never push a valid key out
    (the negative cache drops its oldest miss instead); and Postgres is asked about keys this
    process has no answer for at most `lookups_per_second` times a second. Past that budget such a
    key gets 503 with Retry-After, not 403: it may be a key created a moment ago, and a sender
    retries a 503 where it drops a 403. A valid key's refresh after its TTL is never held back.
    """

    def __init__(
        self,
        engine: Engine,
        ttl: float,
        retry_after: int,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        lookups_per_second: float = 20.0,
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._retry_after = str(retry_after)
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, AuthView]] = {}
        self._misses: dict[str, float] = {}
        self._rate = lookups_per_second
        self._burst = max(1.0, lookups_per_second)
        self._tokens = self._burst
        self._refilled = clock()
        self._lock = threading.Lock()

    def authenticate(self, key: str) -> AuthView:
        """The key's view, or Refusal 403 (unknown, revoked) or 503 (Postgres down and the key
        unseen, or too many unseen keys this second)."""
        if len(key) > MAX_KEY_LENGTH:
            raise _refused()
        digest = hash_key(key)
        now = self._clock()
        entry = self._entries.get(digest)
        if entry is not None and now - entry[0] < self._ttl:
            _HIT.inc()
            view: AuthView | None = entry[1]
        elif entry is None and now - self._misses.get(digest, -math.inf) < self._ttl:
            _HIT.inc()
            view = None
        else:
            if entry is None and not self._take_token(now):
                _BUSY.inc()
                raise Refusal(
                    503,
                    "auth_busy",
                    "too many unknown API keys right now; retry later",
                    headers={"Retry-After": self._retry_after},
                )
            view = self._load(digest, entry, now)
        # The dictionary found the entry by hash; the comparison that decides is constant-time.
        if view is None or view.revoked or not hmac.compare_digest(view.key_hash, digest):
            raise _refused()
        return view

    def _take_token(self, now: float) -> bool:
        """One Postgres look-up of a key without an answer here, within the per-second budget."""
        with self._lock:
            elapsed = max(0.0, now - self._refilled)
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._refilled = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def _load(
        self, digest: str, stale: tuple[float, AuthView] | None, now: float
    ) -> AuthView | None:
        try:
            with Session(self._engine) as session:
                view = load_auth_view(session, digest)
        except SQLAlchemyError as exc:
            if stale is None:
                logger.warning("key look-up failed", extra={"error": type(exc).__name__})
                raise Refusal(
                    503,
                    "auth_unavailable",
                    "API keys cannot be checked right now; retry later",
                    headers={"Retry-After": self._retry_after},
                ) from None
            _STALE.inc()
            logger.warning(
                "key look-up failed, cached answer used", extra={"error": type(exc).__name__}
            )
            view = stale[1]
        else:
            _MISS.inc()
        with self._lock:
            if view is None:
                self._entries.pop(digest, None)
                if len(self._misses) >= self._max_entries:
                    # The oldest miss goes (dicts keep insertion order); valid keys are apart.
                    del self._misses[next(iter(self._misses))]
                self._misses.pop(digest, None)
                self._misses[digest] = now
            else:
                self._misses.pop(digest, None)
                if digest not in self._entries and len(self._entries) >= self._max_entries:
                    del self._entries[next(iter(self._entries))]
                # A stale answer is stored again too, so a down database costs one attempt per TTL.
                self._entries[digest] = (now, view)
        return view

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._misses.clear()
