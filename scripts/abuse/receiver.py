"""The receiver as the image and `make run` start it (gunicorn with api.gunicorn_conf), for the
measurement scripts beside this file: started on 127.0.0.1:PORT, returned once /healthz answers."""

import subprocess
import time
import urllib.request


def start_receiver(port: int, extra: list[str], log: str, **popen: object) -> subprocess.Popen:
    """gunicorn on 127.0.0.1:`port` with `extra` arguments, its output in /tmp/userdest-abuse-`log`.log."""
    proc = subprocess.Popen(
        [".venv/bin/gunicorn", "-c", "python:api.gunicorn_conf", "-b", f"127.0.0.1:{port}",
         *extra, "api:create_app()"],
        stdout=open(f"/tmp/userdest-abuse-{log}.log", "wb"), stderr=subprocess.STDOUT, **popen,
    )  # fmt: skip
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the receiver did not answer on port {port}; see its log")
