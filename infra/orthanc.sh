#!/usr/bin/env bash
# Start or stop a local Orthanc PACS (Debian's orthanc + orthanc-dicomweb) for development and tests.
#   infra/orthanc.sh start|stop|status
# Settings (environment):
#   ORTHANC_HOME           storage, index, generated config, pid and log (default ./.orthanc)
#   ORTHANC_HTTP_PORT      REST + DICOMweb port (default 8042); DICOMweb root is /dicom-web/
#   ORTHANC_DICOM_PORT     DIMSE port (default 4242)
#   ORTHANC_AET            Orthanc's AE title (default ORTHANC)
#   ORTHANC_USER           the registered HTTP user (default clinical)
#   ORTHANC_PASSWORD       that user's password (required; never written anywhere but the 0600 config)
#   CLINICAL_AET           our AE title, registered as a modality for C-FIND/C-GET/C-MOVE (default CLINICAL)
#   CLINICAL_AE_PORT       the port of our Storage SCP, where C-MOVE sends studies (default 11113)
# HTTP answers only on 127.0.0.1 (RemoteAccessAllowed false); DIMSE answers only the registered AE from 127.0.0.1.
# Then: clinical pull --pacs dicomweb+http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web with
#       CLINICAL_PACS_USER / CLINICAL_PACS_PASSWORD set, or --pacs dimse://$ORTHANC_AET@127.0.0.1:$ORTHANC_DICOM_PORT
set -euo pipefail
orthanc="${ORTHANC_BIN:-/usr/sbin/Orthanc}"
plugin="${ORTHANC_DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}"
home="${ORTHANC_HOME:-$PWD/.orthanc}"
http_port="${ORTHANC_HTTP_PORT:-8042}"
dicom_port="${ORTHANC_DICOM_PORT:-4242}"
aet="${ORTHANC_AET:-ORTHANC}"
user="${ORTHANC_USER:-clinical}"
our_aet="${CLINICAL_AET:-CLINICAL}"
our_port="${CLINICAL_AE_PORT:-11113}"
pidfile="$home/orthanc.pid"
config="$home/orthanc.json"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running; then echo "Orthanc already running (pid $(cat "$pidfile")) on http://127.0.0.1:$http_port"; exit 0; fi
    if [ -z "${ORTHANC_PASSWORD:-}" ]; then echo "Set ORTHANC_PASSWORD (the HTTP user's password)." >&2; exit 2; fi
    mkdir -p "$home/storage"
    (umask 077; ORTHANC_PASSWORD="$ORTHANC_PASSWORD" python3 - "$config" <<EOF
import json, os, sys
config = {
    "Name": "clinical-dev", "StorageDirectory": "$home/storage", "IndexDirectory": "$home/storage",
    "HttpPort": $http_port, "DicomPort": $dicom_port, "DicomAet": "$aet",
    "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
    "RegisteredUsers": {"$user": os.environ["ORTHANC_PASSWORD"]},
    "DicomCheckCalledAet": True, "DicomCheckModalityHost": True,
    "DicomAlwaysAllowFind": False, "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False,
    "DicomModalities": {"clinical": ["$our_aet", "127.0.0.1", $our_port]},
    "SaveJobs": False, "StableAge": 2,
    "Plugins": ["$plugin"],
    "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
}
with open(sys.argv[1], "w") as handle:
    json.dump(config, handle, indent=2)
EOF
    )
    nohup "$orthanc" "$config" >"$home/orthanc.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 120); do
      if curl -fs -o /dev/null -u "$user:$ORTHANC_PASSWORD" "http://127.0.0.1:$http_port/system"; then
        echo "Orthanc on http://127.0.0.1:$http_port (DICOMweb /dicom-web, DIMSE $aet@127.0.0.1:$dicom_port)"; exit 0
      fi
      if ! running; then break; fi
      sleep 0.25
    done
    echo "Orthanc did not answer on port $http_port; see $home/orthanc.log" >&2; exit 1 ;;
  stop)
    if running; then
      pid="$(cat "$pidfile")"; kill "$pid"
      for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    rm -f "$pidfile"; echo "Orthanc stopped" ;;
  status)
    if running; then echo "up (pid $(cat "$pidfile")) on http://127.0.0.1:$http_port"; else echo "down"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
