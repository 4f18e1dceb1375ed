"""The image installs pinned packages: constraints.txt pins every runtime dependency of
pyproject.toml with the hashes of its files, the Dockerfile and `make install` install exactly
those, and the virtual environment the tests run in has those versions."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group().lower().replace("_", "-")


def requirements() -> list[str]:
    """constraints.txt's entries, each with its continuation lines joined, comments dropped."""
    text = (ROOT / "constraints.txt").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line.lstrip()[0] != "#"]


def pins() -> dict[str, str]:
    entries = [entry.split()[0].split("==") for entry in requirements()]
    assert all(len(entry) == 2 for entry in entries), "one name==version an entry"
    return {_name(entry[0]): entry[1] for entry in entries}


def test_every_pin_carries_the_hashes_of_its_files() -> None:
    for entry in requirements():
        hashes = re.findall(r"--hash=sha256:([0-9a-f]+)", entry)
        assert hashes and all(len(h) == 64 for h in hashes), entry.split()[0]


def test_the_environment_the_tests_run_in_has_the_pinned_versions() -> None:
    """`make install` installs the lock's files before userdest, as the image does."""
    wrong = {
        name: (version, metadata.version(name))
        for name, version in pins().items()
        if metadata.version(name) != version
    }
    assert not wrong, f"(pinned, installed) differ: {wrong}; run make install"
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes --no-deps -r constraints.txt" in makefile


def test_every_runtime_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    missing = [d for d in project["dependencies"] if _name(d) not in pinned]
    assert not missing, f"not in constraints.txt (run make lock): {missing}"


def test_the_dockerfile_installs_through_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"COPY [^\n]*constraints\.txt", dockerfile)
    assert "pip install --require-hashes --no-deps -r constraints.txt" in dockerfile
