#!/usr/bin/env bash
# One call on a GPU machine does it all, in well under 8 minutes: install the carried wheels
# (benchmarks/gpu/fetch-wheels.sh), run the CUDA tests, run the GPU benchmark. Results go to $OUT
# (default benchmarks/gpu/out): cuda-tests.log and .xml, bench_gpu.jsonl (one JSON line per figure), gpu.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/gpu/out}
mkdir -p "$OUT"
if compgen -G "benchmarks/gpu/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/clinical-site \
        benchmarks/gpu/wheels/*.whl || exit 1
    export PYTHONPATH="/tmp/clinical-site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi >"$OUT/gpu.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"

timeout 270 python3 -m pytest -q -p no:cacheprovider tests/test_training_cuda.py \
    --junitxml="$OUT/cuda-tests.xml" 2>&1 | tee "$OUT/cuda-tests.log"
tests=${PIPESTATUS[0]}
timeout 270 python3 -m benchmarks.bench_gpu 2>&1 | tee "$OUT/bench.log" | grep '^{' >"$OUT/bench_gpu.jsonl"
bench=${PIPESTATUS[0]}
echo "cuda tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
