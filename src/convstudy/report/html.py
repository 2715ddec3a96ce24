"""The study's report as one self-contained HTML page: CSS, SVG figures, images, data and the one script all inline.
A Content-Security-Policy forbids every network request, so the page shows the same mailed, archived or offline.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from importlib.resources import files
from typing import Any

from convstudy import __version__
from convstudy.report.audit_view import audit_html
from convstudy.report.best import best_html
from convstudy.report.curves import curves_html, overlay_html, page_data, parallel_html
from convstudy.report.design_view import design_html
from convstudy.report.factors import factors_html
from convstudy.report.fair_view import fair_html
from convstudy.report.fidelity_view import fidelity_html
from convstudy.report.markup import el, esc, section
from convstudy.report.models import footnote, mixed_note, render_filters, render_table
from convstudy.report.racing import racing_html
from convstudy.report.search import search_html
from convstudy.report.tradeoffs import tradeoffs_html
from convstudy.store import State

REFRESH_S = 30
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def page(title: str, body: str, data: str = "", refresh: bool = False) -> str:
    """A complete HTML document around `body` (already escaped) and the `data` block the script reads;
    `refresh`: reload every REFRESH_S seconds (a study still running)."""
    reload = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">{reload}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'  # else browsers fetch /favicon.ico
            f"{el('title', esc(title))}<style>{asset('page.css')}</style></head>\n<body><main>\n{body}\n"
            f"<footer>convstudy {esc(__version__)} · {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</footer>"
            f"</main>{data}<script>{asset('page.js')}</script></body></html>\n")


def render_html(report: dict[str, Any]) -> str:
    """The study's report as one HTML page: header, filterable table, parallel coordinates, curves on demand,
    overlay, trade-offs, best model, and the sections whose data the report holds."""
    s = report["study"]
    label = "test (= validation)" if s["validation"] == "test" else "validation"
    models = report["models"]
    running = any(s["states"].get(k) for k in (State.PENDING, State.RUNNING))
    on_val = s.get("selection_metric") == "val_accuracy"
    sections = [
        ("comparison", "Comparison", render_filters(models) + render_table(models, on_val) + footnote(report)),
        ("parallel", "Factors and accuracy", parallel_html(report) if models else None),
        ("curves", "Loss by epoch, selected models", curves_html(report, label)),
        ("overlay", f"All models: {label} loss and accuracy by epoch", overlay_html(models, label)),
        ("tradeoffs", "Accuracy vs cost", tradeoffs_html(models)),
        ("best-model", "Best model", best_html(report)),
        ("factors", "Factors", factors_html(report)),
        ("design-spaces", "Design spaces", design_html(report)),
        ("racing", "Racing", racing_html(report)),
        ("rank-stability", "Rank stability", fidelity_html(report)),
        ("audit", "Fidelity audit", audit_html(report)),
        ("fair", "Fair comparison", fair_html(report)),
        ("search", "Search", search_html(report["search"]) if report.get("search") else None),
    ]
    body = "\n".join([_header(s, running)] + [section(*part) for part in sections if part[2] is not None])
    return page(f"{s['name']} · convstudy report", body, json_block("report-data", page_data(report)), refresh=running)


def _header(s: dict[str, Any], running: bool) -> str:
    prov = s.get("provenance") or {}
    train = (s.get("spec") or {}).get("train") or {}
    states = ", ".join(f"{n} {k}" for k, n in sorted(s["states"].items()))
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
    note = el("p", f"<b>Test set = validation set.</b> {esc(s['validation_note'])}", class_="note warn",
              id="validation-note") if s.get("validation_note") else ""
    note += "".join(el("p", esc(mixed_note(s, key)), class_="note warn mixed") for key in s.get("mixed", []))
    note += "".join(el("p", esc(w), class_="note warn") for w in s.get("warnings", []))
    if running:
        note += el("p", f"The study is still running: this page reloads every {REFRESH_S} s.", class_="note",
                   id="running-note")
    desc = el("p", esc(s["description"]), class_="desc") if s["description"] else ""
    facts = el("div", _dl("Settings", settings) + _dl("Run", run) + _dl("Provenance", versions), class_="facts")
    return el("header", el("h1", esc(s["name"])) + desc + note + facts, id="header")


def _setting(s: dict[str, Any], key: str, fallback: Any) -> Any:
    """A setting as the trials recorded it ("mixed: ..." when they differ), else the last run's."""
    uses = (s.get("numerics") or {}).get(key)
    if not uses:
        return fallback
    return next(iter(uses)) if len(uses) == 1 else "mixed: " + ", ".join(sorted(uses))


def _dl(title: str, items: list[tuple[str, Any]]) -> str:
    rows = "".join(el("dt", esc(k)) + el("dd", esc(v)) for k, v in items if v is not None)
    return el("div", el("h3", esc(title)) + el("dl", rows))


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


def json_block(ident: str, data: Any) -> str:
    """`data` as an inert JSON script block that no string inside it can break out of."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{ident}">{text}</script>'


@lru_cache(maxsize=2)
def asset(name: str) -> str:
    """A package data file inlined in the page: its style sheet or its one script (sorting, filters, parallel
    coordinates, curves)."""
    return files("convstudy.report").joinpath(name).read_text(encoding="utf-8")
