#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, for the lent-device tool: `bash bench/gpu_session.sh PHASE`.
# Expects MNIST in .device/mnist and the pydantic wheels in .device/whl (the device image lacks pydantic).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=.device/mnist
case "$1" in
  1)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
    python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a $OUT/gpu.txt
    nproc | tee -a $OUT/gpu.txt
    timeout 150 python3 bench/cuda_paths.py --data-dir $D 2>&1 | tee $OUT/cuda_paths.jsonl
    timeout 120 python3 bench/seed_study.py --device cuda --seeds 1 --workers 1 --out /tmp/s1w1 -- --data-dir $D | tee $OUT/seed1_w1.json
    timeout 120 python3 bench/seed_study.py --device cuda --seeds 1 --workers 4 --out /tmp/s1w4 -- --data-dir $D | tee $OUT/seed1_w4.json
    timeout 150 python3 -m convstudy bench --device cuda --seconds 2 --format json > $OUT/bench_cuda.json
    tail -c 1500 $OUT/bench_cuda.json
    ;;
  2)
    timeout 100 python3 bench/cuda_paths.py --data-dir $D --models k3-2,k7-3 2>&1 | grep -v eager | tee $OUT/cuda_paths_nobench.jsonl
    timeout 110 python3 bench/seed_study.py --device cuda --seeds 1 --workers 1 --out /tmp/s1w1 -- --data-dir $D | tee $OUT/seed1_w1.json
    timeout 100 python3 bench/seed_study.py --device cuda --seeds 1 --workers 3 --out /tmp/s1w3 -- --data-dir $D | tee $OUT/seed1_w3.json
    timeout 200 python3 bench/seed_study.py --device cuda --seeds 5 --workers 3 --out /tmp/s5 -- --data-dir $D | tee $OUT/seed5_w3.json
    ;;
  3)  # seeds trained together (run --stack-seeds; auto = up to 8 on CUDA): first a short correctness run
    timeout 90 python3 -m convstudy run seed --models k3-2,k7-3 --seeds 3 --epochs 2 --device cuda --data-dir $D \
      --out /tmp/stk --quiet | tail -8 | tee $OUT/stack_check.txt
    timeout 150 python3 bench/seed_study.py --device cuda --seeds 5 --workers 1 --out /tmp/s5s -- --data-dir $D | tee $OUT/seed5_stacked_w1.json
    timeout 150 python3 bench/seed_study.py --device cuda --seeds 5 --workers 3 --out /tmp/s5s3 -- --data-dir $D | tee $OUT/seed5_stacked_w3.json
    timeout 100 python3 bench/seed_study.py --device cuda --seeds 1 --workers 3 --out /tmp/s1w3 -- --data-dir $D | tee $OUT/seed1_w3.json
    ;;
  4)  # trials side by side on CUDA streams (run --streams; auto = 4 on CUDA): same numbers first, then the study
    for s in 1 1b 4; do  # 1 twice: how far two sequential GPU runs differ (non-deterministic kernels) is the bar
      timeout 90 python3 -m convstudy run seed --models k3-2,k5-2,k7-4 --epochs 2 --device cuda --data-dir $D \
        --streams ${s%b} --out /tmp/lanes$s --quiet > /dev/null
    done
    python3 - <<'PY' | tee $OUT/streams_check.txt
import sqlite3
q = "SELECT t.model, e.epoch, e.loss, e.val_loss FROM epochs e JOIN trials t ON t.id = e.trial_id ORDER BY 1, 2"
rows = {s: sqlite3.connect(f"/tmp/lanes{s}/study.db").execute(q).fetchall() for s in ("1", "1b", "4")}
for other in ("1b", "4"):
    diff = max(abs(a[i] - b[i]) for a, b in zip(rows["1"], rows[other]) for i in (2, 3))
    print(f"streams {other} vs 1: identical {rows[other] == rows['1']}, max |diff| {diff:.2e}, {len(rows[other])} rows")
PY
    for s in 4 8; do
      timeout 100 python3 bench/seed_study.py --device cuda --seeds 1 --workers 1 --out /tmp/s1l$s -- --data-dir $D \
        --streams $s | tee $OUT/seed1_streams$s.json
    done
    timeout 150 python3 bench/seed_study.py --device cuda --seeds 5 --workers 1 --out /tmp/s5l -- --data-dir $D \
      --streams 4 | tee $OUT/seed5_stacked_streams4.json
    ;;
esac
