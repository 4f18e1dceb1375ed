"""Alias calls: `previousId` and `userId` become one profile."""

from __future__ import annotations

from shared.ids import normalize_id
from workers.apply.call import Call
from workers.apply.state import BatchState, Profile


def apply_alias(state: BatchState, call: Call) -> None:
    user_id = call.user_id or ""  # parse_call guarantees both ids on an alias
    previous_id = normalize_id(call.body.get("previousId")) or ""
    previous = state.lookup(("user", previous_id)) or state.lookup(("anonymous", previous_id))
    current = state.lookup(("user", user_id))

    if previous is not None and current is not None:
        if previous is not current:
            state.merge(previous, current)
    elif previous is not None:
        # The profile known by previousId is now known by userId; the old id keeps naming it.
        previous.user_id = user_id
        previous.dirty = True
        state.link(("user", user_id), previous)
    elif current is not None:
        _link_previous(state, previous_id, current)
    else:
        _link_previous(state, previous_id, state.create(user_id))


def _link_previous(state: BatchState, previous_id: str, profile: Profile) -> None:
    """A previousId no profile has is usually an anonymousId, but may be a former userId: it names
    `profile` either way, so a later call with it as userId finds this profile, not a new one."""
    state.link(("anonymous", previous_id), profile)
    state.link(("user", previous_id), profile)
