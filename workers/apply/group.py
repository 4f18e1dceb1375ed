"""Group calls: upsert the company, its traits, and the user's membership."""

from __future__ import annotations

from shared.ids import normalize_id
from workers.apply.call import Call
from workers.apply.resolve import resolve
from workers.apply.state import BatchState


def apply_group(state: BatchState, call: Call) -> None:
    profile = resolve(state, call)
    group_id = normalize_id(call.body.get("groupId"))
    company = state.companies[group_id or ""]  # the store loaded or created every groupId
    when = call.when
    standard, custom, refused = call.traits()  # workers/traits.py
    for name, value in standard.items():
        company.write(name, value, when)
    state.definitions.count_refused("company", refused)
    for name, value in state.definitions.coerce("company", custom).items():
        company.write_attribute(name, value, when)
    key = (company.pk, profile.pk)
    since = state.memberships.get(key)
    state.memberships[key] = call.time if since is None else min(since, call.time)
