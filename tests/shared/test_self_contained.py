"""The repository explains itself: no tracked file points to a document outside it, to an issue
tracker's numbers, or to how the work on it was organised. A reader of a fresh clone has only
what is in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Built from pieces so that this file does not match itself.
_OUTSIDE = [
    ("a specification outside the repository", r"\b" + "SP" + r"EC\b"),
    ("a specification outside the repository", r"(?i)\b" + "spec" + r"\.md\b"),
    ("a specification outside the repository", r"(?i)\bthe " + "spec" + r"\b(?!ial|if)"),
    ("a folder beside the checkout", r"\.\./" + "shared"),
    ("an issue number", r"(?i)\b" + "issue" + r"s?\s+#?\d+"),
    ("how the work was organised", r"(?i)\bthe (" + "audit|review|brief" + r")\b"),
    ("how the work was organised", r"(?i)\bthis " + "(round|branch)" + r"\b"),
    ("how the work was organised", r"(?i)\b(before|since|after) " + "v2" + r"\b"),
    ("how the work was organised", r"(?i)\b" + "engineer" + r" \d"),
]


def _tracked() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_file_refers_outside_the_repository() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    found = []
    for path in _tracked():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary, or deleted in the work tree
        for number, line in enumerate(text.splitlines(), start=1):
            for what, pattern in _OUTSIDE:
                if re.search(pattern, line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)
