"""What every section's figures share: the palette, labels shown literally, panel grids, and SVG/PNG for the page."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import io
import json
import re
from collections import OrderedDict
from typing import Any, Callable, TypeVar

import numpy as np

import matplotlib
from matplotlib.figure import Figure  # figures without pyplot: no backend to choose, no global state
from matplotlib.image import imsave

# Okabe–Ito, a colour-blind-safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_LINESTYLES = ("-", "--", ":", "-.")
PANELS_PER_ROW = 4
LABEL_CHARS = 24  # factor names and levels longer than this are cut in figures (the tables show them whole)

F = TypeVar("F", bound=Callable[..., Any])
MEMO_SIZE = 512  # drawings kept per process (a loss PNG is about 30 KB)
_MEMO: OrderedDict[tuple[str, str], Any] = OrderedDict()


def memoized(fn: F | None = None, *, key: Callable[..., Any] | None = None) -> Any:
    """Keep what a pure drawing or fitting function returned for the same JSON-able arguments (or the same
    `key(*args)`: the part of a report it reads), per process, LRU: a report refreshed after a trial redraws
    only what that trial changed (a 40-model study redrew 40 loss PNGs, about 0.5 s each on one core, after
    every trial), and the refresh at a run's end after one that saw the same data redraws nothing."""
    if fn is None:
        return functools.partial(memoized, key=key)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        what = key(*args, **kwargs) if key is not None else [args, kwargs]
        digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
        name = (f"{fn.__module__}.{fn.__qualname__}", digest)
        if name in _MEMO:
            _MEMO.move_to_end(name)
        else:
            _MEMO[name] = fn(*args, **kwargs)
            if len(_MEMO) > MEMO_SIZE:
                _MEMO.popitem(last=False)
        return copy.deepcopy(_MEMO[name])  # a caller may change what it gets; the memo's copy stays as made
    return wrapper


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes (100 dpi), the format of the plots a study directory keeps."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


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


def plain(text: str) -> str:
    """User text as matplotlib shows it literally: a `$` would otherwise start mathtext (and may not parse)."""
    return text.replace("$", r"\$")


def label(text: str) -> str:
    """`text` as a figure label: at most LABEL_CHARS characters, shown literally."""
    return plain(text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…")


def panel_grid(n: int, width: float, height: float, sharey: bool = False) -> tuple[Any, list[Any]]:
    """A Figure with `n` panels of about `width` x `height` inches, PANELS_PER_ROW to a row, so a search
    over six factors (15 interaction pairs) still gets readable panels; the unused cells are hidden."""
    cols = min(n, PANELS_PER_ROW)
    rows = -(-n // cols)
    fig = Figure(figsize=(1.2 + width * cols, height * rows))
    axes = list(np.atleast_1d(fig.subplots(rows, cols, sharey=sharey)).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]
