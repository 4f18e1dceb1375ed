"""Attribute definitions of one app while a message is applied: lookup, auto-definition, caps.

A name seen for the first time is defined as `string` unless the scope's cap is reached, or the
app's budget of new names for the hour is spent, in which case the value is dropped and counted. Values a definition cannot take are dropped and
counted too, and so are strings stored cut; none of it is ever an error for the sender.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.attributes import NAME_MAX, Caps, valid_name
from workers.coerce import IGNORED, UNCOERCIBLE, clears, coerce_noting


@dataclass(frozen=True, slots=True)
class Definition:
    type: str
    choices: list[Any] | None = None
    multiple: bool = False


STRING = Definition("string")


@dataclass
class Definitions:
    caps: Caps
    user: dict[str, Definition] = field(default_factory=dict)
    company: dict[str, Definition] = field(default_factory=dict)
    event: dict[str, dict[str, Definition]] = field(default_factory=dict)
    event_ids: dict[str, int] = field(default_factory=dict)
    """Every event name the app has, with its id; new names get theirs when the store flushes."""
    new_attributes: list[tuple[str, str, str]] = field(default_factory=list)
    """(scope, event, name) defined by this message's traffic, to insert."""
    new_events: list[str] = field(default_factory=list)
    ignored: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    """(scope, event, name, reason) -> how many values were dropped, or stored changed
    (`truncated`)."""
    budget_used: dict[str, int] = field(default_factory=dict)
    """New names traffic defined in the last hour, by budget scope (BUDGET_SCOPES), read with the
    definitions; the names this message defines are added as it goes."""

    def budget_left(self, scope: str) -> int:
        """How many more new names traffic may define in `scope` (a BUDGET_SCOPES name) now."""
        return self.caps.budget - self.budget_used.get(scope, 0)

    def _spend(self, scope: str) -> bool:
        """Take one new name of `scope`'s budget; False if none is left."""
        if self.budget_left(scope) <= 0:
            return False
        self.budget_used[scope] = self.budget_used.get(scope, 0) + 1
        return True

    def add(self, scope: str, event: str, name: str, definition: Definition) -> None:
        """Register a definition loaded from the database."""
        self._scope(scope, event)[name] = definition

    def _scope(self, scope: str, event: str) -> dict[str, Definition]:
        if scope == "event":
            return self.event.setdefault(event, {})
        return self.user if scope == "user" else self.company

    def may_define(self, scope: str, event: str, name: str) -> bool:
        """Whether a value under `name` would define it now: new, well named, under the cap and
        within the budget."""
        defs = self.event.get(event, {}) if scope == "event" else self._scope(scope, "")
        return (
            name not in defs
            and valid_name(name)
            and len(defs) < self.caps.for_scope(scope)
            and self.budget_left(scope) > 0
        )

    def may_define_event(self, name: str) -> bool:
        """Whether a track of `name` would define the event name now."""
        return (
            name not in self.event_ids
            and len(self.event_ids) < self.caps.event_names
            and self.budget_left("event_names") > 0
        )

    def define_event(self, name: str) -> bool:
        """True if the event name is known or could be defined now; False if over the cap or the
        budget."""
        if name in self.event_ids or name in self.new_events:
            return True
        if len(self.event_ids) + len(self.new_events) >= self.caps.event_names:
            self.ignored["event", name, "", "over_cap"] += 1
            return False
        if not self._spend("event_names"):
            self.ignored["event", name, "", "over_budget"] += 1
            return False
        self.new_events.append(name)
        return True

    def count_refused(self, scope: str, names: list[str]) -> None:
        """Count standard traits (gender, employees) whose value their field could not take."""
        for name in names:
            self.ignored[scope, "", name, UNCOERCIBLE] += 1

    def coerce(self, scope: str, values: dict[str, Any], event: str = "") -> dict[str, Any]:
        """The values this scope's definitions take, typed; None means "clear this attribute"."""
        defs = self._scope(scope, event)
        out: dict[str, Any] = {}
        profile = scope != "event"  # an event records its properties; a profile's can be cleared
        for name, value in values.items():
            if profile and clears(value):
                value = None
            definition = defs.get(name)
            if definition is None:
                if value is None:
                    continue  # nothing to clear, and a null says nothing about the type
                if not valid_name(name):
                    self.ignored[scope, event, name[:NAME_MAX], "bad_name"] += 1
                    continue
                if len(defs) >= self.caps.for_scope(scope):
                    self.ignored[scope, event, name, "over_cap"] += 1
                    continue
                if not self._spend(scope):
                    self.ignored[scope, event, name, "over_budget"] += 1
                    continue
                definition = defs[name] = STRING
                self.new_attributes.append((scope, event, name))
            typed, reason = coerce_noting(
                value, definition.type, definition.choices, definition.multiple
            )
            if reason is not None:
                self.ignored[scope, event, name, reason] += 1
            if typed is not IGNORED:
                out[name] = typed
        return out
