"""Item 1: N idle TCP connections against gunicorn with the real config; is /healthz answered?
usage: idle.py N_IDLE [extra gunicorn args...]"""

import os
import socket
import sys
import time
import urllib.request

from receiver import start_receiver

MODE = sys.argv[1]
N = int(sys.argv[2])
extra = sys.argv[3:]
port = 6499 - 90 + 0  # 6409+? keep in own range: use 18409
port = 18409
env = {**os.environ}
p = start_receiver(port, extra, "gunicorn", env=env)
try:
    socks = []
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    # half of them send a partial request line (slowloris), half nothing
    for s in socks[::2] if MODE == "mixed" else socks if MODE == "partial" else []:
        s.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.5)
    t = time.monotonic()
    try:
        r = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
        print(f"{MODE} idle={N} args={extra} healthz={r.status} in {time.monotonic() - t:.3f}s")
    except Exception as e:
        print(
            f"{MODE} idle={N} args={extra} healthz FAILED after {time.monotonic() - t:.1f}s: {type(e).__name__}"
        )
    for s in socks:
        s.close()
finally:
    p.terminate()
    p.wait(10)
