#!/usr/bin/env bash
# Issue 25, acceptance 2: each special or hostile data source is refused in one stderr line with exit 2,
# quickly and with bounded memory (under `ulimit -v`). Prints wall time, CPU time and peak RSS per input.
#   bash bench/untrusted_refusals.sh
set -uo pipefail
PY=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; cd "$work"
mkfifo fifo.png; mkdir -p imgs/a imgs/b; mkfifo imgs/a/x.png
"$PY" - <<'PY'
import numpy as np
np.savez("huge.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 2, 2**62], np.uint64),
         x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([0, 1], np.uint64))
with open("big.csv", "w") as f:
    f.write("label," + ",".join(f"p{i}" for i in range(16)) + "\n" + "1" * 400 + "," + ",".join(["0"] * 16) + "\n")
PY
printf 'name = "s"\n[[models]]\nname = "m"\nlayers = ["flatten", "dense(10)"]\n' > s.toml
uptime
for ds in 'npz:/dev/zero' 'csv:/dev/zero,size=4x4' 'npz:/dev/urandom' 'csv:/dev/urandom,size=4x4' 'npz:huge.npz' \
          'csv:big.csv,size=4x4' 'folder:imgs,size=8x8,channels=1'; do
  /usr/bin/time -q -o t.txt -f "%e s wall, %U+%S s CPU, %M KB peak" \
    bash -c 'ulimit -v 2200000; exec "$0" -m convstudy models s.toml --dataset "$1"' "$PY" "$ds" >/dev/null 2>err.txt
  rc=$?
  echo "$ds: exit $rc, $(wc -l <err.txt) stderr line(s), $(cat t.txt) | $(cut -c1-100 err.txt)"
done
