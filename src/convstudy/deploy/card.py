"""A short Markdown model card written beside every export: what the file is, how good, how it was made."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from convstudy.deploy.predict import Trained
from convstudy.model import summarize_model
from convstudy.report import md_text, mixed_note


def card_path(export_path: Path) -> Path:
    """`model.onnx` -> `model.onnx.md`, so an ONNX and a safetensors export of one model keep their own cards."""
    return export_path.with_name(export_path.name + ".md")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def accuracy_lines(stats: dict[str, Any] | None, trained: Trained) -> list[str]:
    """Mean, std and 95% CI over the complete seeds, plus this seed's own number."""
    lines = []
    if stats and stats.get("n"):
        n = stats["n"]
        line = f"- Test accuracy over {n} seed{'s' * (n != 1)}: mean {_pct(stats['mean'])}, std {_pct(stats['std'])}"
        ci = stats.get("ci95")
        line += f", 95% CI [{_pct(ci[0])}, {_pct(ci[1])}] (Student t)" if ci else " (a CI needs at least two seeds)"
        lines.append(line)
    lines.append(f"- This export (seed {trained.seed}): {_pct(trained.test_accuracy)} on the test set")
    return lines


def input_line(trained: Trained, export_format: str) -> str:
    """What the exported model takes: shape, colour, scaling, normalisation and how `predict` prepares files."""
    h, w, c = trained.info.input_shape
    colour = "RGB" if c == 3 else "greyscale"
    line = f"float32 `[batch, {c}, {h}, {w}]` ({colour}), pixel / 255"
    if trained.norm is not None:
        mean, std = (", ".join(f"{v:.4f}" for v in t.reshape(-1).tolist()) for t in trained.norm)
        line += (f", then standardised per channel with the training split's mean ({mean}) and std ({std})"
                 + (": built into this file, so feed pixel / 255" if export_format == "ONNX"
                    else ": not in the weights, do it yourself (metadata `normalize`)"))
    if trained.info.format == "idx":
        return line + (". Light ink on black, digits fitted into 20x20 and centred by mass like MNIST "
                       "(`convstudy predict` does this for any image).")
    return line + (f". `convstudy predict` decodes any image as the training data was: converted to {colour} "
                   f"and resized to {h}x{w} (bilinear).")


def model_card(trained: Trained, report: dict[str, Any], export_path: Path, export_format: str,
               check: str) -> str:
    """The card's Markdown; `report` is `convstudy.report.collect(store)`, `check` the export's check sentence."""
    study = report["study"]
    entry = next((m for m in report["models"] if m["name"] == trained.spec.name), {})
    settings = trained.settings
    summary = summarize_model(trained.spec, trained.info.input_shape)
    digest = hashlib.sha256(export_path.read_bytes()).hexdigest()
    h, w, c = trained.info.input_shape
    classes = len(trained.info.class_names)
    prov = study.get("provenance") or {}
    out = [
        f"# {trained.spec.name} (study {study['name']}, seed {trained.seed})",
        "",
        f"{md_text(export_path.name)}: {export_format}, sha256 `{digest[:16]}…`, exported "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by convstudy.",
        "",
        "## Architecture",
        "",
        md_text(entry.get("description") or trained.spec.name),  # user text: never Markdown or HTML
        "",
        "| # | layer | output shape | params |",
        "|---:|---|---|---:|",
        *(f"| {r.index} | `{r.layer}` | {r.output_shape} | {r.params:,} |" for r in summary.rows),
        "",
        f"Total params {summary.total_params:,} (trainable {summary.trainable_params:,}), "
        f"{summary.mflops:.2f} MFLOPs per image.",
        "",
        "## Input and output",
        "",
        f"- Input: {input_line(trained, export_format)}",
        f"- Output: {'probabilities' if export_format == 'ONNX' else 'logits'} `[batch, {classes}]` over "
        f"classes {', '.join(trained.info.class_names)}.",
        "",
        "## Data",
        "",
        f"- Dataset: {trained.info.name} ({h}x{w}x{c}, {classes} classes), {prov.get('n_train', '?')} training "
        f"images, {prov.get('n_test', '?')} test images; validation: {study['validation']}"
        + (f", train limit {study['train_limit']}" if study.get("train_limit") else ""),
        *([f"- Note: {study['validation_note']}"] if study.get("validation_note") else []),
        *(f"- Note: {mixed_note(study, key)}" for key in study.get("mixed", [])),
        "",
        "## Accuracy",
        "",
        *accuracy_lines(entry.get("test_accuracy"), trained),
        "",
        "## Training",
        "",
        f"- {settings.epochs} epochs, batch size {settings.batch_size}, loss {settings.loss}",
        f"- Optimizer {settings.optimizer.name}: "
        + ", ".join(f"{k}={v:g}" for k, v in settings.optimizer.resolved().items()),
        "",
        "## Provenance",
        "",
        f"- Study fingerprint `{study['fingerprint']}`, seeds {study['seeds']}",
        *(f"- {key}: {prov[key]}" for key in ("convstudy", "git_commit", "torch", "python", "device", "precision",
                                             "host", "platform") if prov.get(key) is not None),
        "",
        "## Export check",
        "",
        f"- {check}",
        "",
    ]
    return "\n".join(out)


def write_card(trained: Trained, report: dict[str, Any], export_path: Path, export_format: str, check: str) -> Path:
    """Write the card beside the export; returns its path."""
    path = card_path(export_path)
    path.write_text(model_card(trained, report, export_path, export_format, check))
    return path
