#!/usr/bin/env bash
# The wheels a GPU machine with Python 3.12 and torch (but none of our other dependencies, and no registry)
# needs to run benchmarks/gpu/run.sh; run where pip reaches a registry, then carry benchmarks/gpu/wheels.
# Versions are the project's pins (pyproject.toml) and what pydantic 2.14.3 needs.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d wheels monai==1.6.1 pydicom==3.0.2 nibabel==5.4.2 pydantic==2.14.3 pydantic-core==2.50.4 \
    annotated-types==0.8.0 typing-inspection==0.4.5
ls -l wheels
