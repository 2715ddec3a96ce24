#!/usr/bin/env bash
# Create .venv if missing and install convstudy with every extra. Without a GPU, the CPU build of
# torch goes in first so pip does not pull a multi-GB CUDA build to satisfy `torch>=2.4`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch>=2.4"
  else
    .venv/bin/pip install -q torch==2.13.0 || .venv/bin/pip install -q --index-url https://download.pytorch.org/whl/cpu "torch>=2.4"
  fi
fi
.venv/bin/pip install -q -e ".[all,test]"
