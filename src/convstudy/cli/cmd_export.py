"""`convstudy export OUT --model NAME --format onnx|safetensors -o FILE`: a trained trial out, with a model card."""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from pathlib import Path

from convstudy.cli.options import add_command, add_data_dir


def register(sub) -> None:
    p = add_command(sub, "export", "export a trained model as ONNX or safetensors, with a model card",
                    "Export one trial's final weights. ONNX files take float32 images [batch, C, H, W] of the "
                    "study's shape (pixel/255; a normalize = \"channel\" model's per-channel mean/std is built in) "
                    "and return probabilities; the export is checked with onnxruntime against PyTorch on 256 test "
                    "images. A Markdown model card is written beside FILE (FILE.md).", run, weights=True)
    p.add_argument("--format", required=True, choices=("onnx", "safetensors"))
    p.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    add_data_dir(p)  # where the check images are; default: the data directory of the study's last run


def run(args: argparse.Namespace) -> int:
    from convstudy.cli.outputs import check_output
    from convstudy.deploy.card import card_path, write_card
    from convstudy.deploy.export import ExportCheckFailed, check_inputs, export_onnx, export_safetensors
    from convstudy.deploy.predict import load_trained
    from convstudy.errors import UserError
    from convstudy.report import collect
    from convstudy.store import StudyStore

    check_output(args.output)
    check_output(card_path(args.output), "model card")
    with closing(StudyStore.open_existing(args.out)) as store:
        trained = load_trained(store, args.model, args.seed)
        try:
            if args.format == "onnx":
                x, source = check_inputs(store, args.data_dir)
                check = export_onnx(trained, args.output, x, source).sentence()
            else:
                export_safetensors(trained, args.output, store)
                check = "weights read back bit-identical; spec, input shape and class names in the metadata"
        except ExportCheckFailed as exc:
            print(f"convstudy: export check failed, nothing written: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            raise UserError(f"-o {args.output}: cannot write ({exc.strerror or exc})") from None
        try:
            card = write_card(trained, collect(store), args.output, "ONNX" if args.format == "onnx" else "safetensors",
                              check)
        except OSError as exc:
            raise UserError(f"model card {card_path(args.output)}: cannot write ({exc.strerror or exc})") from None
    size = args.output.stat().st_size / 1e6
    print(f'exported model "{trained.spec.name}" seed {trained.seed} to {args.output} ({size:.1f} MB)')
    print(check)
    print(f"model card: {card}")
    return 0
