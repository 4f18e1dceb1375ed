"""`make bench`: a fixed, seeded workload against the real stack on this machine.

`python -m bench` recreates its own database and Redis database number, starts the receiver under
gunicorn and a Celery worker, sends the workload as single calls and as batches, waits until every
call is applied in Postgres, measures the parts' ceilings and a one-call-per-transaction baseline in
the same run, and writes `bench-results/latest.json` and a summary. docs/bench.md says what each
figure means.
"""
