"""Item 3: a batch of bad calls sharing a large context, through the receiver and a real worker.
Prints request bytes, dead-letter bytes stored, and the worker's peak RSS (all its processes)."""

import base64
import contextlib
import json
import os
import subprocess
import time

import redis
from sqlalchemy import create_engine, text

from api import create_app
from shared.settings import Settings

REDIS = "redis://127.0.0.1:6409/3"
env = {**os.environ, "REDIS_URL": REDIS}
s = Settings.from_env(env)
r = redis.Redis.from_url(REDIS)
r.flushdb()
eng = create_engine(s.database_url.replace("postgresql://", "postgresql+psycopg://"))
with eng.begin() as c:
    c.execute(text("DELETE FROM dead_letters"))
app = create_app(s)
client = app.test_client()
key = os.environ["API_KEY"]
h = {
    "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
    "Content-Type": "application/json",
}
context = {
    "library": {"name": "analytics.js", "version": "2.11.1"},
    "blob": base64.b64encode(os.urandom(75_000)).decode(),
}
body = json.dumps({"batch": [{}] * 2400, "context": context}).encode()
resp = client.post("/v1/batch", data=body, headers=h)
print(
    "request bytes",
    len(body),
    "status",
    resp.status_code,
    "rejected",
    len(resp.get_json()["rejected"]),
)
w = subprocess.Popen(
    [
        ".venv/bin/celery",
        "-A",
        "workers",
        "worker",
        "-Q",
        "ingest",
        "-c",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ],
    env=env,
    stdout=open("/tmp/userdest-abuse-dlworker.log", "wb"),
    stderr=subprocess.STDOUT,
    start_new_session=True,
)


def rss_tree(pid):
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True
    ).stdout
    return sum(int(x) for x in out.split()) * 1024


peak = 0
t0 = time.monotonic()
done_at = None
while time.monotonic() - t0 < 300:
    peak = max(peak, rss_tree(w.pid))
    with eng.connect() as c:
        n = c.scalar(text("SELECT count(*) FROM dead_letters"))
    if n >= 2400 and done_at is None:
        done_at = time.monotonic() - t0
    if done_at is not None and time.monotonic() - t0 > done_at + 1:
        break
    time.sleep(0.2)
os.killpg(w.pid, 15)
w.wait(20)
with eng.connect() as c:
    n, stored = c.execute(
        text(
            "SELECT count(*), coalesce(sum(pg_column_size(call) + pg_column_size(meta)),0) FROM dead_letters"
        )
    ).one()
    rel = c.scalar(text("SELECT pg_total_relation_size('dead_letters')"))
    extra = 0
    with contextlib.suppress(Exception):
        extra = c.scalar(text("SELECT pg_total_relation_size('dead_letter_batches')"))
print(
    f"dead letters {n}; stored column bytes {stored} ({stored / len(body):.0f} per request byte); table size {rel + (extra or 0)} bytes ({(rel + (extra or 0)) / len(body):.0f} per request byte); worker peak RSS {peak / 1e6:.0f} MB; drained in {done_at}s"
)
