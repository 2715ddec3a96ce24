"""The best model up close: confusion matrix, per-class accuracy and its most confident mistakes.

`report.collect.best_model_summary` adds the numbers to the JSON report (from the stored test
predictions); `render_best` draws them, loading the misclassified test images from the run's data directory.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from typing import Any

import numpy as np

from convstudy.data import load_dataset

METRIC_LABELS = {"val_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}


def render_best(report: dict[str, Any]) -> str:
    """The best-model section's inner HTML (everything escaped)."""
    best = report.get("best_model")
    if not best:
        return "<p>No finished trial with stored test predictions yet.</p>"
    seeds = best["seeds"]
    shown = len(best["misclassified"])
    shown = f", first {shown}" if best["n_misclassified"] > shown else ""
    metric = METRIC_LABELS[report["study"].get("selection_metric", "test_accuracy")]
    out = [f"<p>Best mean {metric}: <b>{escape(best['model'])}</b>. Confusion matrix and per-class "
           f"accuracy pooled over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
           f"({escape(', '.join(map(str, seeds)))}), {best['n_test']:,} test images each.</p>",
           '<div class="pair">', _confusion(best), _per_class(best), "</div>",
           f"<h3>Most confident mistakes (seed {best['seed']}: {best['n_misclassified']:,} of "
           f"{best['n_test']:,} misclassified{shown})</h3>",
           _mistakes(report, best)]
    return "\n".join(out)


def _confusion(best: dict[str, Any]) -> str:
    names, cm = best["class_names"], np.array(best["confusion"])
    rows = cm.sum(1, keepdims=True).clip(min=1)
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            share = cm[i, j] / rows[i, 0]
            # Blue shades the correct diagonal, vermillion the confusions (Okabe–Ito, colour-blind safe).
            rgb = "0,114,178" if i == j else "213,94,0"
            alpha = share if i == j else min(1.0, 4 * share)
            ink = ' class="ink"' if alpha > 0.55 else ""
            cells.append(f'<td style="background:rgba({rgb},{alpha:.3f})"{ink} title="true {escape(name)}, '
                         f'predicted {escape(names[j])}: {cm[i, j]}">{cm[i, j] or ""}</td>')
        body.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    return (f'<figure class="scroll"><table class="cm"><caption>Confusion matrix (rows: true class, columns: '
            f"predicted)</caption><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "</figure>")


def _per_class(best: dict[str, Any]) -> str:
    rows = []
    cm = np.array(best["confusion"])
    for i, (name, acc) in enumerate(zip(best["class_names"], best["per_class_accuracy"])):
        pct = "–" if acc is None else f"{100 * acc:.2f}"
        width = 0 if acc is None else 100 * acc
        rows.append(f'<tr><th>{escape(name)}</th><td class="num">{int(cm[i].sum()):,}</td><td class="num">{pct}</td>'
                    f'<td class="barcell"><span class="bar" style="width:{width:.1f}%"></span></td></tr>')
    return ('<figure class="scroll"><table class="perclass"><caption>Per-class accuracy (%)</caption><thead><tr>'
            "<th>class</th><th>n</th><th>acc</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></figure>")


def _mistakes(report: dict[str, Any], best: dict[str, Any]) -> str:
    if not best["misclassified"]:
        return "<p>No misclassified test image.</p>"
    images, problem = _test_images(report)
    names = best["class_names"]
    cells = []
    for m in best["misclassified"]:
        if images is not None and m["index"] < len(images[1]) and int(images[1][m["index"]]) != m["true"]:
            images, problem = None, "the test set in the data directory differs from the one the study was tested on"
        img = "" if images is None else f'<img src="{_thumb(images[0][m["index"]])}" alt="test image {m["index"]}">'
        cells.append(f'<figure class="mistake">{img}<figcaption>#{m["index"]}<br>true <b>{escape(names[m["true"]])}'
                     f'</b><br>pred <b>{escape(names[m["pred"]])}</b> {100 * m["confidence"]:.0f}%</figcaption></figure>')
    note = f'<p class="note">Images not shown: {escape(problem)}.</p>' if problem else ""
    return note + '<div class="mistakes">' + "".join(cells) + "</div>"


def _thumb(image: np.ndarray) -> str:
    from convstudy.report.figures import png_data_uri

    return png_data_uri(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def _test_images(report: dict[str, Any]) -> tuple[tuple[np.ndarray, np.ndarray] | None, str | None]:
    """(test images, labels) from the data directory of the last run, or None and the reason."""
    prov = report["study"].get("provenance") or {}
    data_dir = prov.get("data_dir")
    if not data_dir:
        return None, "no data directory is recorded for this study"
    try:
        return _load_test_set(report["study"]["dataset"], data_dir), None
    except Exception as exc:  # noqa: BLE001  (any reason the files are unusable now; the report still renders)
        return None, f"the {report['study']['dataset']} test set could not be loaded from {data_dir} ({exc})"


@lru_cache(maxsize=2)
def _load_test_set(name: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    # Cached: the report is rewritten after every trial of a run, and the data does not change meanwhile.
    ds = load_dataset(name, data_dir, download=False)
    return ds.x_test.numpy(), ds.y_test.numpy()
