"""Who is calling: the API key (four ways to send it), its cached look-up, trusted domains, and the
webhook signature.

The only Postgres access of a request is the read-only look-up of a key, through the per-process
cache of shared/keycache.py that keeps an answer (found or not) for AUTH_CACHE_TTL seconds, so a
revoked key or a changed domain list is seen within that time on every receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from shared.calls import Refusal
from shared.keycache import clean_key
from shared.tenancy import host_matches, url_host


def key_from_body(body: Any) -> str | None:
    """The body's `writeKey`, as Segment's browser library and the HTTP API allow."""
    if type(body) is not dict:
        return None
    return clean_key(body.get("writeKey"))


OPAQUE_ORIGIN = ""
"""The host of an Origin that names no host (`null`: a sandboxed frame, a `file:` page): it matches
no trusted domain."""


def header_host(origin: str | None, referer: str | None) -> str | None:
    """The host of Origin, else of Referer; OPAQUE_ORIGIN where the header is there but names no
    host; None where neither header is sent (a server-side source: each call's page decides)."""
    for header in (origin, referer):
        if header is not None and header.strip():
            return url_host(header) or OPAQUE_ORIGIN
    return None


def check_domains(domains: tuple[str, ...], host: str) -> None:
    """403 where the app has trusted domains and the request's Origin/Referer host is none of them.

    Without either header, each call's page decides for that call alone (shared.calls)."""
    if domains and not host_matches(host, domains):
        raise Refusal(403, "untrusted_domain", "the sending site is not a trusted domain")


_JSON_SPACE = " \t\r\n"
_SCANNER = json.JSONDecoder()


def first_element(raw: bytes) -> bytes | None:
    """The bytes of a JSON array body's first element exactly as they stand in the body; None
    where the body is not an array with one.

    Segment's Webhooks (Actions) destination signs a batched delivery over its first element as
    JSON.stringify writes it, which is how that element appears in the body it sends.
    """
    text = raw.decode("utf-8", "replace").lstrip(_JSON_SPACE)
    if not text.startswith("["):
        return None
    start = len(text) - len(text[1:].lstrip(_JSON_SPACE))
    try:
        _, end = _SCANNER.raw_decode(text, start)
    except (ValueError, RecursionError):
        return None
    return text[start:end].encode("utf-8")


def check_signature(secret: str | None, signature: str | None, *bodies: bytes | None) -> int | None:
    """Where the app has a webhook secret, X-Signature must be hex HMAC-SHA1 of one of `bodies`
    (the body as received, as sent before gzip, or an Actions array's first element); the answer
    is the position in `bodies` of the one it signs, None where the app has no secret."""
    if not secret:
        return None
    if not signature:
        raise Refusal(401, "missing_signature", "X-Signature is required for this app's webhooks")
    given = signature.strip().lower().encode("latin-1", "replace")
    key = secret.encode()
    for position, body in enumerate(bodies):
        if body is None:
            continue
        expected = hmac.new(key, body, hashlib.sha1).hexdigest().encode()
        if hmac.compare_digest(expected, given):
            return position
    raise Refusal(401, "bad_signature", "X-Signature does not match the body")
