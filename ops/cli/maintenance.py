"""`userdest maintenance`: the scheduled job that keeps the data bounded (ops/maintenance.py)."""

from __future__ import annotations

import time

import click

from ops import maintenance as job
from ops.cli.common import CONNECT_TIMEOUT, emit, json_option, load_settings
from shared.db import make_engine


@click.group()
def maintenance() -> None:
    """Partitions, retention and dedupe pruning: run it hourly (cron, a Kubernetes CronJob, or
    `run --every 3600`)."""


@maintenance.command("run")
@click.option(
    "--every",
    type=click.IntRange(min=60),
    metavar="SECONDS",
    help="Run again every SECONDS, forever, instead of once.",
)
@json_option
def maintenance_run(every: int | None, as_json: bool) -> None:
    """Create the coming months' partitions, drop those past RETENTION_DAYS, and forget dedupe
    records older than DEDUPE_DAYS."""
    settings = load_settings()
    engine = make_engine(settings, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        while True:
            report = job.run(engine, settings)
            emit(report.to_dict(), as_json, title="maintenance")
            if every is None:
                return
            time.sleep(every)
    finally:
        engine.dispose()
