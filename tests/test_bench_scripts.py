"""The benchmark scripts in bench/ keep running against today's package: each on the smallest input it takes."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_cpu_paths_times_every_variant_of_the_plan():
    proc = subprocess.run([sys.executable, str(BENCH / "cpu_paths.py"), "--models", "k3-2", "--threads", "1",
                           "--rounds", "1", "--batches", "1", "--precision", "fp32", "--kept-only"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["model"] == "k3-2" and row["precision"] == "fp32"
    # k3-2 has no DFT conv; its plan pools first, draws Keras's dropout masks where the CPU has no native bf16
    # and is channels_last, so NCHW is timed against it
    from convstudy.train.device import cpu_has_native_bf16

    uniform = set() if cpu_has_native_bf16() else {"uniform_dropout_samples_per_s"}
    assert {k for k in row if k.endswith("_samples_per_s")} == {
        "direct_samples_per_s", "pool_first_samples_per_s", "nchw_samples_per_s", *uniform}
    assert all(v > 0 for k, v in row.items() if k.endswith("_samples_per_s"))
