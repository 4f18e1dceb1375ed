"""The layers point down only (STYLE): shared/ is the bottom; api/, readapi/, workers/ and ops/ sit
beside each other on it and never import one another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "readapi", "workers", "ops", "shared")
ALLOWED = {
    "shared": {"shared"},
    "api": {"api", "shared"},
    "readapi": {"readapi", "shared"},
    "workers": {"workers", "shared"},
    "ops": {"ops", "shared"},
}


def imported_packages(source: str) -> set[tuple[int, str]]:
    """(line, top-level package) of every import of one of ours, at any depth of the module
    (imports inside functions count: a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in PACKAGES}
    return found


def violations(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, target in sorted(imported_packages(path.read_text())):
            if target not in ALLOWED[package]:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_point_down_only(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_an_upward_import() -> None:
    source = (
        "def f():\n    from api.views import Receiver\nimport workers.apply\nfrom shared import x\n"
    )
    assert imported_packages(source) == {(2, "api"), (3, "workers"), (4, "shared")}


BROKER_BOUNDARY = {"shared/wire.py", "workers/broker.py"}
"""The modules that may know kombu's Redis transport: wire.py its format and key layout,
broker.py the behaviour it changes. Everything else asks them."""


def kombu_redis_imports(source: str) -> list[int]:
    """Lines that import kombu's Redis transport, whichever way they spell it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(
            n == "kombu.transport.redis" or n.startswith("kombu.transport.redis.") for n in names
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_broker_boundary_knows_kombus_redis_transport() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in (*PACKAGES, "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in kombu_redis_imports(path.read_text())
        if str(path.relative_to(ROOT)) not in BROKER_BOUNDARY
    ]
    assert found == []


def test_the_boundary_check_sees_every_spelling() -> None:
    source = (
        "from kombu.transport import redis\nimport kombu.transport.redis as r\n"
        "from kombu.transport.redis import Channel\nfrom kombu import Queue\n"
    )
    assert kombu_redis_imports(source) == [1, 2, 3]
