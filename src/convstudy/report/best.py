"""The Best model section: the pooled confusion matrix, per-class accuracy and most confident mistakes of the
model the best group put first, gathered from the stored test predictions; the page loads the mistaken test
images from the run's data directory."""

from __future__ import annotations

from typing import Any

import numpy as np

from convstudy.data import get_info, load_dataset
from convstudy.report.figures import png_data_uri
from convstudy.report.markup import el, esc, md_table, md_text
from convstudy.store import State, StudyStore

MAX_MISTAKES = 24  # the best model's most confident mistakes the report keeps


def best_model_summary(store: StudyStore, models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pooled confusion matrix over the best model's seeds (as `best_group` marked it: `test` "best") and
    the most confident mistakes of one seed."""
    best = next((m for m in models if m.get("test") == "best"), None)
    if best is None or not best["test_accuracy"]["n"]:
        return None
    done = [t for t in best["trials"] if t["state"] == State.COMPLETE]
    preds = {t["seed"]: store.load_predictions(best["name"], t["seed"]) for t in done}
    preds = {s: p for s, p in preds.items() if p is not None}
    if not preds:
        return None
    names = list(get_info(store.study.dataset).class_names)
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    for probs, labels in preds.values():
        np.add.at(confusion, (labels.numpy(), probs.argmax(1).numpy()), 1)
    # The seed closest to the mean accuracy stands for the model in the grid of mistakes.
    mean = best["test_accuracy"]["mean"]
    seed = min(preds, key=lambda s: abs(next(t["test_accuracy"] for t in done if t["seed"] == s) - mean))
    probs, labels = preds[seed]
    conf, pred = probs.max(1)
    wrong = np.flatnonzero((pred != labels).numpy())
    wrong = wrong[np.argsort(-conf.numpy()[wrong], kind="stable")]
    rows = confusion.sum(1)
    return {
        "model": best["name"],
        "seeds": sorted(preds),
        "seed": seed,
        "n_test": int(labels.numel()),
        "class_names": names,
        "confusion": confusion.tolist(),
        "per_class_accuracy": [float(confusion[i, i] / rows[i]) if rows[i] else None for i in range(k)],
        "n_misclassified": int(wrong.size),
        "misclassified": [{"index": int(i), "true": int(labels[i]), "pred": int(pred[i]),
                           "confidence": float(conf[i])} for i in wrong[:MAX_MISTAKES]],
    }


def best_markdown(best: dict[str, Any] | None) -> list[str]:
    """The best model's pooled confusion matrix under the class names (rows: true class), as in report.html."""
    if not best:
        return []
    seeds = ", ".join(map(str, best["seeds"]))
    return ["", f"Confusion matrix of **{md_text(best['model'])}** (rows: true class, columns: predicted; "
                f"seeds {seeds}, {best['n_test']:,} test images each):", "",
            *md_table(["true \\ predicted", *map(md_text, best["class_names"])],
                      ([name, *row] for name, row in zip(best["class_names"], best["confusion"])),
                      "l" + "r" * len(best["class_names"]))]


METRIC_LABELS = {"val_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}


def best_html(report: dict[str, Any]) -> str:
    """The Best model section's HTML (everything escaped)."""
    best = report.get("best_model")
    if not best:
        return "<p>No finished trial with stored test predictions yet.</p>"
    seeds = best["seeds"]
    shown = len(best["misclassified"])
    shown = f", first {shown}" if best["n_misclassified"] > shown else ""
    metric = METRIC_LABELS[report["study"].get("selection_metric", "test_accuracy")]
    out = [f"<p>Best mean {metric}: {el('b', esc(best['model']))}. Confusion matrix and per-class "
           f"accuracy pooled over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
           f"({esc(', '.join(map(str, seeds)))}), {best['n_test']:,} test images each.</p>",
           '<div class="pair">', _confusion(best), _per_class(best), "</div>",
           f"<h3>Most confident mistakes (seed {best['seed']}: {best['n_misclassified']:,} of "
           f"{best['n_test']:,} misclassified{shown})</h3>",
           _mistakes(report, best)]
    return "\n".join(out)


def _confusion(best: dict[str, Any]) -> str:
    names, cm = best["class_names"], np.array(best["confusion"])
    rows = cm.sum(1, keepdims=True).clip(min=1)
    head = "".join(el("th", esc(n)) for n in names)
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            share = cm[i, j] / rows[i, 0]
            # Blue shades the correct diagonal, vermillion the confusions (Okabe–Ito, colour-blind safe).
            rgb = "0,114,178" if i == j else "213,94,0"
            alpha = share if i == j else min(1.0, 4 * share)
            cells.append(el("td", str(cm[i, j] or ""), style=f"background:rgba({rgb},{alpha:.3f})",
                            class_="ink" if alpha > 0.55 else None,
                            title=f"true {name}, predicted {names[j]}: {cm[i, j]}"))
        body.append(el("tr", el("th", esc(name)) + "".join(cells)))
    return (f'<figure class="scroll"><table class="cm"><caption>Confusion matrix (rows: true class, columns: '
            f"predicted)</caption><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "</figure>")


def _per_class(best: dict[str, Any]) -> str:
    rows = []
    cm = np.array(best["confusion"])
    for i, (name, acc) in enumerate(zip(best["class_names"], best["per_class_accuracy"])):
        pct = "–" if acc is None else f"{100 * acc:.2f}"
        width = 0 if acc is None else 100 * acc
        rows.append(el("tr", el("th", esc(name)) + el("td", f"{int(cm[i].sum()):,}", class_="num")
                       + el("td", pct, class_="num")
                       + el("td", el("span", class_="bar", style=f"width:{width:.1f}%"), class_="barcell")))
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
        cells.append(el("figure", img + el("figcaption", f"#{m['index']}<br>true {el('b', esc(names[m['true']]))}"
                                           f"<br>pred {el('b', esc(names[m['pred']]))} {100 * m['confidence']:.0f}%"),
                        class_="mistake"))
    note = el("p", f"Images not shown: {esc(problem)}.", class_="note") if problem else ""
    return note + '<div class="mistakes">' + "".join(cells) + "</div>"


def _thumb(image: np.ndarray) -> str:
    return png_data_uri(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def _test_images(report: dict[str, Any]) -> tuple[tuple[np.ndarray, np.ndarray] | None, str | None]:
    """(test images, labels) from the data directory of the last run, or None and the reason."""
    prov = report["study"].get("provenance") or {}
    data_dir = prov.get("data_dir")
    if not data_dir:
        return None, "no data directory is recorded for this study"
    try:
        ds = load_dataset(report["study"]["dataset"], data_dir, download=False)
        return (ds.x_test.numpy(), ds.y_test.numpy()), None
    except Exception as exc:  # noqa: BLE001  (any reason the files are unusable now; the report still renders)
        return None, f"the {report['study']['dataset']} test set could not be loaded from {data_dir} ({exc})"
