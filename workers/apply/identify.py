"""Identify calls: standard traits to profile fields, context to profile fields, the rest
to custom user attributes."""

from __future__ import annotations

from shared.timeparse import iso
from workers.apply.call import Call
from workers.apply.resolve import resolve
from workers.apply.state import BatchState, Profile
from workers.context import map_context
from workers.traits import identify_traits, map_user_traits


def apply_identify(state: BatchState, call: Call) -> None:
    profile = resolve(state, call)
    when = iso(call.time)
    standard, custom, refused = map_user_traits(identify_traits(call.body, call.user_id))
    for name, value in standard.items():
        profile.write(name, value, when)
    state.definitions.count_refused("user", refused)
    write_context(profile, call, when)
    for name, value in state.definitions.coerce("user", custom).items():
        profile.write_attribute(name, value, when)


def write_context(profile: Profile, call: Call, when: str) -> None:
    """Context fields (user agent, device, locale, ...) of identify, page and screen calls."""
    for name, value in map_context(call.body, call.type, call.client_ip).items():
        profile.write(name, value, when)
