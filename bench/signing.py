"""What signing envelopes costs: the receiver's message for one request, built with and without its
MAC, and a worker's check of one envelope, for a single call and a batch of 100 bench calls.

`python -m bench.signing` prints microseconds per request (the best of `--repeat` rounds of
`--number` each); it needs neither Postgres nor Redis. docs/bench.md has a run's figures.
"""

from __future__ import annotations

import argparse
import timeit
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import orjson
from celery import Celery

from bench.workload import generate
from shared import wire
from shared.celery_app import make_celery
from shared.envelope import Envelope, EnvelopeKeys
from shared.publish import Publisher
from shared.queues import INGEST
from shared.settings import Settings


def _envelope(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The envelope the receiver makes for a request of `calls` (as bench.ceilings does)."""
    return Envelope(
        app_id=1,
        received_at="2026-01-05T12:00:00.000Z",
        request_id=str(uuid.uuid4()),
        calls=calls,
        message_ids=[c["messageId"] for c in calls],
        key_id="k_bench",
        remote_addr="127.0.0.1",
        defaults={} if len(calls) > 1 else {"type": calls[0]["type"]},
    ).to_dict()


def _unsigned(celery: Celery, envelope: dict[str, Any]) -> bytes:
    """The message as the receiver built it before envelopes were signed."""
    return wire.encode(wire.task_message(celery, envelope, INGEST, "[envelope]"))


def _best(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Microseconds per call of `fn`, the best of `repeat` rounds."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def measure(number: int, repeat: int) -> list[dict[str, Any]]:
    # The bench's ENVELOPE_SECRET (bench/__init__.py); Redis is never connected to.
    settings = replace(Settings.from_env(), redis_url="redis://127.0.0.1:1/0").verify()
    celery = make_celery(settings)
    publisher = Publisher(celery, None, settings)  # type: ignore[arg-type]
    keys = EnvelopeKeys.of(settings)
    rows = []
    for size in (1, 100):
        envelope = _envelope(generate(20260105, 100, size))

        queued = dict(orjson.loads(keys.seal(envelope)))
        rows.append(
            {
                "calls": size,
                "envelope_bytes": len(orjson.dumps(envelope)),
                "message_unsigned_us": _best(partial(_unsigned, celery, envelope), number, repeat),
                "message_signed_us": _best(
                    partial(publisher.message, envelope, INGEST), number, repeat
                ),
                "seal_us": _best(partial(keys.seal, envelope), number, repeat),
                "verify_us": _best(partial(keys.verify, queued), number, repeat),
            }
        )
    celery.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.signing", description=__doc__)
    parser.add_argument("--number", type=int, default=2000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best is kept")
    args = parser.parse_args(argv)
    for row in measure(args.number, args.repeat):
        print(
            f"{row['calls']:>3} calls ({row['envelope_bytes']} bytes): message "
            f"{row['message_unsigned_us']:.1f} us unsigned, {row['message_signed_us']:.1f} us "
            f"signed; seal {row['seal_us']:.1f} us, verify {row['verify_us']:.1f} us"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
