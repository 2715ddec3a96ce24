"""`convstudy predict OUT --model NAME IMAGES...`: top-3 classes of image files with a trained trial."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing

from rich.console import Console
from rich.table import Table

from convstudy.cli.options import add_command

TOP = 3


def register(sub) -> None:
    p = add_command(sub, "predict", "classify PNG/JPEG files (or directories of them) with a trained model",
                    "Prepare images as the model's training data was and print each file's top-3 classes. For a "
                    "described source or CIFAR: converted to the model's channels (RGB kept; grey to RGB or RGB to "
                    "grey explicitly) and resized to its size; for MNIST-like datasets: grayscale, light background "
                    "inverted, fitted into 20x20, centred by mass in 28x28. Then /255 (and the training split's "
                    "mean/std for a normalize = \"channel\" model). Unreadable images get one error line each (exit "
                    "status 2); the rest are still predicted.", run, weights=True)
    p.add_argument("images", metavar="IMAGES", nargs="+", help="image files or directories")
    p.add_argument("--format", default="table", choices=("table", "json", "csv"))


def run(args: argparse.Namespace) -> int:
    from convstudy.deploy.images import expand_paths
    from convstudy.deploy.predict import load_trained, predict_files
    from convstudy.errors import UserError
    from convstudy.report.markup import csv_text
    from convstudy.store import StudyStore

    with closing(StudyStore.open_existing(args.out)) as store:
        trained = load_trained(store, args.model, args.seed)
    paths = expand_paths(args.images)
    if not paths:
        raise UserError(f"no image files in {', '.join(args.images)} (looked for .png, .jpg, .jpeg, ...)")
    result = predict_files(trained, paths, TOP)  # every image decoded before anything is printed
    if result.rows:  # with no image readable, each error is the one line it would be alone
        acc = f", test accuracy {trained.test_accuracy:.2%}" if trained.test_accuracy is not None else ""
        print(f'model "{trained.spec.name}" seed {trained.seed}{acc}', file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(json.dumps({
            "model": trained.spec.name, "seed": trained.seed,
            "predictions": [{"file": str(p), "top": [{"class": c, "probability": pr} for c, pr in top]}
                            for p, top in result.rows],
            "errors": [{"file": str(p), "error": e} for p, e in result.errors],
        }, indent=2) + "\n")
    elif args.format == "csv":
        header = ["file"] + [f"{key}_{i}" for i in range(1, TOP + 1) for key in ("class", "probability")]
        rows = [[str(p)] + [v for c, pr in top for v in (c, f"{pr:.6f}")] for p, top in result.rows]
        sys.stdout.write(csv_text([header, *rows], lineterminator="\n"))
    elif result.rows:
        table = Table(show_edge=False)
        table.add_column("file", overflow="fold")
        for i in range(1, TOP + 1):
            table.add_column(f"#{i}", justify="right")
        for p, top in result.rows:
            table.add_row(str(p), *(f"{c} {pr:6.1%}" for c, pr in top))
        Console(highlight=False).print(table)
    for p, err in result.errors:
        print(f"convstudy: error: {p}: {err}", file=sys.stderr)
    return 2 if result.errors else 0
