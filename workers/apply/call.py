"""One Segment call as the workers see it: defaults merged, ids normalised, event time fixed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.calls import check_call
from shared.envelope import REPLAY_SOURCE, Envelope, merge_defaults
from shared.eventtime import event_time
from shared.ids import clean_text, normalize_id
from shared.timeparse import iso, parse_iso
from workers.context import map_context
from workers.traits import identify_traits, map_company_traits, map_user_traits

Traits = tuple[dict[str, Any], dict[str, Any], list[str]]
"""(standard fields, custom attributes or properties, refused standard names): workers/traits.py."""


class BadCall(ValueError):
    """A call a worker cannot apply at all; it becomes a dead letter with `code` as its reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Call:
    index: int
    """Position in its message, so dead letters and logs can name it."""
    raw: Any
    """The call exactly as received."""
    body: dict[str, Any]
    """The call with the batch's defaults merged under it."""
    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    time: datetime
    """The event time after Segment's clock-skew rule."""
    client_ip: str | None = None
    """The request's address where the call came straight from a client library to /v1/*; never
    for /webhook (Segment's servers) or replays (the operator's machine)."""
    when: str = ""
    """`time` as field_times hold it (shared.timeparse.iso)."""
    _event: str | None = field(default=None, init=False, repr=False)
    _context: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _traits: Traits | None = field(default=None, init=False, repr=False)

    @property
    def event(self) -> str:
        """A track call's event name as stored (parse_call made sure it is a non-empty string)."""
        if self._event is None:
            self._event = clean_text(str(self.body.get("event", "")).strip())
        return self._event

    def context_fields(self) -> dict[str, Any]:
        """The profile fields the call's context gives (workers/context.py); read-only."""
        if self._context is None:
            self._context = map_context(self.body, self.type, self.client_ip)
        return self._context

    def traits(self) -> Traits:
        """An identify's user traits or a group's company traits, mapped (workers/traits.py);
        read-only."""
        if self._traits is None:
            if self.type == "group":
                self._traits = map_company_traits(self.obj("traits"))
            else:
                self._traits = map_user_traits(identify_traits(self.body, self.user_id))
        return self._traits

    def work_out(self) -> None:
        """Map the call now, once: what its type reads above depends on the call alone, so it is
        worked out before the transaction takes any lock, and the locked stretch only reads,
        applies and writes. A mapping that fails is left to fail again where the call is applied,
        isolated like any failing call (workers/apply/messages.py)."""
        try:
            if self.type in ("identify", "group"):
                self.traits()
            if self.type in ("identify", "page", "screen"):
                self.context_fields()
            if self.type == "track":
                _ = self.event
        except Exception:  # noqa: S110 (raised again, and handled, when applied)
            pass

    def obj(self, key: str) -> dict[str, Any]:
        """`traits`, `properties` or `context` as a dict, empty where absent or not an object."""
        value = self.body.get(key)
        return value if isinstance(value, dict) else {}


def parse_call(index: int, raw: Any, message_id: str, env: Envelope, received_at: datetime) -> Call:
    """Interpret one raw call of `env`; raises BadCall for what the receiver should have refused."""
    if not isinstance(raw, dict):
        raise BadCall("not_an_object", "a call must be a JSON object")
    body = merge_defaults(raw, env.defaults)
    # The receiver's own checks (shared/calls.py): a call it would refuse fails here with the
    # same code, whichever way it reached the queue. Only Segment's webhook may ask for an erasure.
    times: dict[str, datetime | None] = {}
    errors = check_call(body, None, deletions=env.source == "webhook", times=times)
    if errors:
        raise BadCall(errors[0]["code"], "; ".join(e["message"] for e in errors))
    kind = body["type"]
    user_id = normalize_id(body.get("userId"))
    anonymous_id = normalize_id(body.get("anonymousId"))
    when = event_time(body, received_at, parse_iso(env.sent_at), env.source == REPLAY_SOURCE, times)
    return Call(
        index=index,
        raw=raw,
        body=body,
        type=kind,
        message_id=clean_text(message_id),
        user_id=user_id,
        anonymous_id=anonymous_id,
        time=when,
        client_ip=env.client_ip(),
        when=iso(when),
    )
