#!/usr/bin/env bash
# The main job: set up, then run the seed notebook's study (12 CNNs x 12 epochs on MNIST).
# Extra arguments go to `convstudy run`, e.g. --data-dir ../shared/data/mnist on a machine offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/convstudy run seed "$@"
