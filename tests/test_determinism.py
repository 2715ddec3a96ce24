"""Same study, same seed, same device and thread count: bit-identical per-epoch metrics on the CPU."""

from __future__ import annotations

import struct
import subprocess

import torch
from conftest import convstudy_cmd, db_rows, epoch_metrics, trial_results

from convstudy.store import DIGEST_KEY, load_tensors


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_two_fresh_processes_give_bit_identical_epochs(tiny_mnist, tiny_study_file, tmp_path):
    study = tiny_study_file(epochs=2, seeds=[3])
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        done = subprocess.run(convstudy_cmd("run", study, "--out", out, "--data-dir", tiny_mnist.dir, "--quiet",
                                            "--device", "cpu"),
                              env=tiny_mnist.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    first, second = (epoch_metrics(o / "study.db") for o in outs)
    assert len(first) == 4  # 2 models x 1 seed x 2 epochs
    assert {k: [bits(v) for v in vals] for k, vals in first.items()} == \
        {k: [bits(v) for v in vals] for k, vals in second.items()}
    assert trial_results(outs[0] / "study.db") == trial_results(outs[1] / "study.db")
    for out in outs:  # the thread count is recorded with the run, so a comparison knows what it compares
        assert db_rows(out / "study.db", "SELECT provenance FROM runs")[0][0].count('"threads": 1') == 1
    # Each file also carries the id of its own study.db, so the bytes differ there; the content digest
    # (tensors, metadata, trial) leaves that id out and must match, as must every tensor bit for bit.
    (ta, ma), (tb, mb) = (load_tensors(o / "trials" / "small-a" / "seed-3" / "predictions.safetensors")
                          for o in outs)
    assert ma[DIGEST_KEY] == mb[DIGEST_KEY]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
