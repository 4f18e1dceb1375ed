"""Faults to inject into a worker's code in tests: Postgres errors and functions that fail first."""

from __future__ import annotations

from typing import Any


class PgError(Exception):
    """What psycopg raises: an error carrying a SQLSTATE (None: the server never answered)."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("boom")
        self.sqlstate = sqlstate


def failing(times: int, exc: Exception, real: Any) -> Any:
    """`real`, raising `exc` on its first `times` calls."""
    calls = {"n": 0}

    def run(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc
        return real(*args, **kw)

    return run
