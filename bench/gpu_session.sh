#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one go, for a short lease of the lent device:
#   bash bench/gpu_session.sh        (about 8 minutes of GPU time; results under $OUT)
# 1. the CUDA-only tests; 2. which CUDA paths pay per model; 3. the whole seed study, 1 and 5 seeds,
# end to end. Expects MNIST in .device/mnist and, where the device image
# lacks them, wheels in .device/whl.
set -uo pipefail
if ls .device/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/tests PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=.device/mnist
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 120 python3 -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest_cuda.txt"
timeout 120 python3 bench/cuda_paths.py --data-dir $D --models k3-2,k7-3 2>&1 | tee "$OUT/cuda_paths.jsonl"
for seeds in 1 5; do
  timeout 150 python3 bench/seed_study.py --device cuda --seeds "$seeds" --workers 1 --out "/tmp/s$seeds" -- \
    --data-dir $D | tee "$OUT/seed$seeds.json"
done
