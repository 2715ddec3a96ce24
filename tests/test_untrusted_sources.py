"""Hostile data files through the CLI: one stderr line, exit 2, no hang and bounded memory, for every source.

Each case runs `convstudy models`, `run` or `predict` in a subprocess under `ulimit -v` (what importing torch
needs plus 1.5 GiB), so a reader that slurps /dev/zero fails with MemoryError instead of waking the OOM killer,
and under a timeout, so a reader that blocks on a FIFO fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import subprocess
import struct
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import convstudy_cmd, write_image_folder

GUARD_S = 60  # a hang guard, far above the few seconds a refusal takes on a loaded machine

STUDY = """\
name = "h"
dataset = "{dataset}"
seeds = 1

[train]
epochs = 1
batch_size = 8

[[models]]
name = "a"
layers = ["conv(4,3)", "flatten", "dense(3)"]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The subprocess environment: own decoded cache, no CUDA (its address-space reservation dwarfs any ulimit)."""
    cache = tmp_path_factory.mktemp("decoded")
    return {**os.environ, "CONVSTUDY_CACHE_DIR": str(cache), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
            "COLUMNS": "200", "TERM": "dumb", "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def limit_kib(env) -> int:
    """`ulimit -v` for the CLI: the address space of an interpreter that imported convstudy's stack, plus 1.5 GiB."""
    probe = ("import torch, numpy, PIL.Image, convstudy.data, convstudy.cli\n"
             "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout) + (3 << 19)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env) -> Path:
    """A study trained for one epoch on a 3-class folder of 12x12 images: something for `predict` to load."""
    root = tmp_path_factory.mktemp("trained")
    write_image_folder(root / "imgs", per_class=4, size=(12, 12))
    study = root / "s.toml"
    study.write_text(STUDY.format(dataset=f"folder:{root / 'imgs'}"))
    done = subprocess.run(convstudy_cmd("run", study, "--out", root / "out", "--quiet"), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return root / "out"


def refused(args: list[str | Path | bytes], env: dict[str, str], limit_kib: int) -> str:
    """Run the CLI under the memory limit; assert exit 2 with exactly one stderr line, and return that line."""
    argv = ["bash", "-c", f'ulimit -v {limit_kib}; exec "$0" "$@"', *convstudy_cmd(),
            *(a if isinstance(a, bytes) else str(a) for a in args)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=GUARD_S)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("convstudy: error: ")
    return lines[0]


def models_with(tmp_path: Path, dataset: str) -> list[str | Path]:
    """`convstudy models` of a study on `dataset`: resolving the source reads it (shape, classes)."""
    study = tmp_path / "s.toml"
    study.write_text(STUDY.format(dataset=dataset))
    return ["models", study]


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------- special files (issue 25 item 5)

@pytest.mark.parametrize("dataset, says", [
    ("npz:/dev/zero", "/dev/zero: not a regular file (a device)"),
    ("csv:/dev/zero,size=4x4", "/dev/zero: not a regular file (a device)"),
    ("npz:/dev/urandom", "/dev/urandom: not a regular file (a device)"),
    ("csv:/dev/urandom,size=4x4", "/dev/urandom: not a regular file (a device)"),
    ("npz:{tmp}/pipe.npz", "pipe.npz: not a regular file (a FIFO)"),
    ("csv:{tmp}/pipe.csv,size=4x4", "pipe.csv: not a regular file (a FIFO)"),
    ("npz:{tmp}", "is a directory, not a dataset file"),
])
def test_devices_fifos_and_directories_are_refused_as_dataset_files(tmp_path, env, limit_kib, dataset, says):
    fifo(tmp_path / "pipe.npz")
    fifo(tmp_path / "pipe.csv")
    line = refused(models_with(tmp_path, dataset.format(tmp=tmp_path)), env, limit_kib)
    assert says in line


def test_a_fifo_among_a_folders_images_is_refused_by_run(tmp_path, env, limit_kib):
    write_image_folder(tmp_path / "imgs", per_class=3, size=(12, 12))
    fifo(tmp_path / "imgs" / "cat" / "x.png")
    study = tmp_path / "s.toml"
    study.write_text(STUDY.format(dataset=f"folder:{tmp_path / 'imgs'}"))
    line = refused(["run", study, "--out", tmp_path / "out", "--quiet"], env, limit_kib)
    assert "cat/x.png: not a regular file (a FIFO)" in line


def test_a_fifo_given_to_predict_is_refused(tmp_path, env, limit_kib, trained):
    line = refused(["predict", trained, "--model", "a", fifo(tmp_path / "x.png")], env, limit_kib)
    assert line.endswith("x.png: not a regular file (a FIFO); an image file must be a regular file")


@pytest.mark.parametrize("content", [b"not an image", None])
def test_predict_of_only_bad_images_prints_only_their_errors(tmp_path, env, limit_kib, trained, content):
    image = tmp_path / "bad.png"
    if content is not None:
        image.write_bytes(content)
    line = refused(["predict", trained, "--model", "a", image], env, limit_kib)
    assert "bad.png: " in line and "model" not in line  # no header line before the error


def without_blocking(call, pipe: Path) -> object:
    """`call()`'s result or exception, run in a thread; if it blocks on `pipe`, release it and fail the test."""
    result: list[object] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # noqa: BLE001 -- handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(GUARD_S)
    if thread.is_alive():  # release the blocked open() so the test fails instead of hanging
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(GUARD_S)
        pytest.fail(f"reading the FIFO {pipe.name} blocked")
    (out,) = result
    return out


@pytest.mark.parametrize("digits", [False, True])
def test_predicts_image_reader_refuses_a_fifo_without_blocking(tmp_path, digits):
    from convstudy.deploy.images import ImageError, load_image

    pipe = fifo(tmp_path / "x.png")
    error = without_blocking(lambda: load_image(pipe, (12, 12, 3), digits), pipe)
    assert isinstance(error, ImageError) and str(error).startswith("not a regular file (a FIFO)")


def test_a_fifo_in_the_decoded_cache_is_a_miss(tmp_path, monkeypatch):
    from convstudy.data import load_dataset

    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "decoded"))
    write_image_folder(tmp_path / "imgs", per_class=3, size=(12, 12))
    source = f"folder:{tmp_path / 'imgs'}"
    first = load_dataset(source)
    (npy,) = (tmp_path / "decoded").rglob("x_train.npy")
    npy.unlink()
    again = without_blocking(lambda: load_dataset(source), fifo(npy))
    assert again.provenance["decoded_cache"] == "miss" and again.x_train.equal(first.x_train)


# ---------------------------------------------------------------- huge labels (item 6)

def write_npz(path: Path, label: int, dtype=np.int64) -> Path:
    x = np.zeros((10, 4, 4), np.uint8)
    y = np.array([label if i == 3 else i % 2 for i in range(10)], dtype)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=np.arange(10, dtype=dtype) % 2)
    return path


def write_csv(path: Path, label: str, header: bool = False, rows: int = 10) -> Path:
    lines = ["label," + ",".join(f"pixel{i}" for i in range(16))] if header else []
    lines += [f"{label if i == 3 else i % 2}," + ",".join(["7"] * 16) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("label", [2**62, 10**9, 10**7, 100_000])
def test_a_huge_npz_label_is_refused_before_naming_classes(tmp_path, env, limit_kib, label):
    path = write_npz(tmp_path / "big.npz", label)
    line = refused(models_with(tmp_path, f"npz:{path}"), env, limit_kib)
    assert f"big.npz: y_train holds the label {label}; labels are class indices 0 to 99,999" in line


def test_a_uint64_label_past_int64_is_refused_not_wrapped(tmp_path, env, limit_kib):
    path = write_npz(tmp_path / "u.npz", 2**64 - 1, np.uint64)
    study = models_with(tmp_path, f"npz:{path},classes=a|b|c")[1]
    line = refused(["run", study, "--out", tmp_path / "out", "--quiet"], env, limit_kib)
    assert f"u.npz: y_train holds the label {2**64 - 1}" in line


@pytest.mark.parametrize("label", ["1000000000", "10000000", str(2**62)])
def test_a_huge_csv_label_is_refused_naming_file_and_label(tmp_path, env, limit_kib, label):
    path = write_csv(tmp_path / "big.csv", label)
    line = refused(models_with(tmp_path, f"csv:{path},size=4x4"), env, limit_kib)
    assert f"big.csv: row 4, column 1: label {label} is out of range" in line


# ---------------------------------------------------------------- CSV cells (item 8)

@pytest.mark.parametrize("cell, says", [
    ("1" + "0" * 399, "row 5, column 1: label 100000000000... (400 characters) is out of range"),
    ("9" * 5000, "row 5, column 1: label 999999999999... (5000 characters) is out of range"),
    ("-" + "9" * 30, "row 5, column 1: label -99999999999... (31 characters) is out of range"),
    ("1e400", "row 5, column 1: 1e400 is not an integer"),
    ("", "row 5, column 1: an empty cell is not an integer"),
], ids=["400 digits", "5000 digits", "-31 digits", "1e400", "empty"])
def test_a_bad_csv_label_cell_names_file_row_and_column(tmp_path, env, limit_kib, cell, says):
    path = write_csv(tmp_path / "c.csv", cell, header=True)
    line = refused(models_with(tmp_path, f"csv:{path},size=4x4"), env, limit_kib)
    assert f"c.csv: {says}" in line


def test_a_huge_csv_pixel_names_file_row_and_column(tmp_path, env, limit_kib):
    path = write_csv(tmp_path / "p.csv", "1")
    text = path.read_text().splitlines()
    text[6] = text[6].rsplit(",", 1)[0] + "," + "7" * 400
    path.write_text("\n".join(text))
    line = refused(models_with(tmp_path, f"csv:{path},size=4x4"), env, limit_kib)
    assert "p.csv: row 7, column 17: pixel 777777777777... (400 characters) is out of range; pixels are 0 to 255" in line


# ---------------------------------------------------------------- names that are not UTF-8 (item 7)

def test_a_class_folder_named_in_non_utf8_bytes_is_refused_escaped(tmp_path, env, limit_kib):
    write_image_folder(tmp_path / "imgs", per_class=3, size=(12, 12))
    os.rename(tmp_path / "imgs" / "frog", os.fsencode(tmp_path / "imgs") + b"/\xff\xfe")
    study = models_with(tmp_path, f"folder:{tmp_path / 'imgs'}")[1]
    line = refused(["run", study, "--out", tmp_path / "out", "--quiet"], env, limit_kib)
    assert line.endswith("imgs/\\xff\\xfe: folder name is not valid UTF-8; rename it (class names are taken "
                         "from folder names)")
    assert not (tmp_path / "out").exists()


def test_a_dataset_path_in_non_utf8_bytes_is_refused_escaped(tmp_path, env, limit_kib):
    root = os.fsencode(tmp_path) + b"/\xffimgs"
    write_image_folder(Path(os.fsdecode(root)), per_class=3, size=(12, 12))
    write_image_folder(tmp_path / "imgs", per_class=3, size=(12, 12))
    study = models_with(tmp_path, f"folder:{tmp_path / 'imgs'}")[1]
    line = refused(["run", study, "--out", tmp_path / "out", "--quiet", "--dataset", b"folder:" + root], env,
                   limit_kib)
    assert 'dataset: path "' in line and '/\\xffimgs" is not valid UTF-8' in line


def test_a_class_name_with_a_lone_surrogate_is_refused():
    from convstudy.data.sources import parse_source
    from convstudy.errors import UserError

    with pytest.raises(UserError, match=r'dataset: classes "\\ud800" is not valid UTF-8'):
        parse_source('{"kind": "npz", "path": "x.npz", "classes": ["\\ud800", "b"]}')


# ---------------------------------------------------------------- the rest of item 11

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height (1-bit grey) and holds no pixel data: what Image.open sees of a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_in_a_folder_is_one_line_not_a_warning(tmp_path, env, limit_kib):
    write_image_folder(tmp_path / "imgs", per_class=3, size=(12, 12))
    png_header_only(tmp_path / "imgs" / "dog" / "zzz.png", 10_000, 10_000)  # past Pillow's 89.5 M pixel limit
    study = models_with(tmp_path, f"folder:{tmp_path / 'imgs'}")[1]
    line = refused(["run", study, "--out", tmp_path / "out", "--quiet"], env, limit_kib)
    assert "dog/zzz.png: image has more than 89,478,485 pixels, too many to decode safely" in line


def test_a_decompression_bomb_given_to_predict_is_one_line(tmp_path, env, limit_kib, trained):
    bomb = png_header_only(tmp_path / "bomb.png", 10_000, 10_000)
    line = refused(["predict", trained, "--model", "a", bomb], env, limit_kib)
    assert "bomb.png: cannot read image (image has more than 89,478,485 pixels" in line


@pytest.mark.parametrize("text", ["", "\n\n", "label,pixel0,pixel1\n"], ids=["empty", "blank lines", "header only"])
def test_a_csv_without_rows_says_so(tmp_path, env, limit_kib, text):
    (tmp_path / "e.csv").write_text(text)
    line = refused(models_with(tmp_path, f"csv:{tmp_path / 'e.csv'},size=4x4"), env, limit_kib)
    assert line.endswith("e.csv: the CSV has no data rows (expected lines of a label and 16 pixels)")


def test_a_single_class_is_refused(tmp_path, env, limit_kib):
    write_image_folder(tmp_path / "one", classes=("cat",), per_class=3, size=(12, 12))
    line = refused(models_with(tmp_path, f"folder:{tmp_path / 'one'}"), env, limit_kib)
    assert line.endswith('one: one class folder ("cat"); a classifier needs at least 2 classes')


@pytest.mark.parametrize("dataset, says", [
    ("npz:{tmp}/zeros.npz", "zeros.npz: every label is 0, one class; a classifier needs at least 2 classes"),
    ("csv:{tmp}/zeros.csv,size=4x4", "zeros.csv: every label is 0, one class; a classifier needs at least 2 classes"),
    ("folder:{tmp}/imgs,classes=cat", 'dataset: classes lists one class ("cat"); a classifier needs at least 2'),
])
def test_a_single_class_from_labels_or_declared_is_refused(tmp_path, monkeypatch, dataset, says):
    from convstudy.data import canonical_dataset
    from convstudy.errors import UserError

    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "decoded"))
    np.savez(tmp_path / "zeros.npz", x_train=np.zeros((4, 4, 4), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 4, 4), np.uint8), y_test=np.zeros(2, np.int64))
    write_csv(tmp_path / "zeros.csv", "0", rows=1)
    write_image_folder(tmp_path / "imgs", per_class=3, size=(12, 12))
    with pytest.raises(UserError) as err:
        canonical_dataset(dataset.format(tmp=tmp_path))
    assert says in str(err.value)
