"""Loss and accuracy by epoch: the PNG per model, the page's overlay of all models, and the data (an inert JSON
block, html.json_block) from which its script draws curves on demand and parallel coordinates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from convstudy.report.factors import level_text
from convstudy.report.figures import PALETTE, memoized, plain, style, to_png, to_svg
from convstudy.report.markup import el, esc, figure
from convstudy.report.models import factor_names

CURVE_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")
OVERLAY_MAX = 16  # models one figure can tell apart (8 colours x 2 line styles); past it, pick curves instead


def loss_figure(model: dict[str, Any], path: Path, validation_label: str = "validation") -> Path | None:
    """Write `path` (PNG), the notebook's figure for one model's mean curves; None if it has no epochs yet."""
    if not model["epochs"]:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(loss_png(model, validation_label))
    return path


@memoized
def loss_png(model: dict[str, Any], validation_label: str) -> bytes:
    """loss_figure's PNG: the model's mean curves, titled by its name and description."""
    fig = Figure(figsize=(6, 4), dpi=100)
    draw_loss(fig.subplots(), model, validation_label, title=f"{model['name']}: {model['description']}")
    fig.tight_layout()
    return to_png(fig)


@memoized
def loss_svg(model: dict[str, Any], validation_label: str) -> str | None:
    """The same figure for the page (SVG, titled by the model's name); None if it has no epochs yet."""
    if not model["epochs"]:
        return None
    fig = Figure(figsize=(5.2, 3.4))
    draw_loss(fig.subplots(), model, validation_label, title=model["name"])
    fig.tight_layout()
    return to_svg(fig)


def draw_loss(ax: Any, model: dict[str, Any], validation_label: str, title: str) -> None:
    """Epoch vs training and validation loss on `ax`: mean lines and, over several seeds, ±1 std bands."""
    curves = model["epochs"]
    x = [c["epoch"] for c in curves]
    for key, name, color in (("loss", "train", PALETTE[0]), ("val_loss", validation_label, PALETTE[3])):
        mean = [c[key] for c in curves]
        std = [c[f"{key}_std"] for c in curves]
        ax.plot(x, mean, marker="o", ms=3, color=color, label=f"{name} loss")
        if any(std):
            ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2, linewidth=0)
    n = max(c["n"] for c in curves)
    ax.set_title(plain(title) + (f" (mean ± std, {n} seeds)" if n > 1 else ""), fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("categorical cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()


@memoized
def overlay_html(models: list[dict[str, Any]], label: str) -> str:
    """Every model's mean validation loss and accuracy by epoch on two shared panels, up to OVERLAY_MAX models."""
    if len(models) > OVERLAY_MAX:
        return (f"<p>{len(models)} models are too many lines for one figure: tick models in the table to "
                "compare their curves above.</p>")
    models = [m for m in models if m["epochs"]]
    if not models:
        return figure(None, "")
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, m in enumerate(models):
        x = [c["epoch"] for c in m["epochs"]]
        ax_loss.plot(x, [c["val_loss"] for c in m["epochs"]], marker="o", ms=2.5, label=m["name"], **style(i))
        ax_acc.plot(x, [100 * c["val_accuracy"] for c in m["epochs"]], marker="o", ms=2.5, **style(i))
    ax_loss.set_ylabel(f"{label} loss")
    ax_acc.set_ylabel(f"{label} accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize=7, frameon=False)
    fig.set_layout_engine("constrained")
    return figure(to_svg(fig), "Mean over the finished seeds of each model.")


def curves_html(report: dict[str, Any], label: str) -> str:
    """Seed bands for the models ticked in the table; without JavaScript, the best model's static figure."""
    best = _best_index(report["models"])
    if best is None:
        return figure(None, "")
    m = report["models"][best]
    svg = loss_svg(m, label)
    static = figure(svg, f"Best model only: {esc(m['name'])}.") if svg else ""
    names = {"loss": "train loss", "val_loss": f"{label} loss", "accuracy": "train accuracy (%)",
             "val_accuracy": f"{label} accuracy (%)"}
    options = "".join(el("option", esc(names[k]), value=k) for k in CURVE_METRICS)
    return (f'<div id="curves-controls" class="filters" hidden><label for="c-metric">metric</label>'
            f'<select id="c-metric">{options}</select><button type="button" id="c-clear">clear selection</button>'
            '</div><div id="curves-plot" class="plot"></div><ul id="curves-legend" class="legend"></ul>'
            '<p class="small" id="curves-note">Mean over seeds, band ±1 std (over the seeds that reached the '
            "epoch); tick models in the table to compare up to 8.</p>"
            f"<noscript>{static}</noscript>")


def parallel_html(report: dict[str, Any]) -> str:
    """Parallel coordinates over the factors, coloured by the selection metric (drawn by the script)."""
    if not factor_names(report["models"]):
        return "<p>No model has factors (they were written by hand, not expanded from a space).</p>"
    return ('<div id="parcoords" class="plot" role="img" aria-label="parallel coordinates of the models\' '
            'factors and test accuracy"></div><p class="small">One line per model, through its factor levels to '
            "its mean test accuracy; the colour is the accuracy (viridis: dark low, yellow high; grey: not "
            "finished). Lines of models the table's filters hide are faded.</p>"
            "<noscript><p>The parallel coordinates need JavaScript; the table above holds the same "
            "factor levels.</p></noscript>")


def page_data(report: dict[str, Any]) -> dict[str, Any]:
    """What the script needs: per model its seeds' epoch curves; the parallel-coordinates axes and metric."""
    models = report["models"]
    factors = factor_names(models)
    key = "val_accuracy" if report["study"].get("selection_metric") == "val_accuracy" else "test_accuracy"
    return {
        "metric": {"name": f"{key.replace('_', ' ')} (%)",  # the selection metric colours the lines
                   "values": [_num(100 * m[key]["mean"]) if m[key]["n"] else None for m in models]},
        "dims": parallel_dims([m.get("factors") or {} for m in models]),
        "models": [{"name": m["name"],
                    "levels": [level_text(v) if (v := (m.get("factors") or {}).get(f)) is not None else None
                               for f in factors],
                    "seeds": [_seed(t) for t in m.get("trials", [])]} for m in models],
        "initial": _best_index(models),
    }


def parallel_dims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One axis per column of `rows` (e.g. the models' factors, or a search's parameters): numeric when every
    value is a number, else categorical with its levels in the order they first appear."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    dims = []
    for name in names:
        values = [r.get(name) for r in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            dims.append({"name": name, "kind": "numeric", "values": [_num(v) for v in values]})
        else:
            texts = [None if v is None else level_text(v) for v in values]
            dims.append({"name": name, "kind": "categorical", "levels": list(dict.fromkeys(t for t in texts if t)),
                         "values": texts})
    return dims


def _seed(t: dict[str, Any]) -> dict[str, Any]:
    rows = t.get("epochs") or []
    out: dict[str, Any] = {"seed": t["seed"], "state": t["state"], "epoch": [e["epoch"] for e in rows]}
    out.update({k: [_num(e[k]) for e in rows] for k in CURVE_METRICS})
    return out


def _num(x: Any) -> float | None:
    """Five significant digits (the page's curves need no more); NaN and inf, e.g. a diverged loss, are null."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.5g}")


def _best_index(models: list[dict[str, Any]]) -> int | None:
    """The selected best model (report.stats.places marks it `test = "best"`), else the first with an epoch."""
    best = next((i for i, m in enumerate(models) if m.get("test") == "best"), None)
    return best if best is not None else next((i for i, m in enumerate(models) if m["epochs"]), None)
