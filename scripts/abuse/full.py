"""Item 2: a private Redis with maxmemory; batches until refused. When does the receiver start
answering 503, how full is Redis then, and what does /readyz say?"""

import base64
import os
import socket
import subprocess
import time

import redis

from api import create_app
from shared.settings import Settings

PORT = 6417

with socket.socket() as _s:
    _s.bind(("127.0.0.1", PORT))  # refuse to touch a Redis we did not start
subprocess.run(
    [
        "redis-server",
        "--port",
        str(PORT),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "yes",
        "--maxmemory",
        "8mb",
        "--maxmemory-policy",
        "noeviction",
    ],
    check=True,
)
time.sleep(0.3)
r = redis.Redis(port=PORT)
r.flushall()
s = Settings.from_env({**os.environ, "REDIS_URL": f"redis://127.0.0.1:{PORT}/0"})
app = create_app(s)
c = app.test_client()
key = os.environ["API_KEY"]
h = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
batch = {
    "batch": [
        {"type": "track", "userId": f"u{i}", "event": "E", "properties": {"p": "x" * 200}}
        for i in range(100)
    ]
}
maxmem = int(r.config_get("maxmemory")["maxmemory"])
n = 0
while True:
    resp = c.post("/v1/batch", json=batch, headers=h)
    used = r.info("memory")["used_memory"]
    if resp.status_code != 200:
        print(
            f"after {n} accepted batches: status={resp.status_code} {resp.get_json().get('code')} used_memory={used} maxmemory={maxmem} ({used / maxmem:.1%})"
        )
        break
    n += 1
    last_ok_used = used
print(f"used_memory after the last 200: {last_ok_used} ({last_ok_used / maxmem:.1%} of maxmemory)")
rz = c.get("/readyz")
print("readyz:", rz.status_code, rz.get_json())
# can a worker still move a message (what kombu does on BRPOP with acks_late: write unacked hash)?
try:
    r.hset("unacked", "probe", "x" * 2000)
    print("room for unacked: yes")
except redis.ResponseError as e:
    print("room for unacked: NO:", e)
r.shutdown(nosave=True)
