"""User resolution: which profile a call applies to, creating and linking as it goes."""

from __future__ import annotations

from workers.apply.call import Call
from workers.apply.state import BatchState, Profile


def resolve(state: BatchState, call: Call) -> Profile:
    """The profile for `call`: by userId, else anonymousId; created if missing, linked if both."""
    return resolve_ids(state, call.user_id, call.anonymous_id)


def resolve_ids(state: BatchState, user_id: str | None, anonymous_id: str | None) -> Profile:
    by_user = state.lookup(("user", user_id)) if user_id else None
    by_anon = state.lookup(("anonymous", anonymous_id)) if anonymous_id else None
    if user_id is None:
        if by_anon is not None:
            return by_anon
        profile = state.create(None)
        state.link(("anonymous", anonymous_id or ""), profile)
        return profile

    if by_user is None:
        if by_anon is not None and by_anon.user_id is None:
            # The visitor signed in: their anonymous profile becomes the identified one.
            by_anon.user_id = user_id
            by_anon.dirty = True
            state.link(("user", user_id), by_anon)
            return by_anon
        profile = state.create(user_id)
        if anonymous_id is not None and by_anon is None:
            state.link(("anonymous", anonymous_id), profile)
        return profile

    if by_anon is None:
        if anonymous_id is not None:
            state.link(("anonymous", anonymous_id), by_user)
    elif by_anon is not by_user and by_anon.user_id is None:
        state.merge(by_anon, by_user)
    # Otherwise the anonymous id belongs to someone else's identified profile (two people on one
    # device): it stays where it is and the call applies to the userId's profile only.
    return by_user
