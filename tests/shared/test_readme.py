"""README.md stays in step with the code: its configuration table is shared/settings.py's fields.

The table is generated from each Settings field's docstring; after changing a field, print the new
table with `.venv/bin/python -m tests.shared.test_readme` and paste it into README.md.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETTINGS_PY = ROOT / "shared" / "settings.py"
TABLE_HEADER = "| variable | default | meaning |"


def field_docs() -> dict[str, str]:
    """Each Settings field's docstring (the string literal right after it), by field name."""
    tree = ast.parse(SETTINGS_PY.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    docs: dict[str, str] = {}
    for node, after in zip(cls.body, [*cls.body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def expected_rows() -> dict[str, str]:
    """The README row of every Settings field, by environment variable."""
    docs = field_docs()
    rows = {}
    for f in dataclasses.fields(Settings):
        var = f.name.upper()
        meaning = docs[f.name].removeprefix(f"{var}:").strip()
        meaning = meaning[:1].upper() + meaning[1:]
        default = f"`{f.default}`" if f.default != "" else "none"
        rows[var] = f"| `{var}` | {default} | {_cell(meaning)} |"
    return rows


def expected_table() -> str:
    return "\n".join([TABLE_HEADER, "| --- | --- | --- |", *expected_rows().values()])


def readme_rows() -> dict[str, str]:
    """The rows of README's configuration table, by the variable in their first cell."""
    lines = README.read_text().splitlines()
    start = lines.index(TABLE_HEADER)
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = re.match(r"\|\s*`([A-Z0-9_]+)`\s*\|", line)
        assert match, f"a configuration row without a `VARIABLE` first cell: {line}"
        rows[match.group(1)] = line.strip()
    return rows


def test_every_settings_field_has_a_docstring_naming_its_variable() -> None:
    docs = field_docs()
    for f in dataclasses.fields(Settings):
        assert f.name in docs, f"Settings.{f.name} has no docstring"
        assert docs[f.name].startswith(f"{f.name.upper()}: "), (
            f"Settings.{f.name}'s docstring should start with '{f.name.upper()}: '"
        )


def test_readme_configuration_table_matches_settings() -> None:
    want, have = expected_rows(), readme_rows()
    hint = f"regenerate it with `python -m tests.shared.test_readme`:\n{expected_table()}"
    assert set(have) == set(want), (
        f"README's table lists {sorted(set(have) - set(want))} that Settings lacks and misses "
        f"{sorted(set(want) - set(have))}; {hint}"
    )
    for var, row in want.items():
        assert have[var] == row, f"README's row for {var} is stale; {hint}"


def test_readme_opens_with_the_run_and_test_commands() -> None:
    head = "\n".join(README.read_text().splitlines()[:15])
    assert "make run" in head
    assert "make test" in head


def test_readme_links_resolve() -> None:
    """Relative links in README point at files that exist (docs/cli.md is written separately)."""
    text = README.read_text()
    targets = re.findall(r"\]\(((?!https?://|#)[^)#\s]+)", text)
    assert "docs/operations.md" in targets
    assert "docs/decisions.md" in targets
    missing = [t for t in targets if not (ROOT / t).exists() and t != "docs/cli.md"]
    assert not missing, f"README links to missing files: {missing}"


if __name__ == "__main__":
    print(expected_table())


def test_each_variable_is_described_once() -> None:
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", README.read_text(), re.MULTILINE)
    repeated = sorted({name for name in rows if rows.count(name) > 1})
    assert not repeated, f"README describes these variables more than once: {repeated}"
