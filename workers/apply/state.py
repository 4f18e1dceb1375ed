"""The in-memory unit of work of one message: profiles, companies and rows to write.

Apply-functions change this state only; `workers/apply/store.py` loads it and writes it back in a
fixed number of set-based statements, so a batch of 100 calls costs about as much SQL as one call.
Event times are kept as canonical ISO strings (`shared.timeparse.iso`), which sort as they compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.attributes import ATTRIBUTE_TIME_PREFIX
from workers.apply.attributes import Definitions


@dataclass(slots=True)
class Record:
    """A profile or a company: values that remember the event time of their last write."""

    pk: int
    fields: dict[str, Any]
    attributes: dict[str, Any]
    field_times: dict[str, str]
    dirty: bool = False

    def write(self, name: str, value: Any, when: str) -> None:
        """Set a standard field unless a newer call already wrote it; None clears it."""
        if self.field_times.get(name, "") > when:
            return
        self.field_times[name] = when
        if self.fields.get(name) != value:
            self.fields[name] = value
        self.dirty = True

    def write_attribute(self, name: str, value: Any, when: str) -> None:
        """Set a custom attribute unless a newer call already wrote it; None clears it."""
        key = ATTRIBUTE_TIME_PREFIX + name
        if self.field_times.get(key, "") > when:
            return
        self.field_times[key] = when
        if value is None:
            self.attributes.pop(name, None)
        else:
            self.attributes[name] = value
        self.dirty = True

    def absorb(self, other: Record) -> None:
        """Fill this record's empty fields and attributes from `other` (the target side of a merge).

        A field this record cleared later than `other` wrote it stays empty: the merge must not
        bring back what a newer call removed.
        """
        for name, value in other.fields.items():
            if self.fields.get(name) is None and value is not None:
                self._take(other, name, name, value, self.fields)
        for name, value in other.attributes.items():
            if name not in self.attributes:
                self._take(other, ATTRIBUTE_TIME_PREFIX + name, name, value, self.attributes)
        self.dirty = True

    def _take(self, other: Record, key: str, name: str, value: Any, into: dict[str, Any]) -> None:
        theirs = other.field_times.get(key, "")
        if self.field_times.get(key, "") > theirs:
            return
        into[name] = value
        if theirs:
            self.field_times[key] = theirs


@dataclass(slots=True)
class Profile(Record):
    user_id: str | None = None
    page_views: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    new: bool = False

    def seen(self, when: datetime) -> None:
        self.first_seen = when if self.first_seen is None else min(self.first_seen, when)
        self.last_seen = when if self.last_seen is None else max(self.last_seen, when)
        self.dirty = True


@dataclass(slots=True)
class CompanyState(Record):
    group_id: str = ""


Snapshot = tuple[dict[str, Any], dict[str, Any]]
"""A record's fields (with a profile's counters and times) and custom attributes, copied."""

IdKey = tuple[str, str]
"""(kind, value): ("user", userId) or ("anonymous", anonymousId)."""


@dataclass
class BatchState:
    app_id: int
    definitions: Definitions
    profiles: dict[int, Profile] = field(default_factory=dict)
    ids: dict[IdKey, int] = field(default_factory=dict)
    companies: dict[str, CompanyState] = field(default_factory=dict)
    merged_into: dict[int, int] = field(default_factory=dict)
    merges: list[tuple[int, int]] = field(default_factory=list)
    """(source, target) pairs of profiles that existed before this message, in order."""
    identity_writes: dict[IdKey, int] = field(default_factory=dict)
    memberships: dict[tuple[int, int], datetime] = field(default_factory=dict)
    page_views: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(event name, row) pairs; the event id is known only after the flush defines new names."""
    applied: dict[str, int] = field(default_factory=dict)
    suppressed: set[IdKey] = field(default_factory=set)
    """Ids of erased people (shared/erasure.py): calls naming any of them are skipped."""
    before: dict[tuple[str, int], Snapshot] = field(default_factory=dict)
    """What each loaded profile and company held, by (entity, pk), as `store.snapshot` copies it:
    the change feed names the fields the message changed."""
    new_companies: set[int] = field(default_factory=set)
    _next_temp: int = -1

    def find(self, pk: int) -> int:
        """The profile a pk now stands for, following merges made earlier in this message."""
        while pk in self.merged_into:
            pk = self.merged_into[pk]
        return pk

    def lookup(self, key: IdKey) -> Profile | None:
        pk = self.ids.get(key)
        return None if pk is None else self.profiles[self.find(pk)]

    def link(self, key: IdKey, profile: Profile) -> None:
        """Make `key` name `profile` (a new identity, or one moved from another profile)."""
        if self.ids.get(key) != profile.pk:
            self.ids[key] = profile.pk
            self.identity_writes[key] = profile.pk

    def create(self, user_id: str | None) -> Profile:
        """A new profile, with a temporary negative pk until the store gives it a real one."""
        profile = Profile(pk=self._next_temp, fields={}, attributes={}, field_times={}, new=True)
        self._next_temp -= 1
        self.profiles[profile.pk] = profile
        profile.dirty = True
        if user_id is not None:
            profile.user_id = user_id
            self.link(("user", user_id), profile)
        return profile

    def merge(self, source: Profile, target: Profile) -> None:
        """Fold `source` into `target`: counters, times, empty fields, ids, history."""
        target.page_views += source.page_views
        for when in (source.first_seen, source.last_seen):
            if when is not None:
                target.seen(when)
        target.absorb(source)
        for key, pk in list(self.ids.items()):
            if self.find(pk) == source.pk:
                self.link(key, target)
        self.merged_into[source.pk] = target.pk
        del self.profiles[source.pk]
        if not source.new:
            self.merges.append((source.pk, target.pk))

    def count(self, kind: str) -> None:
        self.applied[kind] = self.applied.get(kind, 0) + 1
