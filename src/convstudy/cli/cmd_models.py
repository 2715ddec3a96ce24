"""`convstudy models STUDY`: each model as Keras's summary() shows it, from the spec alone."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from convstudy.cli.options import add_selection, selected


def register(sub) -> None:
    p = sub.add_parser("models", help="show a study's models: layers, output shapes, params, MFLOPs")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--format", default="table", choices=("table", "json"))
    p.add_argument("--dataset", metavar="NAME|SOURCE",
                   help="infer shapes for another dataset, as `run --dataset` moves the study onto it")
    add_selection(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.data import get_info
    from convstudy.model import summarize_model
    from convstudy.spec import resolve_study, summarize
    from convstudy.spec.space import level_text

    study = resolve_study(args.study, args.dataset)
    info = get_info(study.dataset)
    names = selected(study, args)
    models = []
    for spec in study.models:
        if names is not None and spec.name not in names:
            continue
        s = summarize_model(spec, info.input_shape)
        models.append({
            "name": spec.name,
            "factors": dict(spec.factors),
            "params": s.total_params,
            "trainable_params": s.trainable_params,
            "non_trainable_params": s.total_params - s.trainable_params,
            "flops": s.flops,
            "mflops": round(s.mflops, 3),
            "description": spec.description or summarize(spec, spec.settings(study.train)),
            "optimizer": spec.settings(study.train).optimizer.name,
            "layers": [{"index": r.index, "layer": r.layer, "output_shape": r.output_shape, "params": r.params}
                       for r in s.rows],
        })
    if args.format == "json":
        print(json.dumps({"study": study.name, "dataset": study.dataset, "input_shape": list(info.input_shape),
                          "models": models}, indent=2))
        return 0
    console = Console(highlight=False)
    factors = list(dict.fromkeys(k for m in models for k in m["factors"]))
    if factors:  # one row per model, a column per factor: the design at a glance
        table = Table(title=f"{len(models)} models, factors: {', '.join(factors)}", title_justify="left")
        for col in ["Model", *factors, "Param #", "MFLOPs"]:
            table.add_column(col, justify="left" if col == "Model" else "right")
        for m in models:
            table.add_row(m["name"], *(level_text(m["factors"][k]) if k in m["factors"] else "" for k in factors),
                          f"{m['params']:,}", f"{m['mflops']:.2f}")
        console.print(table)
    for m in models:
        table = Table(title=f'Model: "{m["name"]}" — {m["description"]}', title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("Layer (type)")
        table.add_column("Output Shape")
        table.add_column("Param #", justify="right")
        for layer in m["layers"]:
            table.add_row(str(layer["index"]), escape(layer["layer"]), f"(None, {layer['output_shape'].replace('x', ', ')})",
                          f"{layer['params']:,}")
        console.print(table)
        console.print(f"Total params: {m['params']:,}\nTrainable params: {m['trainable_params']:,}\n"
                      f"Non-trainable params: {m['non_trainable_params']:,}\nForward MFLOPs/sample: {m['mflops']:.2f}\n")
    return 0
