"""The realistic calls in tests/fixtures/, as tests send them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
"""tests/fixtures: the project's own copies of realistic calls (a fresh clone has nothing else)."""


def fixture(name: str) -> dict[str, Any]:
    """A realistic call from tests/fixtures (`name` with or without `.json`), without `_about`."""
    stem = name.removesuffix(".json")
    call = json.loads((FIXTURES / f"{stem}.json").read_text())
    call.pop("_about", None)
    return call


def all_fixtures() -> dict[str, dict[str, Any]]:
    """Every fixture by name."""
    return {p.stem: fixture(p.stem) for p in sorted(FIXTURES.glob("*.json"))}
