"""Bounded throughput of single calls against gunicorn (real config), N requests over C client threads.
usage: tput.py N C [gunicorn args...]"""

import base64
import http.client
import json
import os
import sys
import threading
import time

from receiver import start_receiver

N = int(sys.argv[1])
C = int(sys.argv[2])
extra = sys.argv[3:]
port = 18408
key = os.environ["API_KEY"]
auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
p = start_receiver(port, extra, "gunicorn_tput")
lat = []
errs = [0]
lock = threading.Lock()


def run(k):
    conn = None
    for i in range(N // C):
        body = json.dumps({"userId": f"u{k}-{i}", "event": "Clicked", "properties": {"a": i}})
        t = time.perf_counter()
        for _attempt in range(2):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request(
                    "POST",
                    "/v1/track",
                    body,
                    {"Authorization": auth, "Content-Type": "application/json"},
                )
                r = conn.getresponse()
                r.read()
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                if r.status != 200:
                    with lock:
                        errs[0] += 1
                break
            except (http.client.HTTPException, OSError):
                conn = None
        with lock:
            lat.append(time.perf_counter() - t)


try:
    # warm-up (key cache)
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", "/v1/track", '{"userId":"w","event":"w"}', {"Authorization": auth})
    c.getresponse().read()
    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(k,)) for k in range(C)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    el = time.perf_counter() - t0
    lat.sort()
    print(
        f"args={extra} n={len(lat)} errors={errs[0]} calls/s={len(lat) / el:.0f} p50={lat[len(lat) // 2] * 1000:.1f}ms p99={lat[int(len(lat) * 0.99)] * 1000:.1f}ms"
    )
finally:
    p.terminate()
    p.wait(10)
