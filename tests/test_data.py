"""Data stage: registry, verified IDX loading, mirrored download (local server only), splits."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import socket
import struct
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudy.data import (
    REGISTRY,
    DatasetInfo,
    dataset_status,
    get_info,
    load_dataset,
    resolve_data_dir,
    stratified_indices,
    stratified_split,
)
from convstudy.errors import UserError

KEYS = ("train_images", "train_labels", "test_images", "test_labels")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


# ---------------------------------------------------------------- synthetic IDX files

def idx_images(n: int, seed: int, height: int = 28, width: int = 28, magic: int = 0x803) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, n * height * width, dtype=np.uint8)
    return struct.pack(">IIII", magic, n, height, width) + pixels.tobytes()


def idx_labels(labels: list[int]) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


TINY = {
    "train_images": idx_images(50, seed=1),
    "train_labels": idx_labels([i % 10 for i in range(50)]),
    "test_images": idx_images(20, seed=2),
    "test_labels": idx_labels([i % 10 for i in range(20)]),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_info(mirrors: tuple[str, ...] = (), **changes) -> DatasetInfo:
    info = DatasetInfo(
        name="tiny",
        input_shape=(28, 28, 1),
        num_classes=10,
        class_names=tuple("abcdefghij"),
        files=dict(FILES),
        sha256={key: sha(TINY[key]) for key in KEYS},
        mirrors=mirrors,
        homepage="http://127.0.0.1/",
        license="test",
    )
    return dataclasses.replace(info, **changes)


def write_files(directory: Path, payloads: dict[str, bytes] = TINY, compress: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, data in payloads.items():
        name = FILES[key] if compress else FILES[key][: -len(".gz")]
        (directory / name).write_bytes(gzip.compress(data, mtime=0) if compress else data)


def dead_mirror() -> str:
    """A base URL on a port nothing listens on: connection refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real home cache, no data-dir variable, no proxy between us and 127.0.0.1."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONVSTUDY_DATA_DIR", raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def register(monkeypatch):
    def _register(info: DatasetInfo) -> DatasetInfo:
        monkeypatch.setitem(REGISTRY, info.name, info)
        return info
    return _register


@pytest.fixture
def server(tmp_path):
    """A local HTTP mirror: root/good/ serves the tiny files, root/bad/ same names, other bytes."""
    root = tmp_path / "www"
    write_files(root / "good")
    bad = {key: idx_images(50, seed=9) if "images" in key else data for key, data in TINY.items()}
    bad["train_labels"], bad["test_labels"] = idx_labels([0] * 50), idx_labels([0] * 20)
    write_files(root / "bad", bad)
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}/"
    yield SimpleNamespace(good=base + "good/", bad=base + "bad/", hits=hits)
    httpd.shutdown()
    httpd.server_close()


def assert_tiny(data) -> None:
    assert data.x_train.shape == (50, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert data.x_train.dtype == torch.uint8 and data.x_train.is_contiguous()
    assert data.y_train.dtype == torch.int64 and data.y_train.shape == (50,)
    expected = np.frombuffer(TINY["train_images"], np.uint8, offset=16).reshape(50, 1, 28, 28)
    assert torch.equal(data.x_train, torch.from_numpy(expected.copy()))
    assert data.y_test.tolist() == [i % 10 for i in range(20)]


# ---------------------------------------------------------------- registry

@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entry_is_complete(name):
    info = get_info(name)
    assert info.name == name
    assert set(info.files) == set(KEYS)
    assert len(info.class_names) == info.num_classes
    assert info.input_shape == (28, 28, 1)
    assert info.mirrors and all(base.endswith("/") for base in info.mirrors)
    for key in KEYS:
        digest = info.sha256.get(key) or info.gz_sha256.get(key)
        assert digest and re.fullmatch(r"[0-9a-f]{64}", digest), f"{name}/{key} has no checksum"


def test_get_info_unknown_name_suggests_close_one():
    with pytest.raises(UserError) as err:
        get_info("mnsit")
    assert str(err.value) == (
        'unknown dataset "mnsit"; valid: fashion-mnist, kmnist, mnist (did you mean "mnist"?)'
    )


def test_get_info_unknown_name_without_close_one():
    with pytest.raises(UserError, match="valid: fashion-mnist, kmnist, mnist$"):
        get_info("cifar100")


# ---------------------------------------------------------------- download

def test_download_skips_dead_and_404_mirrors_then_loads_from_disk(tmp_path, server, register):
    not_found = server.good.replace("/good/", "/nowhere/")  # answers 404
    register(tiny_info((dead_mirror(), not_found, server.good)))
    target = tmp_path / "fresh" / "dir"
    assert_tiny(load_dataset("tiny", target))
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES.values())  # no .part left
    fetched = len(server.hits)
    assert fetched == 8  # a 404 and a success per file
    again = load_dataset("tiny", target)
    assert_tiny(again)
    assert len(server.hits) == fetched and again.source_dir == target


def test_download_goes_to_home_cache_by_default(tmp_path, server, register):
    register(tiny_info((server.good,)))
    data = load_dataset("tiny")
    assert data.source_dir == tmp_path / "home" / ".cache" / "convstudy" / "tiny"
    assert (data.source_dir / FILES["train_images"]).is_file()


def test_mirror_with_bad_checksum_is_skipped(tmp_path, server, register):
    register(tiny_info((server.bad, server.good)))
    assert_tiny(load_dataset("tiny", tmp_path / "d"))
    assert "/bad/train-images-idx3-ubyte.gz" in server.hits


def test_all_mirrors_bad_is_one_line_error_and_leaves_nothing(tmp_path, server, register):
    register(tiny_info((server.bad, server.bad)))
    target = tmp_path / "d"
    with pytest.raises(UserError) as err:
        load_dataset("tiny", target)
    message = str(err.value)
    assert "\n" not in message
    assert "no mirror served a valid copy" in message and "SHA-256 mismatch" in message
    assert list(target.iterdir()) == []


def test_offline_error_names_files_dir_and_fix(tmp_path, register):
    register(tiny_info((dead_mirror(), dead_mirror())))
    target = tmp_path / "offline"
    with pytest.raises(UserError) as err:
        load_dataset("tiny", target)
    message = str(err.value)
    assert "\n" not in message
    assert all(name in message for name in FILES.values())
    assert str(target) in message and "no mirror reachable" in message
    assert "--data-dir DIR" in message


def test_download_disabled_reports_missing(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    write_files(tmp_path, {"train_images": TINY["train_images"]})
    with pytest.raises(UserError, match="downloading is off") as err:
        load_dataset("tiny", tmp_path, download=False)
    assert FILES["train_labels"] in str(err.value) and FILES["train_images"] not in str(err.value)


def test_unwritable_dir_is_named(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot be written") as err:
        load_dataset("tiny", blocker / "data")
    assert str(blocker / "data") in str(err.value)
    with pytest.raises(UserError, match="is not a directory"):
        load_dataset("tiny", blocker)


# ---------------------------------------------------------------- files on disk

def test_uncompressed_files_are_accepted(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    write_files(tmp_path, compress=False)
    assert_tiny(load_dataset("tiny", tmp_path))


def test_uncompressed_bytes_under_gz_name_are_accepted(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    for key, data in TINY.items():
        (tmp_path / FILES[key]).write_bytes(data)
    assert_tiny(load_dataset("tiny", tmp_path))


def corrupt(tmp_path: Path, key: str, data: bytes, compress: bool = True) -> Path:
    write_files(tmp_path)
    path = tmp_path / FILES[key]
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def load_error(name: str, directory: Path) -> str:
    with pytest.raises(UserError) as err:
        load_dataset(name, directory)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_truncated_gzip_names_the_file(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    path = corrupt(tmp_path, "train_images", TINY["train_images"])
    path.write_bytes(path.read_bytes()[:300])
    assert load_error("tiny", tmp_path).startswith(
        f"{path}: corrupt IDX file (truncated gzip stream)"
    )


def test_bad_magic_names_the_file(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    path = corrupt(tmp_path, "test_images", idx_images(20, seed=2, magic=0x804))
    message = load_error("tiny", tmp_path)
    assert message.startswith(f"{path}: corrupt IDX file (magic 0x00000804, expected 0x00000803)")


def test_size_not_matching_header_names_the_file(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    path = corrupt(tmp_path, "train_images", TINY["train_images"][:-28])
    assert load_error("tiny", tmp_path).startswith(f"{path}: corrupt IDX file (")


def test_checksum_mismatch_on_disk_names_the_file(tmp_path, register):
    register(tiny_info((dead_mirror(),)))
    path = corrupt(tmp_path, "train_images", idx_images(50, seed=7))
    message = load_error("tiny", tmp_path)
    expected = sha(TINY["train_images"])[:12]
    assert message.startswith(f"{path}: SHA-256 mismatch (expected {expected}")
    assert message.endswith("delete it to re-download")


def test_gz_checksum_is_verified_when_only_that_is_known(tmp_path, register):
    write_files(tmp_path)
    gz_digests = {key: sha((tmp_path / FILES[key]).read_bytes()) for key in KEYS}
    register(tiny_info((dead_mirror(),), sha256={}, gz_sha256=gz_digests))
    assert_tiny(load_dataset("tiny", tmp_path))
    wrong = {**gz_digests, "test_labels": "0" * 64}
    register(tiny_info((dead_mirror(),), sha256={}, gz_sha256=wrong))
    assert "SHA-256 of the .gz mismatch" in load_error("tiny", tmp_path)


def test_image_and_label_counts_must_match(tmp_path, register):
    short = idx_labels([i % 10 for i in range(49)])
    register(tiny_info((dead_mirror(),), sha256={**tiny_info().sha256, "train_labels": sha(short)}))
    corrupt(tmp_path, "train_labels", short)
    message = load_error("tiny", tmp_path)
    assert "holds 50 images" in message and "holds 49 labels" in message


def test_label_out_of_range(tmp_path, register):
    labels = idx_labels([12] * 20)
    register(tiny_info((dead_mirror(),), sha256={**tiny_info().sha256, "test_labels": sha(labels)}))
    corrupt(tmp_path, "test_labels", labels)
    assert "label 12 is out of range for 10 classes" in load_error("tiny", tmp_path)


# ---------------------------------------------------------------- directories

def test_data_dir_precedence(tmp_path, monkeypatch):
    home_default = tmp_path / "home" / ".cache" / "convstudy" / "mnist"
    assert resolve_data_dir("mnist") == home_default
    monkeypatch.setenv("CONVSTUDY_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir("mnist") == tmp_path / "env"
    assert resolve_data_dir("mnist", tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir("mnist", str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.setenv("CONVSTUDY_DATA_DIR", "")
    assert resolve_data_dir("mnist") == home_default


def test_data_dir_with_dataset_subfolder_means_the_subfolder(tmp_path):
    (tmp_path / "root" / "kmnist").mkdir(parents=True)
    assert resolve_data_dir("kmnist", tmp_path / "root") == tmp_path / "root" / "kmnist"
    assert resolve_data_dir("mnist", tmp_path / "root") == tmp_path / "root"


def test_dataset_status_lists_present_and_missing(tmp_path):
    write_files(tmp_path / "mnist", {"train_images": TINY["train_images"]})
    write_files(tmp_path / "mnist", {"test_labels": TINY["test_labels"]}, compress=False)
    rows = {row["name"]: row for row in dataset_status(tmp_path)}
    assert set(rows) == set(REGISTRY)
    mnist = rows["mnist"]
    assert mnist["dir"] == str(tmp_path / "mnist") and mnist["input_shape"] == (28, 28, 1)
    assert mnist["present"] == ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"]
    assert mnist["missing"] == ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"]
    assert len(rows["kmnist"]["missing"]) == 4 and rows["kmnist"]["num_classes"] == 10


# ---------------------------------------------------------------- splits

SKEWED = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)


def test_stratified_indices_largest_remainder():
    # shares of 7: 3.5, 2.1, 1.4 -> floors 3, 2, 1; the one seat left goes to the largest remainder
    picked = stratified_indices(SKEWED, 7, seed=0)
    assert torch.bincount(SKEWED[picked]).tolist() == [4, 2, 1]
    balanced = torch.arange(1000) % 10
    assert torch.bincount(balanced[stratified_indices(balanced, 100, seed=3)]).tolist() == [10] * 10


def test_stratified_indices_deterministic_sorted_unique():
    labels = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
    first = stratified_indices(labels, 300, seed=5)
    assert torch.equal(first, stratified_indices(labels, 300, seed=5))
    assert not torch.equal(first, stratified_indices(labels, 300, seed=6))
    assert first.dtype == torch.int64 and len(first) == 300
    assert torch.equal(first, torch.unique(first))  # unique() sorts


def test_stratified_indices_edges():
    assert torch.equal(stratified_indices(SKEWED, 100, seed=0), torch.arange(100))
    assert torch.equal(stratified_indices(SKEWED, 10_000, seed=0), torch.arange(100))
    assert stratified_indices(SKEWED, 0, seed=0).numel() == 0
    with pytest.raises(UserError):
        stratified_indices(SKEWED, -1, seed=0)


def test_stratified_split_disjoint_complete_proportional():
    train, holdout = stratified_split(SKEWED, 0.2, seed=1)
    assert torch.bincount(SKEWED[holdout]).tolist() == [10, 6, 4]
    assert not set(train.tolist()) & set(holdout.tolist())
    assert torch.equal(torch.cat([train, holdout]).sort().values, torch.arange(100))
    assert torch.equal(train, train.sort().values)
    again = stratified_split(SKEWED, 0.2, seed=1)
    assert torch.equal(again[0], train) and torch.equal(again[1], holdout)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(UserError, match="fraction"):
            stratified_split(SKEWED, bad, seed=1)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    share=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_stratified_indices_property(counts, share, seed):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    n = round(share * len(labels))
    picked = stratified_indices(labels, n, seed)
    assert len(picked) == n and torch.equal(picked, torch.unique(picked))
    got = torch.bincount(labels[picked], minlength=len(counts)).tolist()
    for count, taken in zip(counts, got):
        assert abs(taken - count * n / len(labels)) < 1  # within one of the exact share


# ---------------------------------------------------------------- the real MNIST, when present

@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no offline MNIST copy beside the repo")
def test_real_mnist_loads_verified_and_fast():
    data = load_dataset("mnist", SHARED_MNIST, download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.y_train).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert torch.bincount(data.y_test).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]
    pixels = data.x_train.float() / 255
    assert pixels.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert pixels.std().item() == pytest.approx(0.3081, abs=1e-4)
    start = time.perf_counter()
    load_dataset("mnist", SHARED_MNIST, download=False)
    assert time.perf_counter() - start < 1.0
