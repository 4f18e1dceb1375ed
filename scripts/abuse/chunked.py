"""7d: a chunked body cut short (the client closes its sending side mid-chunk) against gunicorn."""

import base64
import os
import socket
import sys

from receiver import start_receiver

port = 18406
extra = sys.argv[1:]
key = os.environ["API_KEY"]
p = start_receiver(port, extra, "gunicorn_chunk")
try:
    s = socket.create_connection(("127.0.0.1", port))
    auth = base64.b64encode(f"{key}:".encode()).decode()
    s.sendall(
        f'POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{{"userId": "u1", "event"'.encode()
    )
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    data = b""
    while True:
        try:
            b = s.recv(65536)
        except OSError:
            break
        if not b:
            break
        data += b
    print(
        "7d truncated chunked body answered:",
        data.split(b"\r\n")[0].decode() if data else "(nothing)",
        data[-200:],
    )
finally:
    p.terminate()
    p.wait(10)
