"""One self-contained HTML page per study: CSS, SVG figures, images, data and the one script all inline.

A Content-Security-Policy forbids every network request, so the page can be mailed, archived or opened
offline and shows the same thing. Every piece of user text goes through `html.escape` (or, in the
script, `textContent`). The table is in html_table, the interactive parts in html_explore(.js).
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

from convstudy import __version__
from convstudy.report.figures import TRADEOFFS, overlay_svg, tradeoff_panels, tradeoff_points, tradeoff_svg
from convstudy.report.html_best import render_best
from convstudy.report.html_explore import curves_section, json_block, page_data, parallel_section, script
from convstudy.report.html_sections import OPTIONAL_SECTIONS
from convstudy.report.html_style import CSS
from convstudy.report.html_table import footnote, render_filters, render_table
from convstudy.report.tables import mixed_note

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
REFRESH_S = 30
OVERLAY_MAX = 16  # models one figure can tell apart (8 colours x 2 line styles); past it, pick curves instead


def page(title: str, body: str, data: str = "", refresh: bool = False) -> str:
    """A complete HTML document around `body` (already escaped) and the `data` block the script reads;
    `refresh`: reload every REFRESH_S seconds (a study still running)."""
    reload = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">{reload}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'  # else browsers fetch /favicon.ico
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
            f"<footer>convstudy {escape(__version__)} · {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</footer>"
            f"</main>{data}<script>{script()}</script></body></html>\n")


def render_html(report: dict[str, Any]) -> str:
    """The study's report as one HTML page: header, filterable table, parallel coordinates, curves on demand,
    overlay, trade-offs, best model, and the optional sections whose data the report holds."""
    s = report["study"]
    label = "test (= validation)" if s["validation"] == "test" else "validation"
    models = report["models"]
    points = tradeoff_points(models)
    running = any(s["states"].get(k) for k in ("pending", "running"))
    sections = [
        _header(s, running),
        _section("comparison", "Comparison", render_filters(models) + render_table(models, s.get("selection_metric") == "val_accuracy") + footnote(report)),
        _section("parallel", "Factors and accuracy", parallel_section(report)) if models else "",
        _section("curves", "Loss by epoch, selected models", curves_section(report, label)),
        _section("overlay", f"All models: {label} loss and accuracy by epoch", _overlay(models, label)),
        _section("tradeoffs", "Accuracy vs cost", _tradeoffs(points)),
        _section("best-model", "Best model", render_best(report)),
    ]
    for ident, title, draw in OPTIONAL_SECTIONS:
        inner = draw(report)
        if inner is not None:
            sections.append(_section(ident, title, inner))
    if report.get("search"):
        from convstudy.report.search import search_html

        sections.append(search_html(report["search"]))
    return page(f"{s['name']} · convstudy report", "\n".join(sections),
                json_block("report-data", page_data(report)), refresh=running)


def _overlay(models: list[dict[str, Any]], label: str) -> str:
    if len(models) > OVERLAY_MAX:
        return (f"<p>{len(models)} models are too many lines for one figure: tick models in the table to "
                "compare their curves above.</p>")
    return _figure(overlay_svg(models, label), "Mean over the finished seeds of each model.")


def _tradeoffs(points: list[dict[str, Any]]) -> str:
    svg = tradeoff_svg(points)
    if svg is not None and len(points) > OVERLAY_MAX:
        # Thousands of SVG elements: closed, the browser neither lays them out nor paints them, so a big
        # study's page opens in a fraction of the time (issue 19: 300 models within 2 s), still without script.
        svg = f"<details><summary>Show the figure ({len(points)} models)</summary>{svg}</details>"
    return _figure(svg, _pareto_caption(points))


def _section(ident: str, title: str, inner: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>\n{inner}\n</section>'


def _figure(svg: str | None, caption: str) -> str:
    if svg is None:
        return "<p>No finished epoch yet.</p>"
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _header(s: dict[str, Any], running: bool) -> str:
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
    if running:
        note += (f'<p class="note" id="running-note">The study is still running: this page reloads every '
                 f"{REFRESH_S} s.</p>")
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


def _pareto_caption(points: list[dict[str, Any]]) -> str:
    keys = tradeoff_panels(points)
    fronts = "; ".join(f"by {TRADEOFFS[key][1]} " + (", ".join(
        escape(p["name"]) for p in sorted((p for p in points if p[f"pareto_{key}"]), key=lambda p: p[key])) or "–")
        for key in keys)
    latency = ("; latency: PyTorch on this CPU as the trainer runs the model, median with its 95% CI "
               "(convstudy latency)") if "latency1" in keys else ""
    zero = [TRADEOFFS[key][1] for key in keys if any(p[key] == 0 for p in points)]
    axis = f"log x (by {', '.join(zero)}: linear from 0 up to the least cost above 0)" if zero else "log x"
    return (f"Mean test accuracy ± 1 std over seeds; {axis}{latency}. Pareto front (no model is both cheaper and more "
            f"accurate): {fronts}.")
