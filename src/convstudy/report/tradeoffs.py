"""Accuracy against cost (parameters, MFLOPs, training time, measured latency): the points, their Pareto fronts,
the page's figure and its caption."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convstudy.report.curves import OVERLAY_MAX
from convstudy.report.figures import label, memoized, style, to_svg
from convstudy.report.markup import esc, figure
from convstudy.store import State


def tradeoffs_html(models: list[dict[str, Any]]) -> str:
    """The Accuracy vs cost section's figure and caption; closed behind a summary past OVERLAY_MAX models."""
    points = tradeoff_points(models)
    svg = tradeoff_svg(points)
    if svg is not None and len(points) > OVERLAY_MAX:
        # Thousands of SVG elements: closed, the browser neither lays them out nor paints them, so a big
        # study's page opens in a fraction of the time (issue 19: 300 models within 2 s), still without script.
        svg = f"<details><summary>Show the figure ({len(points)} models)</summary>{svg}</details>"
    return figure(svg, pareto_caption(points))


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
        secs = [t["train_seconds"] for t in m["trials"] if t["state"] == State.COMPLETE]
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


@memoized
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
                ax.annotate(label(p["name"]), (p[key], p["acc"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        else:  # one artist per kind instead of several per point; names only on the front, the rest would overlap
            xs, ys = np.array([p[key] for _, p in shown]), np.array([p["acc"] for _, p in shown])
            cis = [p.get(f"{key}_ci") or (p[key], p[key]) for _, p in shown]
            xerr = np.array([[x - lo for x, (lo, _) in zip(xs, cis)], [hi - x for x, (_, hi) in zip(xs, cis)]])
            ax.errorbar(xs, ys, xerr=xerr, yerr=[p["std"] for _, p in shown], fmt="none", ecolor="#bbbbbb",
                        elinewidth=0.8)
            ax.scatter(xs, ys, s=14, c=[style(i)["color"] for i, _ in shown], zorder=3)
            for p in front:
                ax.annotate(label(p["name"]), (p[key], p["acc"]), textcoords="offset points", xytext=(4, 4),
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


def pareto_caption(points: list[dict[str, Any]]) -> str:
    """What the figure shows and, per cost, the models on its Pareto front (names escaped)."""
    keys = tradeoff_panels(points)
    fronts = "; ".join(f"by {TRADEOFFS[key][1]} " + (", ".join(
        esc(p["name"]) for p in sorted((p for p in points if p[f"pareto_{key}"]), key=lambda p: p[key])) or "–")
        for key in keys)
    latency = ("; latency: PyTorch on this CPU as the trainer runs the model, median with its 95% CI "
               "(convstudy latency)") if "latency1" in keys else ""
    zero = [TRADEOFFS[key][1] for key in keys if any(p[key] == 0 for p in points)]
    axis = f"log x (by {', '.join(zero)}: linear from 0 up to the least cost above 0)" if zero else "log x"
    return (f"Mean test accuracy ± 1 std over seeds; {axis}{latency}. Pareto front (no model is both cheaper and more "
            f"accurate): {fronts}.")
