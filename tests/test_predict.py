"""predict: MNIST-style preprocessing of arbitrary images, and a model trained here reading fresh digits.

The fixture renders digits with Pillow's bundled font as white-on-black 28x28 images (through the same
preprocessing `predict` uses), trains a small CNN on them through `run_study`, then the tests draw new
PNG/JPEG files of other sizes and colours, most with a light background that must be inverted.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx_dataset
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console

from convstudy.cli import main
from convstudy.data import REGISTRY
from convstudy.executors import RunOptions, run_study
from convstudy.deploy.images import ImageError, expand_paths, load_digit, mnist_style, read_gray
from convstudy.spec import build_study


def render(digit: int, size: int, canvas: tuple[int, int], bg, fg, at=(0.5, 0.5), stroke: int = 0,
           angle: float = 0.0, mode: str = "L") -> Image.Image:
    """`digit` in Pillow's default font, centred at fraction `at` of the canvas."""
    img = Image.new(mode, canvas, bg)
    ImageDraw.Draw(img).text((canvas[0] * at[0], canvas[1] * at[1]), str(digit), fill=fg,
                             font=ImageFont.load_default(size=size), anchor="mm", stroke_width=stroke, stroke_fill=fg)
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=bg) if angle else img


def rendered_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` MNIST-style digits in varied sizes, weights, offsets and slants, white on black like MNIST."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, digit in enumerate(labels):
        img = render(int(digit), int(rng.integers(16, 36)), (40, 40), 0, int(rng.integers(160, 256)),
                     at=tuple(0.5 + rng.uniform(-0.12, 0.12, 2)), stroke=int(rng.integers(0, 2)),
                     angle=float(rng.uniform(-12, 12)))
        images[i] = mnist_style(np.asarray(img, dtype=np.float32))
    return images, labels


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """A study directory holding model "reader" trained (3 epochs, ~10 s on one core) to read rendered digits."""
    root = tmp_path_factory.mktemp("rendered")
    data_dir = root / "mnist"
    data_dir.mkdir()
    digests = write_idx_dataset(data_dir, *rendered_digits(2000, seed=0), *rendered_digits(200, seed=1))
    study = build_study({
        "name": "reader", "dataset": "mnist", "seeds": [0],
        "train": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "validation": "test"},
        "models": [{"name": "reader", "layers": ["conv(16,3)", "pool(2)", "conv(32,3)", "pool(2)", "flatten",
                                                 "dense(64)", "dense(10)"]}],
    })
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(REGISTRY, "mnist", dataclasses.replace(REGISTRY["mnist"], sha256=digests, mirrors=()))
        torch.set_num_threads(1)  # small convolutions gain nothing from threads on a shared machine
        try:
            store, finished = run_study(study, RunOptions(out=root / "out", data_dir=str(data_dir), device="cpu",
                                                          quiet=True), Console(file=io.StringIO()))
        finally:
            torch.set_num_threads(threads)
    assert finished
    store.close()
    return root / "out"


def fresh_digit_files(folder: Path) -> dict[Path, int]:
    """New drawings unlike the training renders: bigger, coloured, mostly dark ink on light paper."""
    folder.mkdir()
    files = {}
    for d in range(10):
        path = folder / f"paper-{d}.png"  # dark blue ink on cream paper, off-centre
        render(d, 48, (90, 70), (235, 225, 200), (30, 40, 110), at=(0.4, 0.55), stroke=3, mode="RGB").save(path)
        files[path] = d
    for d in (3, 7):
        path = folder / f"scan-{d}.jpg"  # large black-on-white JPEG
        render(d, 120, (200, 260), (255, 255, 255), (0, 0, 0), stroke=7, mode="RGB").save(path, quality=90)
        files[path] = d
    path = folder / "chalk-5.png"  # yellow on near-black: already light-on-dark, no inversion
    render(5, 30, (50, 50), (20, 20, 20), (250, 250, 0), stroke=1, mode="RGB").save(path)
    files[path] = 5
    return files


def test_predict_reads_fresh_digits_and_reports_bad_files_one_line_each(reader, tmp_path, capsys):
    files = fresh_digit_files(tmp_path / "imgs")
    corrupt = tmp_path / "imgs" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    names = [str(p) for p in files]
    code = main(["predict", str(reader), "--model", "reader", names[0], str(corrupt), *names[1:], "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 2  # some input was bad; everything else was still predicted
    result = json.loads(out)
    got = {Path(r["file"]): int(r["top"][0]["class"]) for r in result["predictions"]}
    assert got == files
    for r in result["predictions"]:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 <= probs[-1] and probs[0] <= 1
    assert [e["file"] for e in result["errors"]] == [str(corrupt)]
    error_lines = [line for line in err.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "corrupt.png" in error_lines[0] and "cannot read image" in error_lines[0]


def test_predict_directory_csv_and_table(reader, tmp_path, capsys):
    files = fresh_digit_files(tmp_path / "imgs")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image, and not an image suffix: skipped")
    assert main(["predict", str(reader), "--model", "reader", "--seed", "0", str(tmp_path / "imgs"),
                 "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "file,class_1,probability_1,class_2,probability_2,class_3,probability_3"
    rows = {Path(line.split(",")[0]): int(line.split(",")[1]) for line in lines[1:]}
    assert rows == files
    assert main(["predict", str(reader), "--model", "reader", str(next(iter(files)))]) == 0
    assert "paper-0.png" in capsys.readouterr().out


def test_predict_csv_neutralises_a_file_name_a_spreadsheet_would_run(reader, tmp_path, capsys, monkeypatch):
    """Issue 25 item 12: a cell starting with = + - @ (CSV injection) gets OWASP's leading '."""
    monkeypatch.chdir(tmp_path)
    for name in ("=1+2.png", "@SUM(A1).png", "-2+3.png"):
        render(7, 30, (40, 40), 255, 0).save(tmp_path / name)
    assert main(["predict", str(reader), "--model", "reader", "--format", "csv", "--", "=1+2.png", "@SUM(A1).png",
                 "-2+3.png"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["'=1+2.png", "'@SUM(A1).png", "'-2+3.png"]


@pytest.mark.parametrize("argv, words", [
    (["--model", "nope"], ['no model "nope"', "reader"]),
    (["--model", "reader", "--seed", "4"], ["seed 4", "complete seeds: 0"]),
])
def test_predict_user_mistakes_are_one_line(reader, tmp_path, capsys, argv, words):
    img = tmp_path / "x.png"
    render(1, 30, (40, 40), 255, 0).save(img)
    assert main(["predict", str(reader), *argv, str(img)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words)


# ---------------------------------------------------------------- preprocessing alone

def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / a.sum()), float((xs * a).sum() / a.sum())


def test_light_background_is_inverted_and_digit_is_boxed_and_centred():
    img = render(4, 60, (150, 90), 240, 10, at=(0.8, 0.3))
    out = mnist_style(np.asarray(img, dtype=np.float32))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and out[0].max() == 0 and out[:, 0].max() == 0  # light ink, black border
    rows, cols = np.nonzero(out)
    assert max(np.ptp(rows) + 1, np.ptp(cols) + 1) <= 21  # fitted into 20x20 (+1 for resampling spill)
    cy, cx = centre_of_mass(out.astype(float))
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_aspect_ratio_is_kept():
    tall = np.zeros((120, 100), dtype=np.float32)
    tall[10:110, 45:55] = 255  # a 100x10 bar: becomes 20 high, 2 wide
    out = mnist_style(tall)
    rows, cols = np.nonzero(out > 128)
    assert np.ptp(rows) + 1 == 20 and 1 <= np.ptp(cols) + 1 <= 3


def test_same_digit_light_or_dark_preprocesses_alike():
    dark = render(8, 40, (60, 60), 0, 255)
    light = render(8, 40, (60, 60), 255, 0)
    a = mnist_style(np.asarray(dark, dtype=np.float32)).astype(int)
    b = mnist_style(np.asarray(light, dtype=np.float32)).astype(int)
    assert np.abs(a - b).max() <= 2


def test_transparent_drawing_uses_its_strokes(tmp_path):
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(32, 8), (32, 56)], fill=(0, 0, 0, 255), width=6)  # black strokes on transparency
    path = tmp_path / "drawn.png"
    img.save(path)
    out = load_digit(path)
    assert out.max() == 255 and out[0].max() == 0
    rows, _ = np.nonzero(out > 128)
    assert np.ptp(rows) + 1 == 20


def test_sixteen_bit_png_reads(tmp_path):
    arr = np.zeros((40, 40), dtype=np.uint16)
    arr[5:35, 18:22] = 60000
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert read_gray(path).max() == pytest.approx(255.0)
    assert load_digit(path).max() == 255


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot read image"), (b"GIF89a\x01", "cannot read image"), (None, "blank image"),
])
def test_unreadable_or_blank_images_raise_one_line(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is None:
        Image.new("L", (30, 30), 200).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        load_digit(path)
    assert "\n" not in str(info.value)


def test_truncated_png_is_an_image_error(tmp_path):
    path = tmp_path / "cut.png"
    render(2, 40, (60, 60), 255, 0).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageError):
        load_digit(path)


def test_expand_paths_keeps_order_and_skips_non_images(tmp_path):
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    (tmp_path / "readme.md").write_text("x")
    single = tmp_path / "z.dat"
    single.write_bytes(b"")
    assert expand_paths([single, tmp_path]) == [single, tmp_path / "a.JPG", tmp_path / "b.png"]
