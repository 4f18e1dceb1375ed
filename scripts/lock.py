"""`make lock`: write constraints.txt, the exact runtime packages the image installs.

pip resolves pyproject.toml's dependencies afresh (`pip install --dry-run --report`, nothing is
installed) and every resolved package but userdest itself is pinned. The Dockerfile installs with
`-c constraints.txt`, so an image built next month has the packages this one was tested with;
`make install` still resolves from pyproject.toml (a developer sees new releases first), and a test
checks that every dependency of pyproject.toml is pinned here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), str(ROOT)],
            check=True,
        )  # fmt: skip
        resolved = json.loads(report.read_text())["install"]
    pins = sorted(
        f"{item['metadata']['name'].lower().replace('_', '-')}=={item['metadata']['version']}"
        for item in resolved
        if item["metadata"]["name"].lower() != "userdest"
    )
    header = (
        "# The runtime packages the image installs (Dockerfile: pip install -c constraints.txt).\n"
        "# Made by `make lock` (scripts/lock.py) from pyproject.toml for CPython 3.11 on Linux.\n"
    )
    (ROOT / "constraints.txt").write_text(header + "\n".join(pins) + "\n")


if __name__ == "__main__":
    main()
