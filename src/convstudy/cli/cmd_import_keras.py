"""`convstudy import-keras MODEL.json`: a Keras Sequential model as a study file convstudy can train."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("import-keras", help="turn a Keras Sequential model.to_json() file into a study file",
                       description="Read a Keras 2 or Keras 3 Sequential model.to_json() file and write the "
                                   "equivalent one-model study (TOML). Unsupported layers or options are refused.")
    p.add_argument("model_json", metavar="MODEL.json", type=Path)
    p.add_argument("--name", help="model name in the study (default: the Keras model's name, else the file name)")
    p.add_argument("--dataset", default="mnist", help="the study's dataset: a registered name (default: mnist) or a "
                   "source such as folder:imgs,size=32x32,channels=3")
    p.add_argument("-o", "--output", type=Path, metavar="STUDY.toml", help="write here instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.data import get_info
    from convstudy.errors import UserError
    from convstudy.keras import import_keras, study_toml
    from convstudy.model import summarize_model

    study_name = None
    if args.output is not None:
        if args.output.exists() and not args.force:
            raise UserError(f"{args.output}: exists; choose another path or pass --force")
        if args.output.suffix.lower() != ".toml":
            raise UserError(f"{args.output}: the study file is TOML; name it *.toml")
        study_name = re.sub(r"[^A-Za-z0-9_.+-]", "-", args.output.stem).lstrip("_.+-")[:64] or None
    study = import_keras(args.model_json, name=args.name, dataset=args.dataset, study_name=study_name)
    text = study_toml(study)
    model = study.models[0]
    summary = summarize_model(model, get_info(study.dataset).input_shape)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text)
        except OSError as exc:
            raise UserError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
    where = args.output or "stdout"
    print(f'{where}: model "{model.name}", {len(model.layers)} layers, {summary.total_params:,} params '
          f"({summary.trainable_params:,} trainable). Training settings are convstudy's defaults unless the JSON "
          f"carried a compiled optimizer; edit [train] as needed, then: convstudy run {args.output or 'STUDY.toml'}",
          file=sys.stderr)
    return 0
