"""The page's interactive parts: the JSON data they draw from, parallel coordinates and loss curves on demand.

The data rides in a `<script type="application/json">` block (never executed; `<`, `>` and `&` are
written as JSON escapes, so no user text can close the block), and html_explore.js draws from it with
DOM calls and `textContent` only. Readers without JavaScript get the table and a static figure instead.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from html import escape
from importlib.resources import files
from typing import Any

from convstudy.report.figures import loss_svg
from convstudy.report.factors import level_text
from convstudy.report.html_table import factor_names

CURVE_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")


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


def json_block(ident: str, data: Any) -> str:
    """`data` as an inert JSON script block that no string inside it can break out of."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{ident}">{text}</script>'


@lru_cache(maxsize=1)
def script() -> str:
    """The page's one script (sorting, filters, parallel coordinates, curves), a package data file."""
    return files("convstudy.report").joinpath("html_explore.js").read_text(encoding="utf-8")


def parallel_section(report: dict[str, Any]) -> str:
    """Parallel coordinates over the factors, coloured by the selection metric (drawn by the script)."""
    if not factor_names(report["models"]):
        return "<p>No model has factors (they were written by hand, not expanded from a space).</p>"
    return ('<div id="parcoords" class="plot" role="img" aria-label="parallel coordinates of the models\' '
            'factors and test accuracy"></div><p class="small">One line per model, through its factor levels to '
            "its mean test accuracy; the colour is the accuracy (viridis: dark low, yellow high; grey: not "
            "finished). Lines of models the table's filters hide are faded.</p>"
            "<noscript><p>The parallel coordinates need JavaScript; the table above holds the same "
            "factor levels.</p></noscript>")


def curves_section(report: dict[str, Any], label: str) -> str:
    """Seed bands for the models ticked in the table; without JavaScript, the best model's static figure."""
    best = _best_index(report["models"])
    if best is None:
        return "<p>No finished epoch yet.</p>"
    m = report["models"][best]
    svg = loss_svg(m, label)
    static = f"<figure>{svg}<figcaption>Best model only: {escape(m['name'])}.</figcaption></figure>" if svg else ""
    names = {"loss": "train loss", "val_loss": f"{label} loss", "accuracy": "train accuracy (%)",
             "val_accuracy": f"{label} accuracy (%)"}
    options = "".join(f'<option value="{k}">{escape(names[k])}</option>' for k in CURVE_METRICS)
    return (f'<div id="curves-controls" class="filters" hidden><label for="c-metric">metric</label>'
            f'<select id="c-metric">{options}</select><button type="button" id="c-clear">clear selection</button>'
            '</div><div id="curves-plot" class="plot"></div><ul id="curves-legend" class="legend"></ul>'
            '<p class="small" id="curves-note">Mean over seeds, band ±1 std (over the seeds that reached the '
            "epoch); tick models in the table to compare up to 8.</p>"
            f"<noscript>{static}</noscript>")


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
