"""Data stage: registry, verified IDX loading, mirrored download (local server only), splits."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import socket
import struct
import threading
import tracemalloc
import zlib
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
from convstudy.data import idx
from convstudy.errors import UserError

KEYS = ("train_images", "train_labels", "test_images", "test_labels")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
REAL_SIZES = {"train_images": 47040016, "train_labels": 60008, "test_images": 7840016,
              "test_labels": 10008}


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


TINY_SIZES = {key: len(data) for key, data in TINY.items()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recompress(data: bytes) -> bytes:
    """The same data as another gzip would write it: other level, other mtime, other bytes."""
    return gzip.compress(data, compresslevel=1, mtime=1_234_567)


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

@pytest.mark.parametrize("name", sorted(n for n, i in REGISTRY.items() if i.format == "idx"))
def test_idx_entries_cap_at_the_real_file_sizes(name):
    # The other facts of every entry are tests/test_registries.py's.
    assert get_info(name).sizes == REAL_SIZES


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_registry_pins_decompressed_digests(name):
    info = get_info(name)
    assert set(info.sha256) == set(KEYS) and not info.gz_sha256


def test_get_info_unknown_name_suggests_close_one():
    with pytest.raises(UserError) as err:
        get_info("mnsit")
    assert str(err.value) == (
        'unknown dataset "mnsit"; valid: cifar10, cifar100, fashion-mnist, kmnist, mnist (did you mean "mnist"?)'
    )


def test_get_info_unknown_name_without_close_one():
    with pytest.raises(UserError, match="valid: cifar10, cifar100, fashion-mnist, kmnist, mnist$"):
        get_info("svhn")


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


def load_error(name: str, directory: Path, download: bool = True) -> str:
    with pytest.raises(UserError) as err:
        load_dataset(name, directory, download=download)
    message = str(err.value)
    assert "\n" not in message
    assert "delete" not in message  # the file may not be ours to delete, nor re-downloadable
    return message


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
    assert message.startswith(
        f"{path}: content is not the real tiny (SHA-256 mismatch of the decompressed bytes: "
        f"expected {expected}"
    )


def test_gz_checksum_verifies_only_the_published_archive(tmp_path, register, caplog):
    write_files(tmp_path)
    gz_digests = {key: sha((tmp_path / FILES[key]).read_bytes()) for key in KEYS}
    register(tiny_info((dead_mirror(),), sha256={}, gz_sha256=gz_digests, sizes=TINY_SIZES))
    assert_tiny(load_dataset("tiny", tmp_path))
    assert not caplog.records
    wrong = {**gz_digests, "test_labels": "0" * 64}
    register(tiny_info((dead_mirror(),), sha256={}, gz_sha256=wrong, sizes=TINY_SIZES))
    assert_tiny(load_dataset("tiny", tmp_path))
    [record] = caplog.records
    assert record.levelname == "WARNING" and "UNVERIFIED" in record.getMessage()
    assert FILES["test_labels"] in record.getMessage()
    assert FILES["train_images"] not in record.getMessage()


# ---------------------------------------------------------------- issue 14.5: the right bytes

def test_recompressed_copy_verifies_by_decompressed_bytes(tmp_path, register, caplog):
    # Digests of both kinds: the decompressed ones decide, so another gzip's output verifies.
    published = {key: sha(gzip.compress(data, mtime=0)) for key, data in TINY.items()}
    register(tiny_info((dead_mirror(),), gz_sha256=published))
    for key, data in TINY.items():
        packed = recompress(data)
        assert sha(packed) != published[key]
        (tmp_path / FILES[key]).write_bytes(packed)
    assert_tiny(load_dataset("tiny", tmp_path, download=False))
    assert not caplog.records  # verified: no "unverified" warning


def test_noise_shaped_like_uncompressed_fashion_mnist_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    for key, size in REAL_SIZES.items():
        images = key.endswith("_images")
        count = (size - 16) // 784 if images else size - 8
        header = (struct.pack(">IIII", 0x803, count, 28, 28) if images
                  else struct.pack(">II", 0x801, count))
        body = rng.integers(0, 256 if images else 10, size - len(header), dtype=np.uint8)
        (tmp_path / FILES[key][: -len(".gz")]).write_bytes(header + body.tobytes())
    message = load_error("fashion-mnist", tmp_path, download=False)
    path = tmp_path / "train-images-idx3-ubyte"
    assert message.startswith(f"{path}: content is not the real fashion-mnist (SHA-256 mismatch")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no offline MNIST copy beside the repo")
@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "uncompressed"])
def test_mnist_placed_as_fashion_mnist_is_refused(tmp_path, compressed):
    for key in KEYS:
        raw = (SHARED_MNIST / FILES[key]).read_bytes()
        name = FILES[key] if compressed else FILES[key][: -len(".gz")]
        (tmp_path / name).write_bytes(raw if compressed else gzip.decompress(raw))
    message = load_error("fashion-mnist", tmp_path, download=False)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if compressed else ""))
    assert message.startswith(f"{path}: content is not the real fashion-mnist (SHA-256 mismatch")


def gzip_bomb(header: bytes, megabytes: int, members: int) -> bytes:
    """A valid IDX header then `megabytes` MB of zeros, as one gzip member or many concatenated."""
    if members == 1:
        packer = zlib.compressobj(9, wbits=31)
        chunks = [packer.compress(header)]
        chunks += [packer.compress(bytes(1 << 20)) for _ in range(megabytes)]
        return b"".join(chunks) + packer.flush()
    zeros = gzip.compress(bytes((megabytes // members) << 20), mtime=0)
    return gzip.compress(header, mtime=0) + zeros * members


@pytest.mark.parametrize("members", [1, 20])
def test_gzip_bomb_is_refused_without_decompressing_it(tmp_path, register, members):
    register(tiny_info((dead_mirror(),), sizes=TINY_SIZES))
    write_files(tmp_path)
    bomb = gzip_bomb(TINY["train_images"][:16], megabytes=200, members=members)
    assert len(bomb) < 1 << 20  # under 1 MB on disk, 200 MB decompressed
    path = tmp_path / FILES["train_images"]
    path.write_bytes(bomb)
    tracemalloc.start()
    try:
        message = load_error("tiny", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    limit = TINY_SIZES["train_images"]
    assert message == (
        f"{path}: gzip stream decompresses to more than {limit} bytes, the most a tiny file has"
    )
    assert peak < 4 << 20, f"{peak} bytes allocated: the bomb was decompressed past its limit"


def test_gzip_bomb_as_fashion_mnist_stops_at_the_real_size(tmp_path):
    bomb = gzip_bomb(struct.pack(">IIII", 0x803, 60000, 28, 28), megabytes=400, members=40)
    path = tmp_path / FILES["train_images"]
    path.write_bytes(bomb)
    for key in KEYS[1:]:
        (tmp_path / FILES[key]).write_bytes(b"")
    tracemalloc.start()
    try:
        message = load_error("fashion-mnist", tmp_path, download=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == (
        f"{path}: gzip stream decompresses to more than {REAL_SIZES['train_images']} bytes, "
        "the most a fashion-mnist file has"
    )
    assert peak < 1.5 * REAL_SIZES["train_images"]  # the bomb is 400 MB


@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=3000) | st.integers(0, 20000).map(bytes), min_size=1,
                   max_size=3),
    chunk=st.integers(1, 700),
)
def test_streamed_gunzip_matches_gzip(parts, chunk):
    # Tiny pieces exercise every boundary: members, padding, the limit inside a piece.
    raw = b"".join(gzip.compress(part, compresslevel=9, mtime=0) + b"\x00" * (i % 2)
                   for i, part in enumerate(parts))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idx, "CHUNK", chunk)
        data, gz_digest = idx.read_capped(io.BytesIO(raw), 1 << 20, "tiny")
        assert bytes(data) == gzip.decompress(raw) and gz_digest == sha(raw)
        if data:
            with pytest.raises(idx.IdxError, match="decompresses to more than"):
                idx.read_capped(io.BytesIO(raw), len(data) - 1, "tiny")


def test_oversized_uncompressed_file_is_refused(tmp_path, register):
    register(tiny_info((dead_mirror(),), sizes=TINY_SIZES))
    write_files(tmp_path, {key: data for key, data in TINY.items() if key != "test_labels"})
    path = tmp_path / FILES["test_labels"][: -len(".gz")]
    path.write_bytes(TINY["test_labels"] + bytes(100))
    limit = TINY_SIZES["test_labels"]
    message = load_error("tiny", tmp_path)
    assert message == f"{path}: more than {limit} bytes, the most a tiny file has"


def kmnist_like(register) -> DatasetInfo:
    """The real kmnist entry, its published-.gz digests and sizes those of the tiny files."""
    published = {key: sha(gzip.compress(data, mtime=0)) for key, data in TINY.items()}
    return register(dataclasses.replace(
        REGISTRY["kmnist"], gz_sha256=published, sizes=TINY_SIZES, mirrors=(dead_mirror(),)))


@pytest.mark.parametrize("copy", ["recompressed", "uncompressed"])
def test_kmnist_other_copy_loads_with_one_line_warning(tmp_path, register, caplog, copy):
    # Full-size files (blank images: quick to compress) so the real entry's sizes apply.
    payloads = {
        key: (struct.pack(">IIII", 0x803, (size - 16) // 784, 28, 28) + bytes(size - 16)
              if key.endswith("_images") else
              struct.pack(">II", 0x801, size - 8) + bytes(i % 10 for i in range(size - 8)))
        for key, size in REAL_SIZES.items()
    }
    published = {key: sha(gzip.compress(data, mtime=0)) for key, data in payloads.items()}
    register(dataclasses.replace(REGISTRY["kmnist"], gz_sha256=published, mirrors=(dead_mirror(),)))
    for key, data in payloads.items():
        if copy == "recompressed":
            (tmp_path / FILES[key]).write_bytes(recompress(data))
        else:
            (tmp_path / FILES[key][: -len(".gz")]).write_bytes(data)
    data = load_dataset("kmnist", tmp_path, download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.y_test[:12].tolist() == [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1
    ]
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelname == "WARNING" and "\n" not in message
    assert message.startswith("convstudy: warning: kmnist: ") and "UNVERIFIED" in message
    assert str(tmp_path) in message
    assert all(FILES[key].removesuffix(".gz") in message for key in KEYS)


def test_kmnist_published_archive_loads_without_warning(tmp_path, register, caplog):
    kmnist_like(register)
    write_files(tmp_path)
    assert_tiny(load_dataset("kmnist", tmp_path, download=False))
    assert not caplog.records


def test_kmnist_copy_of_the_wrong_size_is_refused(tmp_path, register):
    kmnist_like(register)
    write_files(tmp_path)
    path = tmp_path / FILES["test_images"]
    path.write_bytes(recompress(idx_images(19, seed=2)))
    assert load_error("kmnist", tmp_path, download=False) == (
        f"{path}: content is not the real kmnist "
        f"({16 + 19 * 784} bytes decompressed, the real file has {16 + 20 * 784})"
    )


def test_mirror_must_serve_a_verified_copy(tmp_path, server, register):
    # The served .gz is not the published one: fine on disk with a warning, never downloaded.
    wrong = {key: "0" * 64 for key in KEYS}
    register(tiny_info((server.good,), sha256={}, gz_sha256=wrong, sizes=TINY_SIZES))
    target = tmp_path / "d"
    message = load_error("tiny", target)
    assert "no mirror served a valid copy" in message
    assert "not the published tiny .gz archive" in message
    assert list(target.iterdir()) == []


def test_bad_file_in_convstudys_cache_is_replaced_from_a_mirror(tmp_path, server, register):
    register(tiny_info((server.good,)))
    cached = load_dataset("tiny").source_dir / FILES["train_images"]
    fetched = len(server.hits)
    cached.write_bytes(gzip.compress(idx_images(50, seed=7)))
    assert_tiny(load_dataset("tiny"))
    assert len(server.hits) == fetched + 1
    assert cached.read_bytes() == (tmp_path / "www" / "good" / FILES["train_images"]).read_bytes()


def test_bad_file_in_users_dir_is_left_alone(tmp_path, server, register):
    register(tiny_info((server.good,)))
    path = corrupt(tmp_path / "mine", "train_images", idx_images(50, seed=7))
    before = path.read_bytes()
    message = load_error("tiny", tmp_path / "mine")
    assert message.startswith(f"{path}: content is not the real tiny (SHA-256 mismatch")
    assert server.hits == [] and path.read_bytes() == before


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
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-binary.tar").write_bytes(b"")  # decompressed by hand: not what is read
    assert {row["name"]: row for row in dataset_status(tmp_path)}["cifar10"]["missing"] == ["cifar-10-binary.tar.gz"]
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(b"")
    cifar = {row["name"]: row for row in dataset_status(tmp_path)}["cifar10"]
    assert cifar["present"] == ["cifar-10-binary.tar.gz"] and cifar["input_shape"] == (32, 32, 3)


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
def test_real_mnist_loads_verified():
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


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="no Debian dataset-fashion-mnist")
def test_debian_fashion_mnist_loads_verified(caplog):
    # Debian recompressed the archives: their .gz digests differ from the published ones.
    data = load_dataset("fashion-mnist", DEBIAN_FASHION_MNIST, download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.y_train).tolist() == [6000] * 10
    assert torch.bincount(data.y_test).tolist() == [1000] * 10
    assert (data.x_train.float() / 255).mean().item() == pytest.approx(0.2860, abs=1e-4)
    assert not caplog.records
