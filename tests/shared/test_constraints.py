"""The image installs pinned packages: constraints.txt pins every runtime dependency of
pyproject.toml, and the Dockerfile installs through it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group().lower().replace("_", "-")


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    entries = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(entry) == 2 for entry in entries), "one name==version a line"
    return {entry[0]: entry[1] for entry in entries}


def test_every_runtime_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    missing = [d for d in project["dependencies"] if _name(d) not in pinned]
    assert not missing, f"not in constraints.txt (run make lock): {missing}"


def test_the_dockerfile_installs_through_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"COPY [^\n]*constraints\.txt", dockerfile)
    assert "pip install --constraint constraints.txt ." in dockerfile
