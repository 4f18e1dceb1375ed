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
                   "message_id": "…"}],             # the id the answer gave the refused call
     "mac": "hs256:…"}                             # last: the MAC of everything before it

Every producer signs (`EnvelopeKeys.seal`) and a worker verifies (`EnvelopeKeys.verify`) before it
acts on anything: the MAC is HMAC-SHA256, keyed with ENVELOPE_SECRET, of the envelope's JSON
without `mac` as orjson writes it; docs/security.md says why and what it covers.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import urlsafe_b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from shared.settings import Settings

VERSION = 1
DIRECT_SOURCE = "http"
"""`source` of calls a client posted straight to /v1/* (the others: "webhook", "replay"). Only
these may take the request's address as the user's."""

REPLAY_SOURCE = "replay"
"""The `source` of envelopes that `userdest replay` and dead-letter replays make: the only calls
whose own `receivedAt` counts; a live sender's `receivedAt` is ignored."""


MAC_FIELD = "mac"
"""The key of an envelope's MAC, written after every other field."""
MAC_SCHEME = "hs256:"
"""What a MAC starts with: HMAC-SHA256, base64url without padding after it."""
_MAC_CONTEXT = b"userdest envelope\n"
"""Fed to the HMAC before the envelope, so that ENVELOPE_SECRET's MACs mean nothing elsewhere."""


class EnvelopeError(ValueError):
    """A queued message that is not an envelope this code understands."""


class SignatureError(EnvelopeError):
    """An envelope without a MAC this deployment made: never applied. `code` is the dead
    letters' reason."""

    code = "bad_envelope_mac"


class UnsignedEnvelope(SignatureError):
    """An envelope with no MAC at all: an older version's, or written by hand."""

    code = "unsigned_envelope"


SIGNATURE_REASONS = (SignatureError.code, UnsignedEnvelope.code)
"""The dead letters' reasons of envelopes no ENVELOPE_SECRET signed."""


class EnvelopeKeys:
    """Signs envelopes with the first of ENVELOPE_SECRET's secrets and verifies them with any."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("no ENVELOPE_SECRET to sign envelopes with")
        # The context is hashed once per secret; each envelope copies the state and goes on.
        self._macs = [hmac.new(s.encode(), _MAC_CONTEXT, hashlib.sha256) for s in secrets]

    @classmethod
    def of(cls, settings: Settings) -> EnvelopeKeys:
        """The keys of a `Settings`' ENVELOPE_SECRET."""
        return cls(settings.envelope_secrets)

    @staticmethod
    def _mac(key: Any, signed: bytes) -> bytes:
        mac = key.copy()
        mac.update(signed)
        return MAC_SCHEME.encode() + urlsafe_b64encode(mac.digest()).rstrip(b"=")

    def seal(self, envelope: Mapping[str, Any]) -> bytes:
        """The envelope as JSON with its MAC as last field: what publishers put in a message (as
        is, without serializing it again). A `mac` it holds already is replaced."""
        if MAC_FIELD in envelope:
            envelope = {k: v for k, v in envelope.items() if k != MAC_FIELD}
        signed = orjson.dumps(envelope)
        comma = b"," if len(signed) > 2 else b""
        return b'%s%s"%s":"%s"}' % (
            signed[:-1],
            comma,
            MAC_FIELD.encode(),
            self._mac(self._macs[0], signed),
        )

    def verify(self, data: Any) -> None:
        """Return if `data`, a parsed message argument, carries the MAC of exactly what it holds
        beside it (made with any of the secrets); raise UnsignedEnvelope or SignatureError if not.
        The MAC is checked against `data` itself, serialized again, so what passes is what the
        worker acts on, whatever the bytes were. An argument that is not an object is left to
        `Envelope.from_dict` to refuse."""
        if not isinstance(data, dict):
            return
        given = data.get(MAC_FIELD)
        if given is None:
            raise UnsignedEnvelope(
                "the envelope carries no MAC: written by an older version or by hand"
            )
        try:
            signed = orjson.dumps({k: v for k, v in data.items() if k != MAC_FIELD})
            claimed = given.encode("ascii")
        except (TypeError, AttributeError, UnicodeEncodeError):
            signed, claimed = b"", b""
        if claimed and any(hmac.compare_digest(self._mac(k, signed), claimed) for k in self._macs):
            return
        raise SignatureError(
            "the envelope's MAC matches none of ENVELOPE_SECRET's secrets: altered or forged, "
            "or signed with a secret no longer listed"
        )


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
