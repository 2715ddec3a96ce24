"""Colour and size everywhere (issue 16, acceptance 1): an RGB folder study trained from the CLI, its reports,
`predict` and the ONNX/safetensors export, all fed what training fed the model.

tests/test_data_sources.py already has the folder refused for its corrupt image and trained once it may skip
it (report.json's class names); this file adds the reports' confusion matrices, predict and export, on a
normalize = "channel" model so the training split's mean/std must reach them too.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from PIL import Image

from convstudy.cli import main
from convstudy.data import load_dataset
from convstudy.deploy.export import TOLERANCE, load_exported
from convstudy.deploy.images import ImageError, load_image
from convstudy.deploy.predict import load_trained
from convstudy.store import StudyStore, save_tensors
from convstudy.train import channel_stats, make_trial_data

# One xdist worker runs this file (`--dist loadgroup`), and its costly fixtures are session-scoped, so each is
# built once: a worker may run other files' tests in between, which would tear module fixtures down.
pytestmark = pytest.mark.xdist_group("test_colour")

CLASSES = ["cat", "dog", "frog"]
STUDY = """\
name = "pets"
dataset = {{kind = "folder", path = "{path}", size = [32, 32], channels = 3, skip_bad = true}}
seeds = 1

[train]
epochs = 1
batch_size = 8
normalize = "channel"

[[models]]
name = "rgb"
layers = ["conv(4,3)", "pool(2)", "flatten", "dense(3)"]
"""


@pytest.fixture(scope="session")
def rgb(tmp_path_factory):
    """A dozen 32x32 RGB PNG/JPEG images per class (one greyscale, one corrupt), trained 1 epoch from the CLI."""
    root = tmp_path_factory.mktemp("colour")
    imgs = root / "imgs"
    write_image_folder(imgs, per_class=12)
    Image.open(imgs / "dog" / "001.png").convert("L").save(imgs / "dog" / "001.png")
    (imgs / "frog" / "004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    study = root / "pets.toml"
    study.write_text(STUDY.format(path=imgs))
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVSTUDY_CACHE_DIR", str(root / "decoded"))
        torch.set_num_threads(1)  # tiny convolutions gain nothing from threads on a shared machine
        try:
            assert main(["run", str(study), "--out", str(root / "out"), "--quiet", "--device", "cpu"]) == 0
        finally:
            torch.set_num_threads(threads)
    return SimpleNamespace(root=root, imgs=imgs, out=root / "out")


@pytest.fixture(autouse=True)
def _cache(rgb, monkeypatch):
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(rgb.root / "decoded"))


def files(rgb) -> list[Path]:
    """An RGB PNG, an RGB JPEG, the greyscale PNG and a larger RGB image (resized), each of a different class."""
    big = rgb.root / "big.png"
    if not big.exists():
        Image.open(rgb.imgs / "frog" / "000.png").resize((48, 40)).save(big)
    return [rgb.imgs / "cat" / "000.png", rgb.imgs / "cat" / "002.jpg", rgb.imgs / "dog" / "001.png", big]


def pixels(path: Path) -> np.ndarray:
    """The file as RGB uint8 [3, 32, 32], decoded here with Pillow alone (not through convstudy)."""
    img = Image.open(path).convert("RGB")
    if img.size != (32, 32):
        img = img.resize((32, 32), Image.Resampling.BILINEAR)
    return np.asarray(img).transpose(2, 0, 1)


def predict_json(rgb, paths, capsys) -> tuple[int, dict, str]:
    code = main(["predict", str(rgb.out), "--model", "rgb", *map(str, paths), "--format", "json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_reports_show_the_class_names_in_the_confusion_matrix(rgb):
    md = (rgb.out / "report.md").read_text()
    assert "| true \\ predicted | cat | dog | frog |" in md
    rows = [line for line in md.splitlines() if line.startswith(("| cat |", "| dog |", "| frog |"))]
    assert len(rows) == 3
    report = json.loads((rgb.out / "report.json").read_text())
    confusion = report["best_model"]["confusion"]
    assert sum(map(sum, confusion)) == report["best_model"]["n_test"] == 7  # 35 readable images, 20% test
    assert rows[1] == "| dog | " + " | ".join(map(str, confusion[1])) + " |"
    html = (rgb.out / "report.html").read_text()
    assert "<thead><tr><th></th><th>cat</th><th>dog</th><th>frog</th></tr></thead>" in html
    assert all(f"<tr><th>{name}</th>" in html for name in CLASSES)


def test_weights_record_the_training_splits_channel_statistics(rgb):
    store = StudyStore.open_existing(rgb.out)
    try:
        trained = load_trained(store, "rgb")
        ds = load_dataset(store.study.dataset)
    finally:
        store.close()
    # Recomputed independently from the same split: the numbers training standardised with, bit for bit.
    mean, std = channel_stats(make_trial_data(ds, trained.settings, torch.device("cpu")).train.x)
    assert trained.norm is not None and torch.equal(trained.norm[0], mean) and torch.equal(trained.norm[1], std)
    assert mean.shape == (1, 3, 1, 1) and not torch.equal(mean[0, 0], mean[0, 1])  # three channels of their own


def test_predict_keeps_colour_resizes_and_standardises_like_training(rgb, capsys):
    paths = files(rgb)
    corrupt = rgb.imgs / "frog" / "004.png"
    code, result, err = predict_json(rgb, [*paths, corrupt], capsys)
    assert code == 2  # the corrupt file; the others are still predicted
    assert [e["file"] for e in result["errors"]] == [str(corrupt)]
    assert [line for line in err.splitlines() if "error" in line] == [
        f"convstudy: error: {corrupt}: {result['errors'][0]['error']}"]
    store = StudyStore.open_existing(rgb.out)
    trained = load_trained(store, "rgb")
    store.close()
    x = torch.from_numpy(np.stack([pixels(p) for p in paths])).float() / 255
    with torch.no_grad():
        want = torch.softmax(trained.module((x - trained.norm[0]) / trained.norm[1]), 1)
        unnormalised = torch.softmax(trained.module(x), 1)
    for row, ref, raw in zip(result["predictions"], want, unnormalised):
        got = {t["class"]: t["probability"] for t in row["top"]}
        assert sorted(got) == CLASSES  # the folder's class names, all three of them (top-3 of 3)
        assert [got[c] for c in CLASSES] == pytest.approx(ref.tolist(), abs=1e-6)
        assert [got[c] for c in CLASSES] != pytest.approx(raw.tolist(), abs=1e-3)  # /255 alone is not it


def test_load_image_converts_colour_explicitly_and_resizes(rgb, tmp_path):
    grey = rgb.imgs / "dog" / "001.png"
    as_rgb = load_image(grey, (32, 32, 3), digits=False)
    plain = np.asarray(Image.open(grey))
    assert as_rgb.shape == (3, 32, 32) and all(np.array_equal(as_rgb[c], plain) for c in range(3))
    colour = rgb.imgs / "cat" / "000.png"
    kept = load_image(colour, (32, 32, 3), digits=False)
    assert np.array_equal(kept, np.asarray(Image.open(colour)).transpose(2, 0, 1))
    as_grey = load_image(colour, (16, 20, 1), digits=False)
    want = np.asarray(Image.open(colour).convert("L").resize((20, 16), Image.Resampling.BILINEAR))
    assert as_grey.shape == (1, 16, 20) and np.array_equal(as_grey[0], want)
    assert load_image(colour, (28, 28, 1), digits=True).shape == (1, 28, 28)  # MNIST-like: the digit recipe
    for path, reason in ((tmp_path / "missing.png", "no such image file"), (rgb.imgs / "frog" / "004.png", "cannot read")):
        with pytest.raises(ImageError, match=reason):
            load_image(path, (32, 32, 3), digits=False)


def test_onnx_export_takes_rgb_pixels_over_255_and_matches_predict(rgb, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    target = tmp_path / "rgb.onnx"
    assert main(["export", str(rgb.out), "--model", "rgb", "--format", "onnx", "-o", str(target)]) == 0
    out = capsys.readouterr().out
    assert "parity check passed" in out and "on 7 test images" in out
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [3, 32, 32]
    paths = files(rgb)
    x = np.stack([pixels(p) for p in paths]).astype(np.float32) / 255  # raw pixels / 255: no mean/std by hand
    theirs = session.run(None, {inp.name: x})[0]
    _, result, _ = predict_json(rgb, paths, capsys)
    ours = np.array([[{t["class"]: t["probability"] for t in r["top"]}[c] for c in CLASSES]
                     for r in result["predictions"]])
    assert np.abs(theirs - ours).max() < TOLERANCE
    card = (tmp_path / "rgb.onnx.md").read_text()
    assert "`[batch, 3, 32, 32]` (RGB), pixel / 255, then standardised per channel" in card
    assert "built into this file" in card and "over classes cat, dog, frog" in card
    # safetensors: the weights alone, the statistics in the metadata; load_exported puts them back in front.
    weights = tmp_path / "rgb.safetensors"
    assert main(["export", str(rgb.out), "--model", "rgb", "--format", "safetensors", "-o", str(weights)]) == 0
    module, meta = load_exported(weights)
    assert json.loads(meta["class_names"]) == CLASSES and len(json.loads(meta["normalize"])["mean"]) == 3
    with torch.no_grad():
        assert np.abs(torch.softmax(module(torch.from_numpy(x)), 1).numpy() - ours).max() < 1e-6


def test_channel_model_whose_weights_lack_the_statistics_is_one_line(rgb, tmp_path, capsys):
    """Weights written before convstudy recorded mean/std: refused, not silently fed /255 alone."""
    out = tmp_path / "old"
    shutil.copytree(rgb.out, out)
    store = StudyStore.open_existing(out)
    path, owner = store.weights_path("rgb", 0), store.owner("rgb", 0)
    weights, _ = store.load_weights("rgb", 0)
    store.close()
    digest = save_tensors(path, weights, owner=owner)
    with sqlite3.connect(out / "study.db") as db:
        db.execute("UPDATE trials SET weights_digest = ? WHERE model = 'rgb'", (digest,))
    db.close()
    assert main(["predict", str(out), "--model", "rgb", str(files(rgb)[0])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'normalize = "channel"' in err[0] and "train the trial again" in err[0]
