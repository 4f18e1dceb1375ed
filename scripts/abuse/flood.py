"""Item 4: a valid key's median latency alone and under a bounded flood of random unknown keys.
usage: flood.py [gunicorn args...]   (flood: 4 threads x 1500 requests; probe: 300 valid calls)"""

import base64
import http.client
import os
import secrets
import statistics
import sys
import threading
import time

from receiver import start_receiver

extra = sys.argv[1:]
port = 18407
key = os.environ["API_KEY"]


def auth(k):
    return "Basic " + base64.b64encode(f"{k}:".encode()).decode()


p = start_receiver(port, extra, "gunicorn_flood")


def post(conn, k):
    conn.request(
        "POST",
        "/v1/track",
        '{"userId":"u","event":"E"}',
        {"Authorization": auth(k), "Content-Type": "application/json"},
    )
    r = conn.getresponse()
    r.read()
    return r.status


def probe(n=300):
    lat = []
    st = {}
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t = time.perf_counter()
        s = post(c, key)
        lat.append(time.perf_counter() - t)
        st[s] = st.get(s, 0) + 1
        c.close()
    return statistics.median(lat) * 1000, sorted(lat)[int(n * 0.95)] * 1000, st


flood_status = {}
lock = threading.Lock()
stop = [False]


def flood(n):
    for _ in range(n):
        if stop[0]:
            return
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            s = post(c, "ud_" + secrets.token_urlsafe(24))
            c.close()
        except OSError:
            s = "err"
        with lock:
            flood_status[s] = flood_status.get(s, 0) + 1


try:
    print("alone:  median {:.1f} ms p95 {:.1f} ms {}".format(*probe()))
    ts = [threading.Thread(target=flood, args=(1500,)) for _ in range(4)]
    [t.start() for t in ts]
    time.sleep(1)
    print("flood:  median {:.1f} ms p95 {:.1f} ms {}".format(*probe()))
    stop[0] = True
    [t.join() for t in ts]
    print("flood answers:", flood_status)
finally:
    p.terminate()
    p.wait(10)
