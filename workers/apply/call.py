"""One Segment call as the workers see it: defaults merged, ids normalised, event time fixed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.calls import check_call
from shared.envelope import REPLAY_SOURCE, Envelope, merge_defaults
from shared.eventtime import event_time
from shared.ids import clean_text, normalize_id
from shared.timeparse import parse_iso


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

    @property
    def event(self) -> str:
        """A track call's event name as stored (parse_call made sure it is a non-empty string)."""
        return clean_text(str(self.body.get("event", "")).strip())

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
    return Call(
        index=index,
        raw=raw,
        body=body,
        type=kind,
        message_id=clean_text(message_id),
        user_id=user_id,
        anonymous_id=anonymous_id,
        time=event_time(
            body, received_at, parse_iso(env.sent_at), env.source == REPLAY_SOURCE, times
        ),
        client_ip=env.client_ip(),
    )
