"""The versioned JSON message that carries one accepted request from the receiver to a worker.

JSON only (never pickle, never ORM objects), so a message survives deploys and can be exported,
read by people and replayed:

    {"v": 1, "app_id": 3, "key_id": "k_ab12...", "received_at": "2026-11-28T09:15:01.031Z",
     "request_id": "…", "remote_addr": "198.51.100.23", "source": "http",
     "sent_at": "…" | null,                      # the batch's sentAt, for calls without their own
     "defaults": {"context": {...}, "integrations": {...}},   # the batch's, merged under each call
     "calls": [{...raw Segment call...}, ...],   # exactly as sent, never modified
     "message_ids": ["…", ...],                  # each call's messageId, a UUID where it had none
     "rejected": [{"index": 4, "call": {...}, "errors": [{"code": …, "message": …}],
                   "message_id": "…"}]}             # the id the answer gave the refused call
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERSION = 1
DIRECT_SOURCE = "http"
"""`source` of calls a client posted straight to /v1/* (the others: "webhook", "replay"). Only
these may take the request's address as the user's."""

REPLAY_SOURCE = "replay"
"""The `source` of envelopes that `userdest replay` and dead-letter replays make: the only calls
whose own `receivedAt` counts; a live sender's `receivedAt` is ignored."""


class EnvelopeError(ValueError):
    """A queued message that is not an envelope this code understands."""


@dataclass(slots=True)
class Envelope:
    app_id: int
    received_at: str
    request_id: str
    calls: list[Any] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    key_id: str | None = None
    remote_addr: str | None = None
    source: str = DIRECT_SOURCE
    sent_at: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    v: int = VERSION

    def client_ip(self) -> str | None:
        """The request's address where it stands for the user's (a client posting straight to
        /v1/*), else None: for /webhook it is Segment's server, for a replay the operator's."""
        return self.remote_addr if self.source == DIRECT_SOURCE else None

    def to_dict(self) -> dict[str, Any]:
        """The message as a dict; calls are shared, not copied (asdict would deep-copy them)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        if not isinstance(data, dict):
            raise EnvelopeError("a message must be a JSON object")
        if data.get("v") != VERSION:
            raise EnvelopeError(f"unknown envelope version {data.get('v')!r}")
        try:
            env = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except TypeError as exc:
            raise EnvelopeError(f"malformed envelope: {exc}") from None
        if not isinstance(env.app_id, int) or not isinstance(env.calls, list):
            raise EnvelopeError("an envelope needs an integer app_id and a list of calls")
        if len(env.message_ids) != len(env.calls):
            raise EnvelopeError("an envelope needs one message id per call")
        return env


def merge_defaults(call: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A call with an envelope's `defaults` under its own keys; `context` merges one level deep.

    A call's `null` does not hide a default: Segment's libraries send nulls for "not set".
    """
    if not defaults:
        return call
    body = dict(defaults)
    for key, value in call.items():
        if value is not None or key not in defaults:
            body[key] = value
    base_ctx, own_ctx = defaults.get("context"), call.get("context")
    if isinstance(base_ctx, dict) and isinstance(own_ctx, dict):
        body["context"] = {**base_ctx, **own_ctx}
    return body
