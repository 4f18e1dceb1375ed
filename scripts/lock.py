"""`make lock`: write constraints.txt, the exact runtime packages with their hashes.

pip-tools resolves pyproject.toml's runtime dependencies afresh and writes every resolved package
(userdest itself aside) as `name==version` with the sha256 of each of its published files
(`--generate-hashes`), so the image and `make install` install exactly these files
(`pip install --require-hashes --no-deps -r constraints.txt`): a package replaced on the index, or
a download altered on the way, is refused. No index or find-links line is written, so the file
does not depend on where it was made. The versions already in constraints.txt are kept while they
still satisfy pyproject.toml; `make lock LOCK_ARGS=--upgrade` moves every package to its newest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = (
    "# The runtime packages the image and `make install` install, with the sha256 of each of\n"
    "# their files (pip install --require-hashes --no-deps -r constraints.txt). Made by `make lock`\n"
    "# (scripts/lock.py, pip-compile --generate-hashes) from pyproject.toml for CPython 3.11.\n"
)


def main() -> None:
    output = ROOT / "constraints.txt"
    subprocess.run(
        [sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes",
         "--strip-extras", "--no-emit-index-url", "--no-emit-find-links", "--no-header",
         f"--output-file={output.name}", *sys.argv[1:], "pyproject.toml"],
        cwd=ROOT, check=True,
    )  # fmt: skip
    output.write_text(HEADER + output.read_text())


if __name__ == "__main__":
    main()
