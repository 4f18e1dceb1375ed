"""Track calls: an event occurrence with its properties typed per the event's definitions."""

from __future__ import annotations

from workers.apply.call import Call
from workers.apply.resolve import resolve
from workers.apply.state import BatchState


def apply_track(state: BatchState, call: Call) -> None:
    profile = resolve(state, call)
    name = call.event
    if not state.definitions.define_event(name):
        return  # over the app's cap of event names: counted, not recorded
    properties = state.definitions.coerce("event", call.obj("properties"), event=name)
    row = {
        "user_pk": profile.pk,
        "properties": properties,
        "occurred_at": call.time,
        "message_id": call.message_id,
    }
    state.events.append((name, row))
