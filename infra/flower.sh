#!/usr/bin/env bash
# Start or stop a local Flower federation on 127.0.0.1: one SuperLink and one SuperNode per site.
#   infra/flower.sh start SITE.toml [SITE.toml ...]   one SuperNode per node-config file
#   infra/flower.sh stop|status
# A site's node-config file names its own data, e.g.
#   cohort-dir = "/data/cohort"
#   split-path = "/data/split.parquet"
#   site = "Northfield General Hospital"
#   fold = 0
# Settings (environment):
#   FLOWER_HOME        pids, logs, SuperLink state and the Flower config (default ./.flower)
#   FLOWER_FLEET_PORT  where SuperNodes connect (default 9092); FLOWER_CONTROL_PORT for `flwr` (default 9093);
#                      FLOWER_APPIO_PORT for the ServerApp (default 9091); SuperNodes use 9094, 9095, ...
# Then: FLWR_HOME=$FLOWER_HOME flwr run clinical/federated/app clinical-local --stream
# (--insecure is for one machine only; across sites use TLS certificates and SuperNode authentication.)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${VENV:-$here/.venv}/bin"
home="${FLOWER_HOME:-$PWD/.flower}"
fleet="${FLOWER_FLEET_PORT:-9092}"
control="${FLOWER_CONTROL_PORT:-9093}"
appio="${FLOWER_APPIO_PORT:-9091}"
export PATH="$bin:$PATH"

start_process() {  # name, command...
  local name="$1"; shift
  nohup "$@" >"$home/$name.log" 2>&1 &
  echo $! >"$home/$name.pid"
}

case "${1:-}" in
  start)
    shift
    [ "$#" -ge 1 ] || { echo "usage: $0 start SITE.toml [SITE.toml ...]" >&2; exit 2; }
    mkdir -p "$home"
    if [ -f "$home/superlink.pid" ] && kill -0 "$(cat "$home/superlink.pid")" 2>/dev/null; then
      echo "Flower federation already running (see $0 status)"; exit 0
    fi
    printf '[superlink]\ndefault = "clinical-local"\n\n[superlink.clinical-local]\naddress = "127.0.0.1:%s"\ninsecure = true\n' \
      "$control" >"$home/config.toml"
    start_process superlink "$bin/flower-superlink" --insecure --database "$home/state.db" \
      --serverappio-api-address "127.0.0.1:$appio" --fleet-api-address "127.0.0.1:$fleet" \
      --control-api-address "127.0.0.1:$control"
    for _ in $(seq 120); do
      (exec 3<>"/dev/tcp/127.0.0.1/$fleet") 2>/dev/null && break
      sleep 1
    done
    index=0
    for config in "$@"; do
      [ -f "$config" ] || { echo "node config $config not found" >&2; exit 2; }
      start_process "supernode-$index" "$bin/flower-supernode" --insecure --superlink "127.0.0.1:$fleet" \
        --clientappio-api-address "127.0.0.1:$((9094 + index))" --node-config "$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
      index=$((index + 1))
    done
    echo "SuperLink on 127.0.0.1:$fleet (control 127.0.0.1:$control) with $index SuperNode(s); logs in $home"
    echo "Run: FLWR_HOME=$home $bin/flwr run $here/clinical/federated/app clinical-local --stream"
    ;;
  stop)
    for pidfile in "$home"/supernode-*.pid "$home"/superlink.pid; do
      [ -f "$pidfile" ] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
    echo "Flower federation stopped"
    ;;
  status)
    for pidfile in "$home"/superlink.pid "$home"/supernode-*.pid; do
      [ -f "$pidfile" ] || continue
      name="$(basename "$pidfile" .pid)"
      if kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "$name running (pid $(cat "$pidfile"))"; else echo "$name stopped"; fi
    done
    ;;
  *)
    echo "usage: $0 start SITE.toml [SITE.toml ...] | stop | status" >&2; exit 2
    ;;
esac
