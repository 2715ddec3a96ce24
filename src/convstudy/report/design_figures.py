"""Figures of the design-space section: error EDFs per comparison (plain with a DKW band, complexity-
normalised dashed), and how many models are enough (expected best-of-m, power of the KS test by models)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from convstudy.report.design_spaces import bin_edges, bin_index, edf, n_bins, weight_table
from convstudy.report.figures import _label, _panel_grid, style
from convstudy.report.plots import PALETTE

MAX_PANELS = 12  # comparisons drawn; the tables list every one


def design_figures(report: dict[str, Any]) -> dict[str, Figure]:
    """`design_edf` and `design_enough`: matplotlib Figures, only those with something to draw."""
    section = report.get("design_spaces")
    if not section:
        return {}
    out: dict[str, Figure] = {}
    comps = section["comparisons"][:MAX_PANELS]
    if comps:
        fig, axes = _panel_grid(len(comps), width=3.4, height=3.0, sharey=True)
        for ax, c in zip(axes, comps):
            _edf_panel(ax, section, c)
        axes[0].set_ylabel("share of models with error ≤ x")
        fig.set_layout_engine("constrained")
        out["design_edf"] = fig
    spaces = [g for g in section["groups"] if g.get("best_of_m")]
    powered = [c for c in section["comparisons"] if c["kind"] == "spaces"][:len(PALETTE)]
    if spaces:
        fig = Figure(figsize=(10, 3.6))
        ax_best, ax_power = fig.subplots(1, 2)
        for i, g in enumerate(spaces):
            curve = g["best_of_m"]
            ax_best.plot(curve["m"], 100 * np.array(curve["mean"]), label=_label(g["label"]), **style(i))
            ax_best.fill_between(curve["m"], 100 * np.array(curve["ci95"][0]), 100 * np.array(curve["ci95"][1]),
                                 color=style(i)["color"], alpha=0.2, linewidth=0)
        ax_best.set_xscale("log")
        ax_best.set_xlabel("models trained (m)")
        ax_best.set_ylabel("expected best error of m models (%)")
        ax_best.legend(fontsize=7)
        for i, c in enumerate(powered):
            p = c["plain"]["power"]
            ax_power.plot(p["n"], 100 * np.array(p["power"]), marker="o", ms=3, label=_pair(section, c), **style(i))
        ax_power.axhline(80, color="#555555", linewidth=0.8, linestyle="--")
        ax_power.set_xscale("log")
        ax_power.set_ylim(-2, 102)
        ax_power.set_xlabel("models per space")
        ax_power.set_ylabel("power of the KS test (%)")
        if powered:
            ax_power.legend(fontsize=7)
        else:
            ax_power.set_visible(False)
        for ax in (ax_best, ax_power):
            ax.grid(alpha=0.3, which="both")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, 100: not 10^1
            ax.xaxis.set_minor_formatter(NullFormatter())
        fig.set_layout_engine("constrained")
        out["design_enough"] = fig
    return out


def _pair(section: dict[str, Any], c: dict[str, Any]) -> str:
    return f"{_label(section['groups'][c['a']]['label'])} vs {_label(section['groups'][c['b']]['label'])}"


def _edf_panel(ax: Any, section: dict[str, Any], c: dict[str, Any]) -> None:
    """Two populations' error EDFs: plain steps with their DKW band, normalised dashed."""
    ga, gb = section["groups"][c["a"]], section["groups"][c["b"]]
    errors = [np.array(ga["errors"]), np.array(gb["errors"])]
    weights: list[Any] = [None, None]
    if c["normalized"] and c["normalized"].get("ks") is not None:
        ca, cb = np.array(ga["complexity"]), np.array(gb["complexity"])
        labels = np.repeat([0, 1], [len(ca), len(cb)])
        where = bin_index(np.concatenate([ca, cb]), bin_edges(ca, cb, n_bins(min(len(ca), len(cb)))))
        w = weight_table(labels, where)[labels, where]
        weights = [w[:len(ca)], w[len(ca):]]
    for i, (g, e, w) in enumerate(zip((ga, gb), errors, weights)):
        colour = PALETTE[i]
        xs, f = edf(e)
        ax.step(100 * xs, f, where="post", color=colour, linewidth=1.2, label=_label(g["label"]))
        ax.fill_between(100 * xs, np.clip(f - g["dkw"], 0, 1), np.clip(f + g["dkw"], 0, 1), step="post",
                        color=colour, alpha=0.15, linewidth=0)
        if w is not None and w.sum() > 0:
            xw, fw = edf(e[w > 0], w[w > 0])
            ax.step(100 * xw, fw, where="post", color=colour, linewidth=1.2, linestyle="--",
                    label="normalised" if i else None)
    plain, norm = c["plain"], c["normalized"]
    title = f"KS p = {plain['p_holm']:.2g}"
    if norm and norm.get("p_holm") is not None:
        title += f"; normalised p = {norm['p_holm']:.2g}"
    ax.set_title(title + " (Holm)", fontsize=8)
    ax.set_xlabel("error (%)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
