"""Shared fixtures: a tiny learnable MNIST stand-in, a small two-model study, and a CLI runner.

Nothing here touches the real MNIST copy or the network. `tiny_mnist` writes 600 train / 200 test
28x28 images whose class is a bright block at a class-specific place (a small CNN learns it in an
epoch or two) as gzip IDX files, and makes the `mnist` registry entry accept them both in this
process (monkeypatch) and in `python -m convstudy` subprocesses started with `tiny_mnist.env`
(a `sitecustomize.py` on PYTHONPATH applies the same patch there).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from convstudy.data import REGISTRY

def pytest_configure(config) -> None:
    """Under pytest-xdist, each worker's in-process torch gets its share of the cores, as `--workers` gives
    each training process (executors.pool): N workers on torch's default of every core would oversubscribe
    the CPU, and OpenMP barriers then wait for descheduled threads. Subprocesses get one thread (their env)."""
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    # In-process runs keep this thread count rather than measure one (measure.parallel, tested on its own).
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `cuda` run where a GPU exists (`pytest -m cuda`) and are skipped cleanly elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

_SITECUSTOMIZE = '''\
"""Test hook: accept the tiny synthetic MNIST whose digests are in $CONVSTUDY_TEST_MNIST_SHA256."""
import dataclasses, json, os
_digests = os.environ.get("CONVSTUDY_TEST_MNIST_SHA256")
if _digests:
    from convstudy.data import registry as _registry
    _registry.REGISTRY["mnist"] = dataclasses.replace(
        _registry.REGISTRY["mnist"], sha256=json.loads(_digests), mirrors=())
'''


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 28x28 images and balanced labels: class k is a 6x6 block in cell k of a 4x3 grid, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        row, col = divmod(int(k), 3)
        r0 = 1 + row * 6 + int(rng.integers(0, 2))
        c0 = 2 + col * 9 + int(rng.integers(0, 3))
        images[i, r0:r0 + 6, c0:c0 + 6] = rng.integers(180, 256, size=(6, 6), dtype=np.uint8)
    return images, labels.astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (images [N, H, W] or labels [N])."""
    magic = 0x800 | array.ndim
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx_dataset(data_dir: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                      y_test: np.ndarray) -> dict[str, str]:
    """Write the four MNIST-named gzip IDX files into `data_dir`; returns SHA-256 of the decompressed bytes."""
    payloads = {"train_images": idx_bytes(x_train), "train_labels": idx_bytes(y_train),
                "test_images": idx_bytes(x_test), "test_labels": idx_bytes(y_test)}
    for key, data in payloads.items():
        (data_dir / IDX_NAMES[key]).write_bytes(gzip.compress(data, mtime=0))
    return {k: hashlib.sha256(v).hexdigest() for k, v in payloads.items()}


@dataclass(frozen=True)
class TinyMnist:
    """Where the tiny dataset lives and how a subprocess is told to accept it."""

    dir: Path
    sha256: dict[str, str]
    env: dict[str, str]  # os.environ plus the sitecustomize hook; one torch thread for reproducibility
    n_train: int
    n_test: int


@pytest.fixture(scope="session")
def _tiny_mnist_files(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    root = tmp_path_factory.mktemp("tiny-mnist")
    data_dir = root / "mnist"
    data_dir.mkdir()
    digests = write_idx_dataset(data_dir, *synthetic_digits(600, seed=1), *synthetic_digits(200, seed=2))
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return data_dir, digests, site


def _subprocess_env(digests: dict[str, str], site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVSTUDY_DATA_DIR"}
    env.update({
        "CONVSTUDY_TEST_MNIST_SHA256": json.dumps(digests),
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "COLUMNS": "200", "TERM": "dumb", "MPLBACKEND": "Agg",
    })
    return env


@pytest.fixture(scope="session")
def tiny_mnist_session(_tiny_mnist_files) -> TinyMnist:
    """The tiny dataset for session-scoped fixtures: usable by subprocesses (`.env`) only, no in-process patch."""
    data_dir, digests, site = _tiny_mnist_files
    return TinyMnist(dir=data_dir, sha256=digests, env=_subprocess_env(digests, site), n_train=600, n_test=200)


@pytest.fixture
def tiny_mnist(tiny_mnist_session, monkeypatch) -> TinyMnist:
    """A tiny synthetic MNIST (600 train / 200 test) that `load_dataset("mnist", data_dir=dir)` accepts."""
    monkeypatch.setitem(REGISTRY, "mnist", dataclasses.replace(REGISTRY["mnist"], sha256=tiny_mnist_session.sha256,
                                                               mirrors=()))
    return tiny_mnist_session


@pytest.fixture
def one_thread():
    """The local executor on one torch thread, like a Ray trial with --cpus-per-trial 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_tiny_study(path: Path, epochs: int = 2, seeds: int | list[int] = 2, validation: str = "holdout") -> Path:
    """Write the 2-model tiny study (TOML) to `path`."""
    path.write_text(TINY_STUDY.format(epochs=epochs, seeds=json.dumps(seeds), validation=validation))
    return path


TINY_STUDY = """\
name = "tiny"
description = "Two small CNNs for fast tests."
dataset = "mnist"
seeds = {seeds}

[train]
epochs = {epochs}
batch_size = 32
optimizer = "adam"
validation = "{validation}"

[[models]]
name = "small-a"
layers = ["conv(4,3)", "pool(2)", "flatten", "dropout(0.25)", "dense(10)"]

[[models]]
name = "small-b"
layers = ["conv(6,5)", "pool(2)", "flatten", "dense(16)", "dropout(0.5)", "dense(10)"]
"""


@pytest.fixture
def tiny_study_file(tmp_path):
    """A factory writing the 2-model tiny study as TOML: `tiny_study_file(epochs=2, seeds=2)` -> path."""
    def write(epochs: int = 2, seeds: int | list[int] = 2, validation: str = "holdout",
              name: str = "tiny.toml") -> Path:
        return write_tiny_study(tmp_path / name, epochs, seeds, validation)
    return write


def convstudy_cmd(*args: str | Path) -> list[str]:
    """argv for `python -m convstudy ARGS` with this interpreter."""
    return [sys.executable, "-m", "convstudy", *map(str, args)]


@pytest.fixture
def run_cli(tiny_mnist):
    """Run `python -m convstudy ARGS` to completion in a subprocess that accepts the tiny MNIST."""
    def run(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(convstudy_cmd(*args), env=tiny_mnist.env, capture_output=True, text=True,
                              timeout=timeout)
    return run


def start_run(study: Path, out: Path, tiny: TinyMnist, *extra: str) -> subprocess.Popen:
    """`convstudy run STUDY --out OUT --quiet EXTRA` on the tiny MNIST, in the background."""
    return subprocess.Popen(convstudy_cmd("run", study, "--out", out, "--data-dir", tiny.dir, "--quiet", *extra),
                            env=tiny.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_here(study: Path, out: Path, tiny: TinyMnist, *extra: str) -> None:
    """`convstudy run STUDY --out OUT --quiet EXTRA` on the tiny MNIST in this process (with `tiny_mnist` and
    `one_thread`: one thread, as start_run's subprocesses train), for a reference run or a resume: no
    interpreter start, the same main()."""
    from convstudy.cli import main

    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny.dir), "--quiet", *extra]) == 0


def finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    """Wait for a background run; fail with its stderr unless it exited 0."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err


def kill_when(proc: subprocess.Popen, ready, timeout: float = 180) -> None:
    """SIGKILL a background run as soon as `ready()` holds; fail if it finished before."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def db_rows(db_path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of a query on a study.db, through a short-lived connection (safe while a run writes)."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def epoch_metrics(db_path: Path) -> dict[tuple[str, int, int], tuple[float, float, float, float]]:
    """(model, seed, epoch) -> (loss, accuracy, val_loss, val_accuracy): everything but wall time."""
    rows = db_rows(db_path, "SELECT t.model, t.seed, e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy "
                            "FROM epochs e JOIN trials t ON t.id = e.trial_id")
    return {(m, s, ep): tuple(rest) for m, s, ep, *rest in rows}


def trial_results(db_path: Path) -> dict[tuple[str, int], tuple[str, float | None, float | None]]:
    """(model, seed) -> (state, test_accuracy, test_loss)."""
    rows = db_rows(db_path, "SELECT model, seed, state, test_accuracy, test_loss FROM trials")
    return {(m, s): (st, acc, loss) for m, s, st, acc, loss in rows}




def trial_events(spec, settings, data, root: Path, seed=3, plan=None, saved=None) -> list:
    """run_trial's events (no progress) for `spec` with `seed`, checkpointing under `root`."""
    from convstudy.store import CheckpointStorage
    from convstudy.executors.trial import Progress, TrialJob, run_trial
    from convstudy.train import Plan

    job = TrialJob(0, spec, settings, seed, (28, 28, 1), plan or Plan(), owner=f"trial {seed}")
    return [e for e in run_trial(job, data, CheckpointStorage(str(root)), saved) if not isinstance(e, Progress)]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "frog"), per_class: int = 6,
                       size: tuple[int, int] = (32, 32), seed: int = 0) -> list[Path]:
    """`root/<class>/*.png|jpg`: RGB images whose class is a bright block at a class-specific place."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8)
            r0, c0 = 2 + 8 * k % (size[0] - 10), 4 + 6 * k % (size[1] - 10)
            img[r0:r0 + 8, c0:c0 + 8, k % 3] = 250
            path = root / name / f"{i:03d}.{'jpg' if i % 3 == 2 else 'png'}"
            Image.fromarray(img).save(path, quality=95)  # quality: JPEG only
            paths.append(path)
    return paths


def count_params(model) -> tuple[int, int]:
    """(total, trainable) of a torch module counted the Keras way: BatchNorm running stats count in total only."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return trainable + buffers, trainable


def cifar_archive_bytes(members: dict[str, bytes]) -> bytes:
    """A tar.gz with `members` (name -> bytes): CIFAR's binary archive layout, in the real format."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


RAY = "ray"  # the xdist group of every test that uses ray_session


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs for the whole session (skipped where Ray is not installed): its start and its
    workers' imports are paid once. Tests that use it are in xdist_group RAY, so one xdist worker runs them all."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
