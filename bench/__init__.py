"""`make bench`: a fixed, seeded workload against the real stack on this machine.

`python -m bench` recreates its own database and Redis database number, starts the receiver under
gunicorn and a Celery worker, sends the workload as single calls and as batches, waits until every
call is applied in Postgres, measures the parts' ceilings and a one-call-per-transaction baseline in
the same run, and writes `bench-results/latest.json` and a summary. docs/bench.md says what each
figure means.
"""

import os

for _name in ("ENVELOPE_SECRET", "SUPPRESSION_SECRET"):
    # The bench's stack is its own, on this machine, with data it made: a fixed dev secret is
    # enough, and the receiver, workers and CLI it starts read it from the environment.
    os.environ.setdefault(_name, f"bench-{_name.lower()}-not-a-secret")
