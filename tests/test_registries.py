"""Every optimiser, registered dataset and data-source kind, end to end (timm-style: the parameter lists are the
registries, so a new entry is tested the moment it exists, and one without a tiny writer here fails).

Optimisers: built from a study spec, one step lowers the loss, the state survives a checkpoint round trip
bit-identically, bad options are one-line errors. Datasets: the registry's facts, the loader on a tiny file in
the entry's format, refused against the real digests and accepted against the tiny file's own. Source kinds: a
tiny file loads, a malformed one is a one-line error naming it. Hostile inputs are tests/test_untrusted_sources.py's.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cifar_archive_bytes, idx_bytes, write_image_folder
from convstudy.data import REGISTRY, get_info, load_dataset
from convstudy.data.cifar import PIXELS, _LAYOUTS
from convstudy.data.registry import FILE_KEYS
from convstudy.data.sources import KINDS
from convstudy.errors import UserError
from convstudy.spec import OPTIMIZERS, build_study
from convstudy.spec.memory import optimizer_states
from convstudy.spec.models import BOOL_ARGS, EXTRA_ARGS
from convstudy.store import CheckpointStorage
from convstudy.train import TrainState, load_state_tensors, make_optimizer, state_to_tensors


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No real home cache or data-dir variable; decoded tensors cached under the test's own folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "decoded"))
    monkeypatch.delenv("CONVSTUDY_DATA_DIR", raising=False)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text, text
    return text


# ---------------------------------------------------------------- optimisers

def study_settings(optimizer):
    study = build_study({"name": "s", "train": {"optimizer": optimizer},
                         "models": [{"name": "m", "layers": ["flatten", "dense(10)"]}]})
    return study.models[0].settings(study.train)


def tiny_state(name: str, seed: int = 0) -> tuple[TrainState, torch.Tensor, torch.Tensor]:
    """A small two-layer classifier on 16 fixed points with `name`'s defaults, as a study file gives them."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    opt = make_optimizer(study_settings(name).optimizer, model.parameters())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    return TrainState(model, opt, torch.Generator().manual_seed(2)), x, y


def step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> float:
    loss = torch.nn.functional.cross_entropy(state.model(x), y)
    state.optimizer.zero_grad()
    loss.backward()
    state.optimizer.step()
    return loss.item()


def loss_of(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(state.model(x), y).item()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_builds_from_a_spec_with_keras_defaults(name):
    settings = study_settings({"name": name.upper(), "weight_decay": 0.03})  # names are case-blind
    assert settings.optimizer.name == name
    group = make_optimizer(settings.optimizer, torch.nn.Linear(2, 2).parameters()).param_groups[0]
    defaults = OPTIMIZERS[name]
    assert group["lr"] == defaults["lr"] and group["weight_decay"] == 0.03
    if "eps" in defaults:
        assert group["eps"] == defaults["eps"] == 1e-7


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_step_lowers_the_loss(name):
    state, x, y = tiny_state(name)
    before = step(state, x, y)
    assert loss_of(state, x, y) < before


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_survives_the_checkpoint_bit_identically(name, tmp_path):
    state, x, y = tiny_state(name)
    for _ in range(2):
        step(state, x, y)
    storage = CheckpointStorage(str(tmp_path))
    key = storage.key("m", 0)
    storage.save(key, *state_to_tensors(state), owner="test")
    loaded = storage.load(key, owner="test")
    assert loaded is not None
    resumed = load_state_tensors(tiny_state(name, seed=7)[0], *loaded)  # other weights: all must come back
    saved, back = state.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert json.dumps(back["param_groups"]) == json.dumps(saved["param_groups"])  # betas come back a list
    for idx, slots in saved["state"].items():
        for slot, value in slots.items():
            assert torch.equal(torch.as_tensor(back["state"][idx][slot]), torch.as_tensor(value)), (idx, slot)
    step(state, x, y)
    step(resumed, x, y)
    for a, b in zip(state.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name, args", [(n, a) for n in sorted(OPTIMIZERS)
                                         for a in ({}, {"momentum": 0.9}) if not a or "momentum" in OPTIMIZERS[n]])
def test_memory_estimate_counts_the_state_the_optimizer_keeps(name, args):
    settings = study_settings({"name": name, **args})
    model = torch.nn.Linear(8, 3)
    opt = make_optimizer(settings.optimizer, model.parameters())
    model(torch.ones(2, 8)).sum().backward()
    opt.step()
    for p in model.parameters():
        kept = [v for v in opt.state[p].values() if torch.is_tensor(v) and v.shape == p.shape]
        assert len(kept) == optimizer_states(settings), sorted(opt.state[p])


def bad_options(name: str) -> list[tuple[str, object]]:
    """One out-of-range value for every argument `name` takes: a number below every range, a number for a flag."""
    args = [*OPTIMIZERS[name], *EXTRA_ARGS.get(name, {})]
    return [("bogus", 1.0)] + [(arg, 1.0 if arg in BOOL_ARGS else -1.0) for arg in args]


@pytest.mark.parametrize("name, arg, value", [(n, a, v) for n in sorted(OPTIMIZERS) for a, v in bad_options(n)])
def test_optimizer_bad_option_is_one_line(name, arg, value):
    with pytest.raises(UserError) as err:
        study_settings({"name": name, arg: value})
    text = one_line(err)
    assert f"{name} " in text and arg in text and text.startswith("<study>: ")


def test_unknown_optimizer_names_the_valid_ones():
    with pytest.raises(UserError) as err:
        study_settings("adamax")
    assert f'unknown optimizer "adamax"; valid: {", ".join(sorted(OPTIMIZERS))}' in one_line(err)


# ---------------------------------------------------------------- registered datasets

def idx_payloads(info, n: int = 12) -> dict[str, bytes]:
    """The four IDX files (decompressed) of a tiny dataset shaped like `info`."""
    height, width, _ = info.input_shape
    rng = np.random.default_rng(0)
    out = {}
    for split, count in (("train", n), ("test", n // 2)):
        out[f"{split}_images"] = idx_bytes(rng.integers(0, 256, (count, height, width), dtype=np.uint8))
        out[f"{split}_labels"] = idx_bytes((np.arange(count) % info.num_classes).astype(np.uint8))
    return out


def write_idx(info, directory: Path) -> dict[str, bytes]:
    payloads = idx_payloads(info)
    files = {}
    for key, data in payloads.items():
        files[key] = gzip.compress(data, mtime=0)
        (directory / info.files[key]).write_bytes(files[key])
    return {"decompressed": payloads, "served": files}


def write_cifar(info, directory: Path) -> dict[str, bytes]:
    layout = _LAYOUTS[info.format]
    rng = np.random.default_rng(0)
    members = {}
    for name in (*layout.train, layout.test):
        records = rng.integers(0, 256, (4, layout.label_bytes + PIXELS), dtype=np.uint8)
        records[:, layout.label_bytes - 1] = np.arange(4) * (info.num_classes - 1) // 3
        members[name] = records.tobytes()
    archive = cifar_archive_bytes(members)
    (directory / info.files["archive"]).write_bytes(archive)
    return {"decompressed": {"archive": archive}, "served": {"archive": archive}}


# format -> (writer of a tiny copy in that format, (train, test) images it holds)
WRITERS = {"idx": (write_idx, (12, 6)), "cifar10": (write_cifar, (20, 4)), "cifar100": (write_cifar, (4, 4))}


def pinned_to(info, written: dict[str, dict[str, bytes]]):
    """`info` with every digest it carries taken from the tiny copy instead of the real files."""
    sha = {k: hashlib.sha256(written["decompressed"][k]).hexdigest() for k in info.sha256}
    gz_sha = {k: hashlib.sha256(written["served"][k]).hexdigest() for k in info.gz_sha256}
    md5 = {k: hashlib.md5(written["served"][k]).hexdigest() for k in info.md5}
    sizes = {k: len(written["decompressed"][k]) for k in info.sizes}
    return dataclasses.replace(info, sha256=sha, gz_sha256=gz_sha, md5=md5, sizes=sizes, mirrors=())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_dataset_registry_entry_is_complete(name):
    info = get_info(name)
    assert info is REGISTRY[name] and info.name == name
    height, width, channels = info.input_shape
    assert height > 0 and width > 0 and channels in (1, 3)
    assert len(info.class_names) == info.num_classes == len(set(info.class_names)) >= 2
    assert all(c.strip() for c in info.class_names)
    assert info.format in WRITERS, f"no tiny writer for format {info.format}: add one to WRITERS"
    assert set(info.files) == (set(FILE_KEYS) if info.format == "idx" else {"archive"})
    for key in info.files:
        digests = [info.sha256.get(key), info.gz_sha256.get(key), info.md5.get(key)]
        assert any(digests), f"{name}/{key} has no checksum"
        assert info.sizes.get(key, 0) > 0
    assert all(re.fullmatch("[0-9a-f]{64}", d) for d in (*info.sha256.values(), *info.gz_sha256.values()))
    assert all(re.fullmatch("[0-9a-f]{32}", d) for d in info.md5.values())
    assert info.mirrors and all(base.startswith(("https://", "http://")) and base.endswith("/")
                                for base in info.mirrors)
    assert info.homepage and info.license


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_dataset_loads_a_tiny_copy_pinned_to_its_digests(name, tmp_path, monkeypatch):
    info = REGISTRY[name]
    writer, (n_train, n_test) = WRITERS[info.format]
    directory = tmp_path / "data" / name
    directory.mkdir(parents=True)
    written = writer(info, directory)
    monkeypatch.setitem(REGISTRY, name, pinned_to(info, written))
    ds = load_dataset(name, tmp_path / "data", download=False)
    height, width, channels = info.input_shape
    assert ds.x_train.shape == (n_train, channels, height, width) and ds.x_test.shape == (n_test, channels, height, width)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    labels = torch.cat([ds.y_train, ds.y_test])
    assert 0 <= int(labels.min()) and int(labels.max()) < info.num_classes and len(set(labels.tolist())) >= 2
    assert ds.info.class_names == info.class_names and ds.source_dir == directory


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_dataset_refuses_a_copy_that_is_not_the_real_one(name, tmp_path):
    info = REGISTRY[name]
    directory = tmp_path / name
    directory.mkdir()
    WRITERS[info.format][0](info, directory)
    with pytest.raises(UserError) as err:
        load_dataset(name, directory, download=False)
    text = one_line(err)
    assert str(directory) in text and ("not the real" in text or "not the published" in text), text


def test_unknown_dataset_lists_the_registry():
    with pytest.raises(UserError) as err:
        get_info("mnsit")
    assert f'valid: {", ".join(sorted(REGISTRY))} (did you mean "mnist"?)' in one_line(err)


# ---------------------------------------------------------------- source kinds

def folder_source(tmp_path: Path) -> tuple[dict, tuple[int, int, int], tuple[str, ...]]:
    write_image_folder(tmp_path / "imgs", per_class=5, size=(12, 12))
    return {"kind": "folder", "path": str(tmp_path / "imgs")}, (15, 3, 12), ("cat", "dog", "frog")


def npz_source(tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (12, 6, 6), dtype=np.uint8), y_train=np.arange(12) % 3,
             x_test=rng.integers(0, 256, (6, 6, 6), dtype=np.uint8), y_test=np.arange(6) % 3)
    return {"kind": "npz", "path": str(path)}, (18, 1, 6), ("0", "1", "2")


def csv_source(tmp_path: Path):
    rng = np.random.default_rng(0)
    rows = ["label," + ",".join(f"pixel{i}" for i in range(16))]
    rows += [",".join(map(str, [i % 3, *rng.integers(0, 256, 16)])) for i in range(15)]
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    return {"kind": "csv", "path": str(path), "size": [4, 4]}, (15, 1, 4), ("0", "1", "2")


def malformed_folder(tmp_path: Path) -> tuple[dict, Path, str]:
    source, _, _ = folder_source(tmp_path)
    bad = tmp_path / "imgs" / "dog" / "009.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return source, bad, "not an image Pillow can read"


def malformed_npz(tmp_path: Path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"PK\x03\x04 not a zip")
    return {"kind": "npz", "path": str(path)}, path, "not an NPZ file"


def malformed_csv(tmp_path: Path):
    source, _, _ = csv_source(tmp_path)
    path = Path(source["path"])
    lines = path.read_text().splitlines()
    lines[4] += ",7"
    path.write_text("\n".join(lines) + "\n")
    return source, path, "row 5 has 18 values, expected 17"


# kind -> (tiny source, (images, channels, size), classes); kind -> malformed source, the file it names, why
SOURCES = {"folder": folder_source, "npz": npz_source, "csv": csv_source}
MALFORMED = {"folder": malformed_folder, "npz": malformed_npz, "csv": malformed_csv}


@pytest.mark.parametrize("kind", KINDS)
def test_source_kind_loads_a_tiny_file(kind, tmp_path):
    assert kind in SOURCES, f"no tiny writer for source kind {kind}: add one to SOURCES"
    source, (n, channels, size), classes = SOURCES[kind](tmp_path)
    ds = load_dataset(source)
    assert len(ds.y_train) + len(ds.y_test) == n and len(ds.y_test) > 0
    assert ds.x_train.shape[1:] == (channels, size, size) and ds.x_train.dtype == torch.uint8
    assert ds.info.class_names == classes and ds.info.input_shape == (size, size, channels)
    assert ds.provenance["kind"] == kind and ds.provenance["dataset"].startswith(f"{kind}:")
    assert get_info(ds.provenance["dataset"]).class_names == classes  # the canonical spelling is complete


@pytest.mark.parametrize("kind", KINDS)
def test_source_kind_refuses_a_malformed_file_in_one_line(kind, tmp_path):
    assert kind in MALFORMED, f"no malformed example for source kind {kind}: add one to MALFORMED"
    source, path, why = MALFORMED[kind](tmp_path)
    with pytest.raises(UserError) as err:
        load_dataset(source)
    text = one_line(err)
    assert str(path) in text and why in text, text
