"""First and cached load of a generated 60,000-image 28x28 PNG folder (10 classes), in a temp dir.

    .venv/bin/python bench/folder_load.py [--images 60000]

Prints the generation time, the first load (Pillow decode + cache write) and the cached load, in seconds.
The decoded cache goes to a temp dir too ($CONVSTUDY_CACHE_DIR), so nothing of the user's is touched.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def generate(root: Path, images: int, classes: int = 10) -> None:
    """`images` random 28x28 greyscale PNGs spread evenly over `classes` class folders."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True)
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / f"class{i % classes}" / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CONVSTUDY_CACHE_DIR"] = str(Path(tmp) / "decoded")
        from convstudy.data import load_dataset  # after the cache dir is set

        root = Path(tmp) / "folder"
        start = time.perf_counter()
        generate(root, args.images)
        print(f"generated {args.images} PNGs in {time.perf_counter() - start:.1f} s")
        source = {"kind": "folder", "path": str(root), "channels": 1}
        for label in ("first load", "cached load", "cached load"):
            start = time.perf_counter()
            ds = load_dataset(source)
            seconds = time.perf_counter() - start
            print(f"{label}: {seconds:.2f} s ({ds.provenance['decoded_cache']}, "
                  f"{len(ds.y_train)} train + {len(ds.y_test)} test, {tuple(ds.x_train.shape[1:])})")


if __name__ == "__main__":
    main()
