"""Identify calls: standard traits to profile fields, context to profile fields, the rest
to custom user attributes."""

from __future__ import annotations

from workers.apply.call import Call
from workers.apply.resolve import resolve
from workers.apply.state import BatchState, Profile


def apply_identify(state: BatchState, call: Call) -> None:
    profile = resolve(state, call)
    when = call.when
    standard, custom, refused = call.traits()  # workers/traits.py
    for name, value in standard.items():
        profile.write(name, value, when)
    state.definitions.count_refused("user", refused)
    write_context(profile, call)
    for name, value in state.definitions.coerce("user", custom).items():
        profile.write_attribute(name, value, when)


def write_context(profile: Profile, call: Call) -> None:
    """Context fields (user agent, device, locale, ...) of identify, page and screen calls
    (workers/context.py)."""
    for name, value in call.context_fields().items():
        profile.write(name, value, call.when)
