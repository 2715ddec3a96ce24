"""Data sources: image folders, NPZ, CSV, CIFAR binary archives (local server only), the decoded cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cifar_archive_bytes, write_image_folder
from convstudy.cli import main
from convstudy.data import REGISTRY, canonical_dataset, get_info, load_dataset
from convstudy.errors import UserError
from convstudy.spec import ModelSpec, Study, build_study

MODEL = {"name": "rgb", "layers": ["conv(4,3)", "pool(2)", "flatten", "dense(3)"]}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "decoded"))


@pytest.fixture
def folder(tmp_path) -> Path:
    """3 classes of 32x32 RGB PNG/JPEG images, one of them greyscale, one corrupt."""
    root = tmp_path / "imgs"
    write_image_folder(root)
    Image.open(root / "dog" / "001.png").convert("L").save(root / "dog" / "001.png")
    (root / "frog" / "004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root


def folder_spec(root: Path, **extra) -> dict:
    return {"kind": "folder", "path": str(root), **extra}


# ---------------------------------------------------------------- folders

def test_corrupt_image_is_refused_naming_it(folder):
    with pytest.raises(UserError, match=r"frog/004\.png: .*skip_bad = true") as err:
        load_dataset(folder_spec(folder))
    assert "\n" not in str(err.value)


def test_skip_bad_loads_and_lists_skipped_in_one_warning(folder, caplog):
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(folder_spec(folder, skip_bad=True))
    assert ds.info.class_names == ("cat", "dog", "frog") and ds.info.input_shape == (32, 32, 3)
    assert ds.x_train.dtype.is_floating_point is False and ds.x_train.shape[1:] == (3, 32, 32)
    assert len(ds.y_train) + len(ds.y_test) == 17 and len(ds.y_test) == round(0.2 * 17)
    assert ds.provenance["skipped"][0][0] == "frog/004.png" and ds.provenance["converted"] == 1
    assert ds.provenance["split"] == {"test_fraction": 0.2, "split_seed": 0}
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and "frog/004.png" in lines[0] and "\n" not in lines[0]


def test_grey_image_is_replicated_into_rgb(tmp_path):
    root = tmp_path / "g"
    write_image_folder(root, per_class=5)
    grey = np.asarray(Image.open(root / "cat" / "000.png").convert("L"))
    Image.fromarray(grey).save(root / "cat" / "000.png")
    ds = load_dataset(folder_spec(root, test_fraction=0.4))
    all_x = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()])
    assert any((x == grey[None]).all() for x in all_x)  # all three channels equal the grey image
    one = load_dataset(folder_spec(root, channels=1, test_fraction=0.4))
    assert one.x_train.shape[1] == 1 and one.info.input_shape == (32, 32, 1)


def test_wrong_size_without_size_names_the_file_and_size_resizes(tmp_path):
    root = tmp_path / "s"
    write_image_folder(root, per_class=5)
    Image.new("RGB", (30, 28)).save(root / "dog" / "002.png")
    with pytest.raises(UserError, match=r"dog/002\.png: image is 28x30, .* 32x32; declare size"):
        load_dataset(folder_spec(root))
    ds = load_dataset(folder_spec(root, size=[24, 20]))
    assert ds.x_train.shape[1:] == (3, 24, 20)


def test_class_folder_without_images_is_refused(tmp_path):
    root = tmp_path / "e"
    write_image_folder(root, per_class=5)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"empty: class folder has no images"):
        load_dataset(folder_spec(root))


def test_train_test_layout_and_a_class_outside_the_classes(tmp_path):
    write_image_folder(tmp_path / "tt" / "train", per_class=4)
    write_image_folder(tmp_path / "tt" / "test", per_class=2, seed=3)
    ds = load_dataset(folder_spec(tmp_path / "tt"))
    assert len(ds.y_train) == 12 and len(ds.y_test) == 6 and ds.provenance["split"] == {"test": "folder"}
    write_image_folder(tmp_path / "tt" / "test", classes=("zebra",), per_class=1)
    with pytest.raises(UserError, match=r'test/zebra: class folder "zebra" is not among the classes'):
        load_dataset(folder_spec(tmp_path / "tt"))
    with pytest.raises(UserError, match=r'"frog" is not among the classes \(cat, dog\)'):
        load_dataset(folder_spec(tmp_path / "tt" / "train", classes=["cat", "dog"]))


def test_empty_split_is_refused(tmp_path):
    write_image_folder(tmp_path / "one", per_class=1)
    with pytest.raises(UserError, match="the test split is empty"):
        load_dataset(folder_spec(tmp_path / "one", test_fraction=0.1))


# ---------------------------------------------------------------- NPZ and CSV

def npz(path: Path, **arrays) -> Path:
    rng = np.random.default_rng(0)
    base = {"x_train": rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), "y_train": np.arange(20) % 4,
            "x_test": rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), "y_test": np.arange(8) % 4}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def test_npz_uint8_nhw_and_float_nhwc(tmp_path):
    ds = load_dataset({"kind": "npz", "path": str(npz(tmp_path / "a.npz"))})
    assert ds.x_train.shape == (20, 1, 8, 8) and ds.info.class_names == ("0", "1", "2", "3")
    x = np.random.default_rng(1).random((20, 8, 8, 3))
    ds = load_dataset(f"npz:{npz(tmp_path / 'b.npz', x_train=x, x_test=x[:8])},classes=a|b|c|d")
    assert ds.x_train.shape == (20, 3, 8, 8) and ds.info.class_names == ("a", "b", "c", "d")
    assert ds.x_train.numpy()[3, 1, 2, 5] == round(x[3, 2, 5, 1] * 255)


@pytest.mark.parametrize("arrays, message", [
    ({"y_test": None}, r"b\.npz: missing array y_test"),
    ({"y_train": np.arange(19) % 4}, r"x_train holds 20 images but y_train holds 19 labels"),
    ({"x_train": np.full((20, 8, 8), 1.5)}, r"floats outside \[0, 1\]"),
])
def test_bad_npz_is_one_line(tmp_path, arrays, message):
    with pytest.raises(UserError, match=message):
        load_dataset({"kind": "npz", "path": str(npz(tmp_path / "b.npz", **arrays))})


def test_npz_label_outside_the_classes(tmp_path):
    with pytest.raises(UserError, match=r"c\.npz: label 3 is outside the 3 classes"):
        load_dataset({"kind": "npz", "path": str(npz(tmp_path / "c.npz")), "classes": ["a", "b", "c"]})


def csv_file(path: Path, rows: list[list[int]], header: bool = True) -> Path:
    lines = (["label," + ",".join(f"pixel{i}" for i in range(len(rows[0]) - 1))] if header else [])
    path.write_text("\n".join(lines + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def kaggle_rows(n: int, pixels: int = 16) -> list[list[int]]:
    rng = np.random.default_rng(2)
    return [[i % 3, *rng.integers(0, 256, pixels).tolist()] for i in range(n)]


def test_csv_kaggle_form_with_declared_shape(tmp_path):
    rows = kaggle_rows(30)
    ds = load_dataset({"kind": "csv", "path": str(csv_file(tmp_path / "train.csv", rows)), "size": [4, 4]})
    assert ds.info.input_shape == (4, 4, 1) and ds.info.class_names == ("0", "1", "2")
    assert len(ds.y_train) == 24 and len(ds.y_test) == 6
    x = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()]).reshape(30, 16)
    assert sorted(map(tuple, x.tolist())) == sorted(tuple(r[1:]) for r in rows)


def test_csv_row_of_wrong_length_names_file_and_row(tmp_path):
    rows = kaggle_rows(5)
    rows[3] = rows[3][:-1]
    with pytest.raises(UserError, match=r"bad\.csv: row 5 has 16 values, expected 17"):
        load_dataset({"kind": "csv", "path": str(csv_file(tmp_path / "bad.csv", rows)), "size": [4, 4]})


def test_csv_label_outside_the_classes(tmp_path):
    path = csv_file(tmp_path / "l.csv", kaggle_rows(10), header=False)
    with pytest.raises(UserError, match=r"l\.csv: label 2 is outside the 2 classes \(no, yes\)"):
        load_dataset({"kind": "csv", "path": str(path), "size": [4, 4], "classes": ["no", "yes"]})


def test_csv_needs_a_declared_shape(tmp_path):
    with pytest.raises(UserError, match="needs its image shape"):
        load_dataset({"kind": "csv", "path": str(csv_file(tmp_path / "n.csv", kaggle_rows(4)))})


# ---------------------------------------------------------------- CIFAR binary archives

def cifar10_members(n: int, seed: int) -> tuple[dict[str, bytes], np.ndarray]:
    rng = np.random.default_rng(seed)
    records, members = [], {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        rec[:, 0] = np.arange(n) % 10
        records.append(rec)
        members[f"cifar-10-batches-bin/{name}"] = rec.tobytes()
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(REGISTRY["cifar10"].class_names).encode()
    return members, np.concatenate(records)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_cifar10_binary_archive_downloads_verifies_and_loads(tmp_path, server, monkeypatch):
    root, url = server
    members, records = cifar10_members(20, seed=5)
    archive = cifar_archive_bytes(members)
    (root / "cifar-10-binary.tar.gz").write_bytes(archive)
    info = dataclasses.replace(REGISTRY["cifar10"], mirrors=(url + "missing/", url),
                               md5={"archive": hashlib.md5(archive).hexdigest()}, sizes={"archive": len(archive)})
    monkeypatch.setitem(REGISTRY, "cifar10", info)
    ds = load_dataset("cifar10", tmp_path / "data")
    assert (tmp_path / "data" / "cifar-10-binary.tar.gz").read_bytes() == archive
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert ds.info.class_names[:2] == ("airplane", "automobile") and ds.info.input_shape == (32, 32, 3)
    assert ds.x_train.numpy()[21].reshape(-1).tolist() == records[21, 1:].tolist()  # R plane, G plane, B plane
    assert ds.y_test.tolist() == (np.arange(20) % 10).tolist()
    assert load_dataset("cifar10", tmp_path / "data").x_train.equal(ds.x_train)  # the decoded cache


def test_cifar10_checksum_mismatch_is_refused(tmp_path, server, monkeypatch):
    root, url = server
    (root / "cifar-10-binary.tar.gz").write_bytes(cifar_archive_bytes(cifar10_members(4, seed=6)[0]))
    monkeypatch.setitem(REGISTRY, "cifar10", dataclasses.replace(REGISTRY["cifar10"], mirrors=(url,)))
    with pytest.raises(UserError, match=r"cifar10: .*no mirror served a valid copy .*MD5 mismatch \(expected "
                                        r"c32a1d4ab5d03f1284b67883e8d87530"):
        load_dataset("cifar10", tmp_path / "data")
    assert not list((tmp_path / "data").iterdir())


def test_cifar_registry_pins_the_published_md5():
    assert get_info("cifar10").md5 == {"archive": "c32a1d4ab5d03f1284b67883e8d87530"}
    assert get_info("cifar100").md5 == {"archive": "03b5dce01913d631647c71ecec9e9cb8"}
    assert len(set(get_info("cifar100").class_names)) == 100
    assert all(url.endswith("/~kriz/") for url in get_info("cifar10").mirrors)


# ---------------------------------------------------------------- the decoded cache

def test_second_load_hits_the_cache_and_a_change_invalidates_it(tmp_path):
    root = tmp_path / "c"
    write_image_folder(root, per_class=5)
    first = load_dataset(folder_spec(root))
    assert first.provenance["decoded_cache"] == "miss"
    start = time.perf_counter()
    again = load_dataset(folder_spec(root))
    assert again.provenance["decoded_cache"] == "hit" and time.perf_counter() - start < 1.0
    assert again.x_train.equal(first.x_train) and again.y_test.equal(first.y_test)
    Image.new("RGB", (32, 32), (255, 255, 255)).save(root / "cat" / "000.png")
    changed = load_dataset(folder_spec(root))
    assert changed.provenance["decoded_cache"] == "miss" and not changed.x_train.equal(first.x_train)
    assert len(list((tmp_path / "decoded").iterdir())) == 1  # the stale entry was replaced


def test_damaged_cache_entry_is_a_miss_not_an_error(tmp_path):
    root = tmp_path / "d"
    write_image_folder(root, per_class=5)
    first = load_dataset(folder_spec(root))
    for npy in (tmp_path / "decoded").rglob("x_train.npy"):
        npy.write_bytes(b"garbage")
    again = load_dataset(folder_spec(root))
    assert again.provenance["decoded_cache"] == "miss" and again.x_train.equal(first.x_train)


# ---------------------------------------------------------------- spelling in studies

def test_table_json_compact_and_python_spell_the_same_source(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "imgs", per_class=5)
    monkeypatch.chdir(tmp_path)
    table = {"kind": "folder", "path": "imgs", "size": [32, 32], "channels": 3}
    spellings = [table, json.dumps(table), "folder:imgs,size=32x32,channels=3"]
    canon = {canonical_dataset(s) for s in spellings}
    assert len(canon) == 1
    (name,) = canon
    assert name.startswith(f"folder:{tmp_path / 'imgs'},size=32x32") and "classes=cat|dog|frog" in name
    study = build_study({"name": "s", "dataset": table, "models": [MODEL]}, source="s.toml")
    assert study.dataset == name and get_info(study.dataset).num_classes == 3
    assert Study(name="s", dataset=table, models=(ModelSpec(**MODEL),)).dataset == name
    # The stored spec describes its data without it: reports of a moved folder still know the classes.
    (tmp_path / "imgs").rename(tmp_path / "gone")
    again = build_study(study.to_dict(), source="study.db")
    assert again.fingerprint() == study.fingerprint() and get_info(again.dataset).class_names == ("cat", "dog", "frog")


@pytest.mark.parametrize("dataset, message", [
    ({"kind": "zip", "path": "x"}, r"s\.toml: dataset: kind must be one of folder, npz, csv"),
    ({"kind": "folder"}, r"s\.toml: dataset: folder needs path"),
    ({"kind": "folder", "path": "x", "colour": 3}, r'dataset: folder has no option "colour"'),
    ({"kind": "folder", "path": "x", "channels": 2}, r"dataset: channels must be 1 or 3"),
    ("folder:nowhere", r"s\.toml: .*nowhere: no such folder"),
    ("folder:x,size=0x3", r"size is \[height, width\]"),
    (7, r"s\.toml: dataset must be a registered name or a source table"),
])
def test_bad_source_spelling_is_one_line(tmp_path, monkeypatch, dataset, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        build_study({"name": "s", "dataset": dataset, "models": [MODEL]}, source="s.toml")


def test_model_must_match_the_sources_classes(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=2)
    model = {**MODEL, "layers": ["conv(4,3)", "flatten", "dense(10)"]}
    with pytest.raises(UserError, match=r"the last layer must be dense\(3\)"):
        build_study({"name": "s", "dataset": folder_spec(tmp_path / "imgs"), "models": [model]}, source="s.toml")


# ---------------------------------------------------------------- end to end

STUDY = """\
name = "pets"
dataset = {{kind = "folder", path = "{path}", size = [32, 32], channels = 3, skip_bad = {skip}}}
seeds = 1

[train]
epochs = 1
batch_size = 8

[[models]]
name = "rgb"
layers = ["conv(4,3)", "pool(2)", "flatten", "dense(3)"]
"""


def test_cli_trains_on_a_folder_and_reports_class_names(folder, tmp_path, one_thread, monkeypatch, capsys, caplog):
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "decoded"))
    study = tmp_path / "pets.toml"
    study.write_text(STUDY.format(path=folder, skip="false"))
    out = tmp_path / "out"
    run = ["run", str(study), "--out", str(out), "--quiet"]  # in this process: main() is the command
    assert main(run) == 2
    refused = capsys.readouterr().err
    assert "frog/004.png" in refused and len(refused.strip().splitlines()) == 1
    assert not out.exists()  # a data error touches no study directory
    study.write_text(STUDY.format(path=folder, skip="true"))
    assert main(run) == 0
    assert "skipped 1 bad image" in caplog.text  # the warning is logged (stderr, outside pytest)
    capsys.readouterr()
    assert main(["report", str(out), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "classes=cat|dog|frog" in doc["study"]["dataset"]
    assert doc["best_model"]["class_names"] == ["cat", "dog", "frog"]
    # The same study named on the command line, compact form: the same canonical source, so it resumes.
    assert main([*run, "--dataset", f"folder:{folder},size=32x32,channels=3,skip_bad=yes"]) == 0
    assert "nothing to run" in " ".join(capsys.readouterr().out.split())


def test_data_error_leaves_an_existing_study_directory_untouched(tmp_path, one_thread, monkeypatch, capsys):
    root = tmp_path / "imgs"
    write_image_folder(root, per_class=4)
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "decoded"))
    study = tmp_path / "pets.toml"
    study.write_text(STUDY.format(path=root, skip="false"))
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--quiet"]) == 0  # in this process: main() is the command
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    for image in (root / "dog").iterdir():
        image.unlink()
    capsys.readouterr()
    assert main(["run", str(study), "--out", str(out), "--quiet", "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "dog: class folder has no images" in err, err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before


def test_yaml_study_spells_the_source_as_a_mapping(tmp_path, monkeypatch):
    from convstudy.spec import load_study_file

    write_image_folder(tmp_path / "imgs", per_class=3)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndataset:\n  kind: folder\n  path: imgs\n  size: [16, 16]\n  channels: 1\n"
                    "models:\n  - name: rgb\n    layers: [\"conv(4,3)\", flatten, \"dense(3)\"]\n")
    study = load_study_file(path)
    assert study.dataset == canonical_dataset("folder:imgs,size=16x16,channels=1")
    assert get_info(study.dataset).input_shape == (16, 16, 1)


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_cli_trains_on_npz_and_csv_sources(tmp_path, kind, capsys):
    from convstudy.cli import main

    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    y = np.arange(60) % 3
    if kind == "npz":
        np.savez(tmp_path / "d.npz", x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:])
        source = f'{{kind = "npz", path = "{tmp_path / "d.npz"}", classes = ["a", "b", "c"]}}'
    else:
        csv_file(tmp_path / "d.csv", [[int(label), *img.reshape(-1).tolist()] for img, label in zip(x, y)])
        source = f'{{kind = "csv", path = "{tmp_path / "d.csv"}", size = [8, 8], classes = ["a", "b", "c"]}}'
    study = tmp_path / "s.toml"
    study.write_text(STUDY.replace('{{kind = "folder", path = "{path}", size = [32, 32], channels = 3, '
                                   'skip_bad = {skip}}}', source).replace("conv(4,3)", "conv(2,3)"))
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"]["dataset"].startswith(f"{kind}:") and doc["best_model"]["class_names"] == ["a", "b", "c"]


def test_truncated_jpeg_is_refused_naming_it(tmp_path):
    root = tmp_path / "t"
    write_image_folder(root, per_class=4)
    jpeg = root / "cat" / "002.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    with pytest.raises(UserError, match=r"cat/002\.jpg: corrupt or truncated image"):
        load_dataset(folder_spec(root))


def test_cifar100_binary_records_use_the_fine_label(tmp_path):
    from convstudy.data.cifar import _LAYOUTS, parse_archive

    rng = np.random.default_rng(7)
    train = rng.integers(0, 256, (6, 3074), dtype=np.uint8)
    train[:, 0], train[:, 1] = 19, [0, 5, 99, 42, 7, 1]  # (coarse, fine)
    test = rng.integers(0, 256, (2, 3074), dtype=np.uint8)
    test[:, 1] = [3, 4]
    archive = tmp_path / "cifar-100-binary.tar.gz"
    archive.write_bytes(cifar_archive_bytes({"cifar-100-binary/train.bin": train.tobytes(),
                                             "cifar-100-binary/test.bin": test.tobytes()}))
    arrays = parse_archive(archive, _LAYOUTS["cifar100"], 100)
    assert arrays["y_train"].tolist() == [0, 5, 99, 42, 7, 1] and arrays["y_test"].tolist() == [3, 4]
    assert arrays["x_train"].shape == (6, 3, 32, 32) and arrays["x_train"][2].reshape(-1).tolist() == train[2, 2:].tolist()
    python_version = tmp_path / "cifar-100-python.tar.gz"
    python_version.write_bytes(cifar_archive_bytes({"cifar-100-python/train": b"pickle"}))
    with pytest.raises(UserError, match="missing cifar-100-binary/test.bin, cifar-100-binary/train.bin; is this the "
                                        "binary version"):
        parse_archive(python_version, _LAYOUTS["cifar100"], 100)


def test_compact_spelling_escapes_commas_and_bars(tmp_path):
    root = tmp_path / "a,b=c"
    write_image_folder(root, classes=("x|y", "z"), per_class=3)
    name = canonical_dataset({"kind": "folder", "path": str(root)})
    assert "a%2Cb%3Dc" in name and "classes=x%7Cy|z" in name
    assert get_info(name).class_names == ("x|y", "z") and get_info(name).homepage == str(root)
    assert len(load_dataset(name).y_train) + len(load_dataset(name).y_test) == 6


def test_the_readmes_compact_classes_example_is_the_table_it_documents(tmp_path, monkeypatch):
    """Issue 25 item 12: the compact `classes=` separator `|` was undocumented; README's example of it parses to
    the same source as the table, and the escapes it documents are the ones the parser reads."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    own_data = readme[readme.index("## Your own data"):readme.index("## Results on MNIST")]
    (example,) = [line.split("--dataset ")[1].strip("'") for line in own_data.splitlines() if "classes=cat|dog" in line
                  and "--dataset" in line]
    assert "`classes=a%7Cb|c` is the classes `a|b` and `c`" in own_data
    write_image_folder(tmp_path / "data" / "pets", classes=("cat", "dog"), per_class=3)
    write_image_folder(tmp_path / "odd", classes=("c", "a|b"), per_class=3)
    monkeypatch.chdir(tmp_path)
    table = {"kind": "folder", "path": "data/pets", "size": [32, 32], "classes": ["cat", "dog"]}
    assert canonical_dataset(example) == canonical_dataset(table)
    assert get_info(canonical_dataset("folder:odd,classes=a%7Cb|c")).class_names == ("a|b", "c")
