"""`python -m bench.scale` end to end at a tiny size, on a database of this run's own: every figure
is there; how fast anything is, is not a test's business."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from bench import scale
from tests.support.db import ADMIN_URL


def test_bench_scale_reports_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"userdest_test_{os.getpid()}_scale"
    monkeypatch.setenv("DATABASE_URL", ADMIN_URL)
    monkeypatch.setenv("BENCH_SCALE_DATABASE", name)
    out = tmp_path / "scale.json"
    try:
        args = ["--calls", "3000", "--users", "50", "--batches", "2", "--rate", "1"]
        assert scale.main([*args, "--dedupe-scale", "10", "--out", str(out)]) == 0
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type,unused-ignore]
    report = json.loads(out.read_text())
    for phase in ("empty", "loaded_before_analyze", "loaded"):
        assert report["batch_of_100_ms"][phase]["median"] > 0
    assert report["ratio_empty_to_loaded"] > 0
    assert report["bytes_per_call"]["events"] > 0
    assert report["bytes_per_call"]["processed_messages"] > 0
    month = report["dedupe_month"]
    assert month["only_last_30_days_left"] is True
    assert month["records_left"] == month["records_of_30_days"]
