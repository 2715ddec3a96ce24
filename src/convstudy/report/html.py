"""One self-contained HTML page per study: CSS, SVG figures, images and the sorting script all inline.

A Content-Security-Policy forbids every network request, so the page can be mailed, archived or opened
offline and shows the same thing. Every piece of user text goes through `html.escape`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

from convstudy import __version__
from convstudy.report.figures import loss_svg, overlay_svg, tradeoff_points, tradeoff_svg
from convstudy.report.html_best import render_best
from convstudy.report.html_style import CSS, SORT_JS
from convstudy.report.tables import mixed_note

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
BEST_MARK = "★"


def page(title: str, body: str) -> str:
    """A complete HTML document around `body` (already escaped)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'  # else browsers fetch /favicon.ico
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
            f"<footer>convstudy {escape(__version__)} · {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</footer>"
            f"</main><script>{SORT_JS}</script></body></html>\n")


def render_html(report: dict[str, Any]) -> str:
    """The study's report as one HTML page with the seven parts of issue 5."""
    s = report["study"]
    label = "test (= validation)" if s["validation"] == "test" else "validation"
    models = report["models"]
    points = tradeoff_points(models)
    sections = [
        _header(s),
        _section("comparison", "Comparison", _table(models) + _footnote()),
        _section("curves", "Loss by epoch, per model", _curves(models, label)),
        _section("overlay", f"All models: {label} loss and accuracy by epoch",
                 _figure(overlay_svg(models, label), "Mean over the finished seeds of each model.")),
        _section("tradeoffs", "Accuracy vs cost",
                 _figure(tradeoff_svg(points), _pareto_caption(points))),
        _section("best-model", "Best model", render_best(report)),
    ]
    if report.get("search"):
        from convstudy.report.search import search_html

        sections.append(search_html(report["search"]))
    return page(f"{s['name']} · convstudy report", "\n".join(sections))


def _section(ident: str, title: str, inner: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>\n{inner}\n</section>'


def _figure(svg: str | None, caption: str) -> str:
    if svg is None:
        return "<p>No finished epoch yet.</p>"
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _header(s: dict[str, Any]) -> str:
    prov = s.get("provenance") or {}
    train = (s.get("spec") or {}).get("train") or {}
    states = ", ".join(f"{n} {escape(k)}" for k, n in sorted(s["states"].items()))
    settings = [("dataset", s["dataset"]), ("seeds", ", ".join(map(str, s["seeds"]))), ("epochs", s["epochs"]),
                ("batch size", s["batch_size"]), ("validation", s["validation"]),
                ("optimizer", _opt(train.get("optimizer", "adam"))), ("train limit", s["train_limit"] or "all"),
                ("spec fingerprint", s["fingerprint"])]
    settings += [(k.replace("_", " "), v) for k, v in train.items()
                 if k not in ("epochs", "batch_size", "validation", "optimizer", "train_limit")]
    run = [("trials", f"{s['trials']} ({states})" if states else s["trials"]),
           ("total training time", _duration(s["total_train_seconds"])),
           ("device", prov.get("device")), ("precision", _setting(s, "precision", prov.get("precision"))),
           ("threads", _setting(s, "threads", prov.get("threads"))), ("executor", prov.get("executor")),
           ("train / val / test images", "/".join(f"{prov[k]:,}" for k in ("n_train", "n_val", "n_test"))
            if all(isinstance(prov.get(k), int) for k in ("n_train", "n_val", "n_test")) else None)]
    versions = [("convstudy", prov.get("convstudy")), ("git commit", prov.get("git_commit")),
                ("python", prov.get("python")), ("torch", prov.get("torch")), ("host", prov.get("host")),
                ("platform", prov.get("platform")), ("data dir", prov.get("data_dir")),
                ("command", " ".join(map(str, prov["argv"])) if prov.get("argv") else None)]
    note = (f'<p class="note warn" id="validation-note"><b>Test set = validation set.</b> '
            f"{escape(s['validation_note'])}</p>") if s.get("validation_note") else ""
    note += "".join(f'<p class="note warn mixed">{escape(mixed_note(s, key))}</p>' for key in s.get("mixed", []))
    note += "".join(f'<p class="note warn">{escape(w)}</p>' for w in s.get("warnings", []))
    desc = f'<p class="desc">{escape(s["description"])}</p>' if s["description"] else ""
    return (f'<header id="header"><h1>{escape(s["name"])}</h1>{desc}{note}<div class="facts">'
            f"{_dl('Settings', settings)}{_dl('Run', run)}{_dl('Provenance', versions)}</div></header>")


def _setting(s: dict[str, Any], key: str, fallback: Any) -> Any:
    """A setting as the trials recorded it ("mixed: ..." when they differ), else the last run's."""
    uses = (s.get("numerics") or {}).get(key)
    if not uses:
        return fallback
    return next(iter(uses)) if len(uses) == 1 else "mixed: " + ", ".join(sorted(uses))


def _dl(title: str, items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in items if v is not None)
    return f"<div><h3>{escape(title)}</h3><dl>{rows}</dl></div>"


def _opt(opt: Any) -> str:
    if isinstance(opt, dict):
        args = ", ".join(f"{k}={v}" for k, v in opt.items() if k != "name")
        return f"{opt.get('name')}({args})"
    return str(opt)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{s}s"


COLUMNS = ("model", "description", "params", "MFLOPs", "test acc % (mean ± std)", "95% CI", "best", "n",
           "test loss", "s/epoch", "samples/s", "diverged", "failed", "retries")


def _table(models: list[dict[str, Any]]) -> str:
    if not models:
        return "<p>No trial has started yet.</p>"
    notebook = any(m.get("notebook_accuracy") is not None for m in models)
    cols = COLUMNS + (("notebook acc %",) if notebook else ())
    head = "".join(f'<th scope="col" tabindex="0">{escape(c)}</th>' for c in cols)
    rows = [_row(m, notebook) for m in models]
    return (f'<div class="scroll"><table class="sortable" id="comparison-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _row(m: dict[str, Any], notebook: bool) -> str:
    acc, loss = m["test_accuracy"], m["test_loss"]
    ci = acc["ci95"]
    trials = m.get("trials", [])
    retries = sum(max(0, t.get("attempts", 1) - 1) for t in trials)  # attempts past the first, e.g. a lost worker
    cells = [
        _td(m["name"], m["name"], cls="name"),
        _td(m["description"], m["description"], cls="text"),
        _td(f"{m['params']:,}", m["params"]),
        _td(f"{m['mflops']:.2f}", m["mflops"]),
        _td(_pct(acc), acc["mean"]),
        _td(f"{max(0.0, 100 * ci[0]):.2f} – {min(100.0, 100 * ci[1]):.2f}" if ci else "–", ci[0] if ci else None),
        _td(BEST_MARK if m["same_as_best"] else "", int(m["same_as_best"]),
            title=f"p = {m['p_value']:.3g} ({m['test']})" if m.get("p_value") is not None else None),
        _td(str(acc["n"]), acc["n"]),
        _td(f"{loss['mean']:.4f}" if loss["n"] else "–", loss["mean"]),
        _td(f"{m['seconds_per_epoch']:.2f}" if m["seconds_per_epoch"] else "–", m["seconds_per_epoch"]),
        _td(f"{m['samples_per_s']:,.0f}" if m["samples_per_s"] else "–", m["samples_per_s"]),
        _td(str(m["diverged"]), m["diverged"], cls="bad" if m["diverged"] else None),
        _td(str(m["failed"]), m["failed"], cls="bad" if m["failed"] else None),
        _td(str(retries), retries, title=", ".join(f"seed {t['seed']}: {t['attempts']} attempts" for t in trials
                                                  if t["attempts"] > 1) or None),
    ]
    if notebook:
        nb = m.get("notebook_accuracy")
        cells.append(_td(f"{100 * nb:.2f}" if nb is not None else "–", nb))
    best = ' class="best"' if m["same_as_best"] else ""
    return f"<tr{best}>{''.join(cells)}</tr>"


def _td(text: str, key: Any, cls: str | None = None, title: str | None = None) -> str:
    attrs = "" if key is None else f' data-v="{escape(str(key))}"'
    attrs += f' class="{cls}"' if cls else ""
    attrs += f' title="{escape(title)}"' if title else ""
    return f"<td{attrs}>{escape(text)}</td>"


def _pct(stat: dict[str, Any]) -> str:
    if not stat["n"]:
        return "–"
    return f"{100 * stat['mean']:.2f}" + (f" ± {100 * stat['std']:.2f}" if stat["n"] > 1 else "")


def _footnote() -> str:
    return (f'<p class="small">{BEST_MARK} = statistically indistinguishable from the best model (Welch\'s '
            "t-test over seeds, or McNemar's test on paired test predictions with one seed; α = 0.05); hover "
            "for p. 95% CI: Student t over seeds. Click a column heading to sort.</p>")


def _curves(models: list[dict[str, Any]], label: str) -> str:
    figs = []
    for m in models:
        svg = loss_svg(m, label)
        if svg is not None:
            figs.append(f'<figure class="card">{svg}<figcaption><b>{escape(m["name"])}</b>: '
                        f'{escape(m["description"])}</figcaption></figure>')
    return f'<div class="grid">{"".join(figs)}</div>' if figs else "<p>No finished epoch yet.</p>"


def _pareto_caption(points: list[dict[str, Any]]) -> str:
    by_params = ", ".join(escape(p["name"]) for p in sorted(points, key=lambda p: p["params"]) if p["pareto_params"])
    by_time = ", ".join(escape(p["name"]) for p in sorted(points, key=lambda p: p["seconds"]) if p["pareto_seconds"])
    return (f"Mean test accuracy ± 1 std over seeds; log x. Pareto front (no model is both cheaper and more "
            f"accurate): by parameters {by_params or '–'}; by training time {by_time or '–'}.")
