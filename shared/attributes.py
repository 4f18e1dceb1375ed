"""The attribute vocabulary: scopes, types, name limits, the per-app caps and budgets.

The one place these rules live: the models' check constraints, the workers' coercion and
auto-definition, and the CLI's `attributes define` all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SCOPES: Final = ("user", "company", "event")
"""Whose attribute a definition is: a profile's, a company's, or an event name's property."""
TYPES: Final = (
    "string",
    "integer",
    "float",
    "number",
    "boolean",
    "date",
    "datetime",
    "fixed",
    "json",
)
"""The types a definition can have, as stored. `number` is any finite number, stored
integral where the value is integral (`"123"` -> 123), a fraction where not; `float` always stores a
float."""
SYNONYMS: Final[dict[str, str]] = {}
"""Other names operators may give a type, and the type they mean."""
ORIGINS: Final = ("operator", "traffic")
"""Who made a definition: an operator (never changed by traffic) or traffic (auto-defined)."""
ATTRIBUTE_TIME_PREFIX: Final = "a."
"""Prefix of custom attributes in `field_times`, so an attribute never shares a standard field's time."""
NAME_MAX: Final = 64
"""The longest attribute name, in characters (names are 1 to NAME_MAX characters)."""


def valid_name(name: object) -> bool:
    """Whether `name` can be an attribute name: a string of 1 to NAME_MAX characters."""
    return isinstance(name, str) and 0 < len(name) <= NAME_MAX


def normalize_type(name: str) -> str:
    """The canonical attribute type for a name given by an operator or a caller."""
    key = name.strip().lower() if isinstance(name, str) else ""
    key = SYNONYMS.get(key, key)
    if key not in TYPES:
        raise ValueError(
            f"unknown attribute type {name!r}: use one of string, integer, float, number, "
            "boolean, date, datetime, fixed, json"
        )
    return key


BUDGET_DEFAULT: Final = 100
"""New names traffic may define per app and budget scope in any rolling hour, unless
DEFINITION_BUDGET or the app's own budget says otherwise. Small against the caps, so that one burst
of made-up names (two 2,500-call batches) cannot take a cap: filling a 1,000-name cap takes ten hours
of it, and every name turned away meanwhile is counted (`over_budget`) for an alert to see."""
BUDGET_WINDOW_SQL: Final = "interval '1 hour'"
"""The rolling window of the budget, as SQL: traffic's definitions created within it count."""
BUDGET_SCOPES: Final = ("user", "company", "event_names", "event")
"""What a budget is counted per: user attributes, company attributes, event names, and event
properties (of all the app's events together)."""
CAP_MAX: Final = 10_000
"""The highest cap or budget an operator may give an app: every message reads the app's user and
company definitions and its event names, so a cap also bounds what each message reads."""


@dataclass(frozen=True, slots=True)
class Caps:
    """An app's caps on definitions, and its budget of new names traffic may define per hour;
    past either, new names are ignored and counted."""

    user: int = 1000
    company: int = 1000
    event_names: int = 1000
    event_attributes: int = 200
    budget: int = BUDGET_DEFAULT
    """New names traffic may define per budget scope (BUDGET_SCOPES) in any rolling hour."""

    def for_scope(self, scope: str) -> int:
        """The cap on attribute names in `scope` (for `event`, per event name)."""
        if scope == "event":
            return self.event_attributes
        return self.user if scope == "user" else self.company


DEFAULT_CAPS: Final = Caps()
"""What a new app gets; the columns of `apps` default to these."""

IGNORED_NAMES_KEPT: Final = 100
"""Names an app's `ignored_values` keeps one row each for, per scope and reason, of the names a
sender chooses (over a cap or the budget, badly named); past it they are counted together under the name `*`
(event `*`), so a sender cannot grow the table one row per new name."""

SENDER_NAMED_REASONS: Final = ("over_cap", "over_budget", "bad_name")
"""Reasons whose rows are named by whatever the sender sent, not by a definition."""
