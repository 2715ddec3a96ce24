"""The notebook's figure per model: epoch vs training and validation loss (mean line, ±1 std band)."""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, TypeVar

from matplotlib.figure import Figure  # figures without pyplot: no backend to choose, no global state

T = TypeVar("T")
_RENDERED: OrderedDict[str, Any] = OrderedDict()
MEMO_SIZE = 256  # figures kept per process: a study's per-model figures in both formats, many times over


def memo_figure(key: list[Any], render: Callable[[], T]) -> T:
    """`render()`, or what it returned before for the same `key` (JSON: everything the figure draws).

    A running study refreshes its reports after every trial; without this, each refresh re-drew every
    model's figures (about 2.5 s for the 12 seed models), while only the models that trained since change.
    """
    digest = json.dumps(key, sort_keys=True, default=str)
    if digest in _RENDERED:
        _RENDERED.move_to_end(digest)
        return _RENDERED[digest]
    value = _RENDERED[digest] = render()
    if len(_RENDERED) > MEMO_SIZE:
        _RENDERED.popitem(last=False)
    return value


# Okabe–Ito, a colour-blind-safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def loss_figure(model: dict[str, Any], path: Path, validation_label: str = "validation") -> Path | None:
    """Write `path` (PNG) for one model's mean curves; None if it has no epochs yet."""
    if not model["epochs"]:
        return None
    title = f"{model['name']}: {model['description']}"

    def render() -> bytes:
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.subplots()
        draw_loss(ax, model, validation_label, title=title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    png = memo_figure(["loss.png", title, model["epochs"], validation_label], render)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
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
