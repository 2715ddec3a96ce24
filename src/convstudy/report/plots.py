"""The notebook's figure per model: epoch vs training and validation loss (mean line, ±1 std band)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

# Okabe–Ito, a colour-blind-safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def loss_figure(model: dict[str, Any], path: Path, validation_label: str = "validation") -> Path | None:
    """Write `path` (PNG) for one model's mean curves; None if it has no epochs yet."""
    if not model["epochs"]:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    draw_loss(ax, model, validation_label, title=f"{model['name']}: {model['description']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_loss(ax: Any, model: dict[str, Any], validation_label: str, title: str) -> None:
    """Epoch vs training and validation loss on `ax`: mean lines and, over several seeds, ±1 std bands."""
    curves = model["epochs"]
    x = [c["epoch"] for c in curves]
    for key, label, color in (("loss", "train", PALETTE[0]), ("val_loss", validation_label, PALETTE[3])):
        mean = [c[key] for c in curves]
        std = [c[f"{key}_std"] for c in curves]
        ax.plot(x, mean, marker="o", ms=3, color=color, label=f"{label} loss")
        if any(std):
            ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2, linewidth=0)
    n = max(c["n"] for c in curves)
    ax.set_title(plain(title) + (f" (mean ± std, {n} seeds)" if n > 1 else ""), fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("categorical cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()


def plain(text: str) -> str:
    """User text as matplotlib shows it literally: a `$` would otherwise start mathtext (and may not parse)."""
    return text.replace("$", r"\$")
