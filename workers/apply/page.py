"""Page and screen calls: counters, first and last seen, and a recorded page view."""

from __future__ import annotations

from typing import Any

from shared.ids import clean_text
from shared.models import PAGE_FIELDS
from workers.apply.call import Call
from workers.apply.identify import write_context
from workers.apply.resolve import resolve
from workers.apply.state import BatchState

NO_REFERRER = frozenset({"$direct"})
"""Referrers that mean "none": RudderStack's SDKs write `$direct` for a visit with no referrer."""


def apply_page(state: BatchState, call: Call) -> None:
    """Apply a `page` or a `screen` call; the call's type is recorded as the view's kind."""
    profile = resolve(state, call)
    profile.page_views += 1
    profile.seen(call.time)
    write_context(profile, call)

    properties = call.obj("properties")
    page = call.obj("context").get("page")
    page = page if isinstance(page, dict) else {}
    row: dict[str, Any] = {
        "user_pk": profile.pk,
        "kind": call.type,
        "properties": properties,
        "occurred_at": call.time,
        "message_id": call.message_id,
    }
    for key in PAGE_FIELDS:
        # A name and category are the call's own, the rest its page's; the call's properties
        # describe this view, and context.page (the page the library last saw) is the fallback.
        row[key] = _text(call.body.get(key)) or _text(properties.get(key)) or _text(page.get(key))
    if row["referrer"] in NO_REFERRER:
        row["referrer"] = None
    state.page_views.append(row)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = clean_text(str(value))
    return text or None
