#!/usr/bin/env bash
# The Debian tools the tests use: dcmtk (DICOM command-line tools), Orthanc with its DICOMweb plugin (a real
# PACS), openslide-tools, headless Chromium (prints the model report to PDF, and opens it in the tests). Installs
# the missing ones when it can (root, or passwordless sudo); otherwise stops at once with the one command to run.
set -euo pipefail

PACKAGES="dcmtk orthanc orthanc-dicomweb openslide-tools chromium-headless-shell"
missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "The tests need Debian packages that are missing: $missing" >&2
    echo "Install them once with:  sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing" >&2
    exit 1
fi
echo "Installing the Debian packages the tests use: $missing"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
# shellcheck disable=SC2086
"${as_root[@]}" apt-get install -y -qq --no-install-recommends $missing >/dev/null
