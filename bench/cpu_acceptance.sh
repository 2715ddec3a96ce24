#!/usr/bin/env bash
# Issue 26, acceptance 1, in one run: `convstudy bench` with default settings, then Keras 2 (tf_keras) on the
# same 12 models, one after the other on a quiet machine. AVX2=1 caps oneDNN, ATen and MKL to AVX2 kernels
# (an AVX-512 host standing in for an AVX2-only CPU). KERAS_PY: a venv with tensorflow-cpu and tf_keras 2.21.
# Usage: [AVX2=1] [BENCH_SECONDS=10] [KERAS_PY=...] bash bench/cpu_acceptance.sh OUT_PREFIX
set -euo pipefail
out=${1:?usage: bench/cpu_acceptance.sh OUT_PREFIX}
if [[ ${AVX2:-0} == 1 ]]; then
  export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
fi
# BENCH_SECONDS, not SECONDS: bash counts its own SECONDS up from the value it is given.
unset OMP_NUM_THREADS  # the defaults: threads and workers chosen by measurement
py=${PYTHON:-python}
"$py" -m convstudy bench --device cpu --seconds "${BENCH_SECONDS:-10}" --format json > "$out.convstudy.json"
"${KERAS_PY:-python}" bench/keras_tf.py --seconds "${BENCH_SECONDS:-10}" > "$out.keras.json"
"$py" - "$out" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1] + ".convstudy.json"))
keras = {m["name"]: m["samples_per_s"] for m in json.load(open(sys.argv[1] + ".keras.json"))["models"]}
print(f"study: {ours['study']['workers']} workers x {ours['study']['threads']} threads; load {ours['load']}")
print("model   lone  study  best-plain(thr)  keras  lone/best  study/best  study/keras")
for m in ours["models"]:
    k = keras.get(m["name"])
    print(f"{m['name']:6} {m['samples_per_s']:6.0f} {m['study_samples_per_s']:6.0f} {m['best_baseline_samples_per_s']:8.0f}({m['best_baseline_threads']})"
          f" {k or 0:7.0f} {m['best_ratio']:9.2f} {m['study_best_ratio']:10.2f} {m['study_samples_per_s'] / k if k else 0:11.2f}")
PY
