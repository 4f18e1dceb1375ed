#!/usr/bin/env bash
# `make run` (after `make migrate`): the receiver under gunicorn and one worker, from .venv/bin, in
# the foreground. Their logs go to .run/; Ctrl-C (or TERM) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8000}
HOST=127.0.0.1
URL="http://$HOST:$PORT"
BIN=.venv/bin
LOGS=.run

if [ ! -x "$BIN/gunicorn" ] || [ ! -x "$BIN/celery" ]; then
  echo "no virtual environment in $BIN: run 'make run' (or 'make install' first)" >&2
  exit 1
fi

# A bind, not a connect: it also catches a listener that does not answer. SO_REUSEADDR, as gunicorn
# sets it, so the closed connections of a previous run (TIME_WAIT) do not count as busy.
if ! "$BIN/python" - "$HOST" "$PORT" <<'EOF' 2>/dev/null; then
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
EOF
  echo "port $PORT on $HOST is busy (or not a port): stop what uses it, or run 'PORT=8001 make run'" >&2
  exit 1
fi

mkdir -p "$LOGS"
# prometheus_client's multiprocess mode wants an empty directory at each start. Both children share
# it (pids are unique on one host), so the receiver's /metrics shows the worker's metrics too.
rm -rf "$LOGS/prometheus"
mkdir -p "$LOGS/prometheus"
export PROMETHEUS_MULTIPROC_DIR="$PWD/$LOGS/prometheus"

receiver=""
worker=""

# shellcheck disable=SC2317  # called from the traps below
stop() {
  trap - INT TERM EXIT
  local pids=() pid
  for pid in "$receiver" "$worker"; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && pids+=("$pid")
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  echo "stopping the receiver and the worker..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # A worker's warm shutdown finishes the messages in hand; past 30 seconds, kill.
  for _ in $(seq 60); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && return 0
    sleep 0.5
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap 'stop' EXIT

# Job control puts each child in its own process group, so a Ctrl-C reaches only this script,
# which then stops the children once and in order (a second signal would make Celery cold-stop).
set -m
"$BIN/gunicorn" --config python:api.gunicorn_conf "api:create_app()" --bind "$HOST:$PORT" --workers 2 \
  >"$LOGS/receiver.log" 2>&1 &
receiver=$!
# --quiet: no ASCII banner, so the worker's log is JSON lines from its first line.
# --without-mingle --without-gossip: their broadcasts are writes a full or replica-starved Redis
# refuses, and a refusal at start-up stops the worker; userdest uses neither.
"$BIN/celery" --quiet -A workers worker -Q ingest,replay -c 2 --without-mingle --without-gossip \
  >"$LOGS/worker.log" 2>&1 &
worker=$!
set +m

# Wait for /healthz; give up early if either child has already died.
died() {
  local name=$1
  echo "the $name stopped during start-up; the end of $LOGS/$name.log:" >&2
  tail -n 20 "$LOGS/$name.log" >&2
  exit 1
}
healthy=0
for _ in $(seq 60); do
  kill -0 "$receiver" 2>/dev/null || died receiver
  kill -0 "$worker" 2>/dev/null || died worker
  if "$BIN/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$URL/healthz" 2>/dev/null; then
    healthy=1
    break
  fi
  sleep 0.5
done
if [ "$healthy" -ne 1 ]; then
  echo "the receiver did not answer $URL/healthz within 30 seconds; see $LOGS/receiver.log" >&2
  exit 1
fi
if ! "$BIN/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' \
  "$URL/readyz" 2>/dev/null; then
  echo "warning: $URL/readyz says not ready: is Redis at ${REDIS_URL:-redis://127.0.0.1:6379/0} up?" >&2
fi

cat <<EOF
userdest is running: receiver $URL (log $LOGS/receiver.log), one worker on the ingest and replay
queues (log $LOGS/worker.log). Ctrl-C stops both.

Send a first call, from another terminal in this directory:

  .venv/bin/userdest apps create demo
  KEY=\$(.venv/bin/userdest keys create --app demo --json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
  curl -s -u "\$KEY:" -H 'Content-Type: application/json' \\
    -d '{"userId": "u1", "traits": {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro"}}' \\
    $URL/v1/identify
  .venv/bin/userdest users show --app demo u1

'keys create --app demo --json' answers {"key_id": ..., "api_key": ...}; the secret is shown once,
so the second line keeps it in \$KEY. The profile appears as soon as the worker has applied the call.
EOF

# Stay in the foreground until a child exits or a signal arrives (polling keeps this bash 3 proof).
while kill -0 "$receiver" 2>/dev/null && kill -0 "$worker" 2>/dev/null; do
  sleep 1
done
status=0
if kill -0 "$receiver" 2>/dev/null; then name=worker pid=$worker; else name=receiver pid=$receiver; fi
wait "$pid" || status=$?
echo "the $name stopped (exit $status); see $LOGS/$name.log" >&2
exit $((status == 0 ? 1 : status))
