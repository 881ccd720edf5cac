#!/usr/bin/env bash
# Start or stop a local Prefect server and a `process` work pool worker on 127.0.0.1.
#   infra/prefect-server.sh start|stop|status
# Settings (environment):
#   PREFECT_PORT   port (default 4200)
#   PREFECT_HOME   Prefect's own home (database, logs); default ./.prefect-server
#   WORK_POOL      the process work pool the worker serves (default clinical-process)
# Then: export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api and `prefect deploy --all`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${VENV:-$here/.venv}/bin"
port="${PREFECT_PORT:-4200}"
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect-server}"
pool="${WORK_POOL:-clinical-process}"
api="http://127.0.0.1:$port/api"

case "${1:-}" in
  start)
    mkdir -p "$PREFECT_HOME"
    nohup "$bin/prefect" server start --host 127.0.0.1 --port "$port" >"$PREFECT_HOME/server.log" 2>&1 &
    echo $! >"$PREFECT_HOME/server.pid"
    for _ in $(seq 240); do curl -fs "$api/health" >/dev/null && break; sleep 0.5; done
    curl -fs "$api/health" >/dev/null || { echo "Prefect server did not answer; see $PREFECT_HOME/server.log" >&2; exit 1; }
    export PREFECT_API_URL="$api"
    "$bin/prefect" work-pool inspect "$pool" >/dev/null 2>&1 || "$bin/prefect" work-pool create "$pool" --type process >/dev/null
    "$bin/prefect" concurrency-limit inspect gpu >/dev/null 2>&1 || "$bin/prefect" concurrency-limit create gpu 1 >/dev/null
    nohup "$bin/prefect" worker start --pool "$pool" --type process >"$PREFECT_HOME/worker.log" 2>&1 &
    echo $! >"$PREFECT_HOME/worker.pid"
    echo "Prefect server on http://127.0.0.1:$port (UI), worker on pool '$pool'; export PREFECT_API_URL=$api" ;;
  stop)
    for f in worker server; do
      if [ -f "$PREFECT_HOME/$f.pid" ]; then kill "$(cat "$PREFECT_HOME/$f.pid")" 2>/dev/null || true; rm -f "$PREFECT_HOME/$f.pid"; fi
    done
    echo "Prefect server and worker stopped" ;;
  status)
    curl -fs "$api/health" >/dev/null && echo "up on http://127.0.0.1:$port" || { echo "down"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
