"""Attribute definitions of one app while a message is applied: lookup, auto-definition, caps.

A name seen for the first time is defined as `string` (SPEC 5.6) unless the scope's cap is reached,
in which case the value is dropped and counted. Values a definition cannot take are dropped and
counted too; neither is ever an error for the sender.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workers.coerce import IGNORED, coerce

MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class Definition:
    type: str
    choices: list[Any] | None = None
    multiple: bool = False


STRING = Definition("string")


@dataclass(frozen=True, slots=True)
class Caps:
    user: int = 1000
    company: int = 1000
    event_names: int = 1000
    event_attributes: int = 200


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
    """(scope, event, name, reason) -> how many values were dropped."""

    def add(self, scope: str, event: str, name: str, definition: Definition) -> None:
        """Register a definition loaded from the database."""
        self._scope(scope, event)[name] = definition

    def _scope(self, scope: str, event: str) -> dict[str, Definition]:
        if scope == "event":
            return self.event.setdefault(event, {})
        return self.user if scope == "user" else self.company

    def _cap(self, scope: str) -> int:
        if scope == "event":
            return self.caps.event_attributes
        return self.caps.user if scope == "user" else self.caps.company

    def may_define(self, scope: str, event: str, name: str) -> bool:
        """Whether a value under `name` would define it now: new, well named and under the cap."""
        defs = self.event.get(event, {}) if scope == "event" else self._scope(scope, "")
        return name not in defs and 0 < len(name) <= MAX_NAME and len(defs) < self._cap(scope)

    def define_event(self, name: str) -> bool:
        """True if the event name is known or could be defined now; False if over the cap."""
        if name in self.event_ids or name in self.new_events:
            return True
        if len(self.event_ids) + len(self.new_events) >= self.caps.event_names:
            self.ignored["event", name, "", "over_cap"] += 1
            return False
        self.new_events.append(name)
        return True

    def coerce(self, scope: str, values: dict[str, Any], event: str = "") -> dict[str, Any]:
        """The values this scope's definitions take, typed; None means "clear this attribute"."""
        defs = self._scope(scope, event)
        out: dict[str, Any] = {}
        for name, value in values.items():
            definition = defs.get(name)
            if definition is None:
                if value is None:
                    continue  # nothing to clear, and a null says nothing about the type
                if not 0 < len(name) <= MAX_NAME:
                    self.ignored[scope, event, name[:MAX_NAME], "bad_name"] += 1
                    continue
                if len(defs) >= self._cap(scope):
                    self.ignored[scope, event, name, "over_cap"] += 1
                    continue
                definition = defs[name] = STRING
                self.new_attributes.append((scope, event, name))
            typed = coerce(value, definition.type, definition.choices, definition.multiple)
            if typed is IGNORED:
                self.ignored[scope, event, name, "uncoercible"] += 1
                continue
            out[name] = typed
        return out
