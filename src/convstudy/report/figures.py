"""Figures for the HTML report as inline SVG: loss curves, an overlay of all models, cost/accuracy trade-offs."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import numpy as np

import matplotlib
from matplotlib.figure import Figure
from matplotlib.image import imsave

from convstudy.report.factors import level_text
from convstudy.report.plots import PALETTE, draw_loss, memo_figure, plain

_LINESTYLES = ("-", "--", ":", "-.")


def to_svg(fig: Any) -> str:
    """The figure as an `<svg>` element for inlining: text stays text, no XML prolog, no metadata."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "convstudy"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # Scale with the page (phones, print): keep the viewBox, drop the fixed size.
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="fig"', text, count=1)


def png_data_uri(image: np.ndarray) -> str:
    """A small image (H×W grey or H×W×3 uint8) as a `data:image/png;base64,` URI."""
    buf = io.BytesIO()
    cmap = "gray" if image.ndim == 2 else None
    imsave(buf, image, cmap=cmap, vmin=0, vmax=255, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def style(i: int) -> dict[str, Any]:
    """Colour (Okabe–Ito) and, past eight models, a line style, so every model stays distinguishable."""
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": _LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)]}


def loss_svg(model: dict[str, Any], validation_label: str) -> str | None:
    """The notebook's figure for one model: epoch vs train/validation loss, mean ± std over seeds."""
    if not model["epochs"]:
        return None

    def render() -> str:
        fig = Figure(figsize=(5.2, 3.4))
        ax = fig.subplots()
        draw_loss(ax, model, validation_label, title=model["name"])
        fig.tight_layout()
        return to_svg(fig)

    return memo_figure(["loss.svg", model["name"], model["epochs"], validation_label], render)


def overlay_svg(models: list[dict[str, Any]], validation_label: str) -> str | None:
    """Every model's mean validation loss and accuracy by epoch, on two shared panels."""
    models = [m for m in models if m["epochs"]]
    if not models:
        return None
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, m in enumerate(models):
        x = [c["epoch"] for c in m["epochs"]]
        ax_loss.plot(x, [c["val_loss"] for c in m["epochs"]], marker="o", ms=2.5, label=m["name"], **style(i))
        ax_acc.plot(x, [100 * c["val_accuracy"] for c in m["epochs"]], marker="o", ms=2.5, **style(i))
    ax_loss.set_ylabel(f"{validation_label} loss")
    ax_acc.set_ylabel(f"{validation_label} accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize=7, frameon=False)
    fig.set_layout_engine("constrained")
    return to_svg(fig)


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower cost (x) and higher accuracy (y)."""
    front, best = [], -np.inf
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# Costs the accuracy is set against: point key -> (axis label, name in the caption). Latency is PyTorch's median
# per image as the trainer runs the model (`convstudy latency`), drawn with its 95% CI when measured.
TRADEOFFS = {
    "params": ("parameters", "parameters"),
    "mflops": ("MFLOPs per image", "MFLOPs"),
    "seconds": ("training time per trial (s)", "training time"),
    "latency1": ("latency at batch 1 (ms per image)", "latency at batch 1"),
    "latency256": ("latency at batch 256 (ms per image)", "latency at batch 256"),
}
_LATENCY = {"latency1": "batch1_ms", "latency256": "batch256_ms_per_image"}


def tradeoff_points(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per finished model: each cost of TRADEOFFS (None where not measured), accuracy mean/std (percent), Pareto marks."""
    pts = []
    for m in models:
        acc = m["test_accuracy"]
        if not acc["n"]:
            continue
        secs = [t["train_seconds"] for t in m["trials"] if t["state"] == "complete"]
        p = {"name": m["name"], "params": m["params"], "mflops": m["mflops"], "seconds": float(np.mean(secs)),
             "acc": 100 * acc["mean"], "std": 100 * acc["std"]}
        measured = m.get("latency") or {}
        for key, field in _LATENCY.items():
            t = measured.get(field)
            p[key], p[f"{key}_ci"] = (t["median"], t["ci95"]) if t else (None, None)
        pts.append(p)
    for key in TRADEOFFS:
        have = [i for i, p in enumerate(pts) if p[key] is not None]
        front = {have[j] for j in pareto([(pts[i][key], pts[i]["acc"]) for i in have])}
        for i, p in enumerate(pts):
            p[f"pareto_{key}"] = i in front
    return pts


def tradeoff_panels(points: list[dict[str, Any]]) -> list[str]:
    """The costs some point has a value for, in TRADEOFFS order (latency only once it was measured)."""
    return [key for key in TRADEOFFS if any(p[key] is not None for p in points)]


LABELLED_POINTS = 40  # up to this many models, every point is drawn and named on its own


def tradeoff_svg(points: list[dict[str, Any]]) -> str | None:
    """tradeoff_figure as inline SVG; None without points."""
    return to_svg(tradeoff_figure(points)) if points else None


def tradeoff_figure(points: list[dict[str, Any]]) -> Figure:
    """Accuracy vs each cost (log x), ±1 std error bars (latency: also its 95% CI), Pareto front as a step line;
    past LABELLED_POINTS models only the front's points are named."""
    keys = tradeoff_panels(points)
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(4.4 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys):
        shown = [(i, p) for i, p in enumerate(points) if p[key] is not None]
        front = sorted((p for _, p in shown if p[f"pareto_{key}"]), key=lambda p: p[key])
        if len(shown) <= LABELLED_POINTS:
            for i, p in shown:
                ci = p.get(f"{key}_ci")
                xerr = [[p[key] - ci[0]], [ci[1] - p[key]]] if ci else None
                ax.errorbar(p[key], p["acc"], xerr=xerr, yerr=p["std"], fmt="o", ms=5, capsize=3,
                            color=style(i)["color"])
                ax.annotate(_label(p["name"]), (p[key], p["acc"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        else:  # one artist per kind instead of several per point; names only on the front, the rest would overlap
            xs, ys = np.array([p[key] for _, p in shown]), np.array([p["acc"] for _, p in shown])
            cis = [p.get(f"{key}_ci") or (p[key], p[key]) for _, p in shown]
            xerr = np.array([[x - lo for x, (lo, _) in zip(xs, cis)], [hi - x for x, (_, hi) in zip(xs, cis)]])
            ax.errorbar(xs, ys, xerr=xerr, yerr=[p["std"] for _, p in shown], fmt="none", ecolor="#bbbbbb",
                        elinewidth=0.8)
            ax.scatter(xs, ys, s=14, c=[style(i)["color"] for i, _ in shown], zorder=3)
            for p in front:
                ax.annotate(_label(p["name"]), (p[key], p["acc"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        ax.step([p[key] for p in front], [p["acc"] for p in front], where="post", color="#555555",
                linestyle="--", linewidth=1, label="Pareto front")
        ax.scatter([p[key] for p in front], [p["acc"] for p in front], s=120, facecolors="none",
                   edgecolors="#555555", linewidths=1)
        _cost_axis(ax, [p[key] for _, p in shown])
        ax.set_xlabel(TRADEOFFS[key][0])
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _cost_axis(ax: Any, xs: list[float]) -> None:
    """A log cost axis with plain tick labels at 1-2-5 steps and room around the points, however narrow their
    range. A cost of 0 (MFLOPs that round to 0) has no place on a log axis: then the axis is symlog, linear
    from 0 up to the smallest positive cost and log past it, so every point is drawn and matplotlib stays quiet."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

    positive = [x for x in xs if x > 0]
    if len(positive) == len(xs):
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    else:
        step = min(positive, default=1.0)
        ax.set_xscale("symlog", linthresh=step, linscale=0.5)
        ax.set_xlim(-0.3 * step, max(xs + [step]) * 1.6)
        ax.xaxis.set_major_locator(SymmetricalLogLocator(linthresh=step, base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _short(v: float) -> str:
    """Tick labels that fit side by side: 500, 20k, 1.5M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


PANELS_PER_ROW = 4
LABEL_CHARS = 24  # factor names and levels longer than this are cut in figures (the tables show them whole)


def _label(text: str) -> str:
    """`text` as a figure label: at most LABEL_CHARS characters, shown literally (plots.plain)."""
    return plain(text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…")


def _panel_grid(n: int, width: float, height: float, sharey: bool = False) -> tuple[Any, list[Any]]:
    """A Figure with `n` panels of about `width` x `height` inches, PANELS_PER_ROW to a row, so a search
    over six factors (15 interaction pairs) still gets readable panels; the unused cells are hidden."""
    cols = min(n, PANELS_PER_ROW)
    rows = -(-n // cols)
    fig = Figure(figsize=(1.2 + width * cols, height * rows))
    axes = list(np.atleast_1d(fig.subplots(rows, cols, sharey=sharey)).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def factor_figures(report: dict[str, Any]) -> dict[str, Any]:
    """`factors` (each level's main effect with its 95% CI, in pp against the reference) and `interactions`
    (cell means of each fitted pair): matplotlib Figures, only those with something to draw."""
    metric = "validation" if report["study"].get("selection_metric") == "val_accuracy" else "test"
    out: dict[str, Any] = {}
    mains = [f for f in report.get("factors", []) if f["effects"]]
    if mains:
        fig, axes = _panel_grid(len(mains), width=2.6, height=3.2, sharey=True)
        for ax, f in zip(axes, mains):
            est = [0.0] + [100 * e["estimate"] for e in f["effects"]]
            lo = [0.0] + [est[i + 1] - 100 * e["ci95"][0] for i, e in enumerate(f["effects"])]
            hi = [0.0] + [100 * e["ci95"][1] - est[i + 1] for i, e in enumerate(f["effects"])]
            ax.errorbar(range(len(est)), est, yerr=[lo, hi], fmt="o", capsize=4, color=PALETTE[0])
            ax.axhline(0, color="#555555", linewidth=0.8, linestyle="--")
            ax.set_xticks(range(len(est)), [_label(level_text(v)) for v in f["levels"]])
            ax.set_xlim(-0.5, len(est) - 0.5)
            ax.set_title(_label(str(f["name"])), fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"effect on {metric} accuracy (pp)")
        fig.set_layout_engine("constrained")
        out["factors"] = fig
    pairs = report.get("interactions", [])
    if pairs:
        fig, axes = _panel_grid(len(pairs), width=3.2, height=3.4)
        for ax, inter in zip(axes, pairs):
            xs = list(dict.fromkeys(json.dumps(c["levels"][0]) for c in inter["means"]))
            lines = list(dict.fromkeys(json.dumps(c["levels"][1]) for c in inter["means"]))
            for i, line in enumerate(lines):
                cells = [c for c in inter["means"] if json.dumps(c["levels"][1]) == line]
                label = f"{_label(str(inter['factors'][1]))} = {_label(level_text(json.loads(line)))}"
                ax.plot([xs.index(json.dumps(c["levels"][0])) for c in cells], [100 * c["mean"] for c in cells],
                        marker="o", label=label, **style(i))
            ax.set_xticks(range(len(xs)), [_label(level_text(json.loads(x))) for x in xs])
            ax.set_xlim(-0.5, len(xs) - 0.5)
            ax.set_xlabel(_label(str(inter["factors"][0])))
            ax.set_title(f"{_label(str(inter['factors'][0]))} × {_label(str(inter['factors'][1]))} "
                         f"(p = {inter['p_value']:.2g})",
                         fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"mean {metric} accuracy (%)")
        fig.set_layout_engine("constrained")
        out["interactions"] = fig
    return out
