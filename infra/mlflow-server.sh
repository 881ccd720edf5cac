#!/usr/bin/env bash
# Start or stop a local MLflow tracking server on 127.0.0.1.
#   infra/mlflow-server.sh start|stop|status
# Settings (environment):
#   MLFLOW_PORT            port (default 5000)
#   MLFLOW_HOME            where the SQLite store, artifacts, pid and log live (default ./.mlflow-server)
#   MLFLOW_BACKEND_URI     default sqlite:///$MLFLOW_HOME/mlflow.db; PostgreSQL in production, e.g.
#                          postgresql+psycopg2://USER@db.internal/mlflow (password from ~/.pgpass, never here)
#   MLFLOW_ARTIFACTS       default $MLFLOW_HOME/artifacts; an S3-compatible store in production, e.g.
#                          s3://mlflow-artifacts with MLFLOW_S3_ENDPOINT_URL and AWS_* credentials in the environment
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${VENV:-$here/.venv}/bin"
port="${MLFLOW_PORT:-5000}"
home="${MLFLOW_HOME:-$PWD/.mlflow-server}"
backend="${MLFLOW_BACKEND_URI:-sqlite:///$home/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS:-$home/artifacts}"
pidfile="$home/server.pid"

case "${1:-}" in
  start)
    mkdir -p "$home"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "MLflow server already running (pid $(cat "$pidfile")) on http://127.0.0.1:$port"; exit 0
    fi
    nohup "$bin/mlflow" server --host 127.0.0.1 --port "$port" \
      --backend-store-uri "$backend" --artifacts-destination "$artifacts" >"$home/server.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 120); do
      if curl -fs "http://127.0.0.1:$port/health" >/dev/null; then
        echo "MLflow server on http://127.0.0.1:$port (log: $home/server.log)"; exit 0
      fi
      sleep 0.5
    done
    echo "MLflow server did not answer on port $port; see $home/server.log" >&2; exit 1 ;;
  stop)
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
    echo "MLflow server stopped" ;;
  status)
    curl -fs "http://127.0.0.1:$port/health" >/dev/null && echo "up on http://127.0.0.1:$port" || { echo "down"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
