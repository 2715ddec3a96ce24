"""The HTML report at scale (issue 19, acceptances 1 and 4): 300 models x 3 seeds fabricated in a real store,
reported by `convstudy report`, driven in headless Chromium (playwright): size, load time, no errors or
requests, filters, parallel coordinates, curves on demand, and hostile text shown as text everywhere."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from convstudy.cli import main
from convstudy.report import collect, render
from convstudy.spec import build_study
from convstudy.store import State, StudyStore

# One xdist worker runs this file (`--dist loadgroup`), and its costly fixtures are session-scoped, so each is
# built once: a worker may run other files' tests in between, which would tear module fixtures down.
pytestmark = pytest.mark.xdist_group("test_html_scale")

EPOCHS = 12
SEEDS = 3
PWN = "window.__pwned = (window.__pwned || 0) + 1"
HOSTILE_LEVEL = f'"><img src=x onerror="{PWN}">'
HOSTILE_FACTOR = f"</script><script>{PWN}</script>"
HOSTILE_DESC = "</script><img src=x onerror=alert(1)><script>alert(2)</script>"
HOSTILE_NAME = f'<script>{PWN}</script>"><svg onload="{PWN}">'
LEVELS = {"kernel": [3, 5, 7], "width": [4, 8, 16, 32, 64], "block": ["plain", "residual", "wide", HOSTILE_LEVEL],
          HOSTILE_FACTOR: [0.1, 0.01, 0.001, 1e-4, 1e-5]}


def space() -> list[dict]:
    """300 models, one per combination of four factors (one of them named, one level spelled, to attack)."""
    models = []
    for i, combo in enumerate(itertools.product(*LEVELS.values())):
        factors = dict(zip(LEVELS, combo))
        models.append({"name": f"m{i:03d}-k{factors['kernel']}-w{factors['width']}",
                       "description": HOSTILE_DESC if i == 7 else f"conv {factors['width']} x {factors['kernel']}",
                       "layers": [f"conv({factors['width']},{factors['kernel']})", "pool(2)", "flatten", "dense(10)"],
                       "factors": factors})
    return models


def fabricate(out: Path, models: list[dict], finish: bool = True) -> dict[str, dict]:
    """A real study directory through the store API, with synthetic epochs and results (no training, no
    weights or prediction files); the last model's last seed failed. Returns the factors by model name."""
    study = build_study({"name": "scale", "description": HOSTILE_DESC, "dataset": "mnist", "seeds": SEEDS,
                         "train": {"epochs": EPOCHS}, "models": models}, source="test")
    store = StudyStore.create_or_open(out, study)
    db = store.db
    db.ensure_trials([(m.name, s, i) for i, m in enumerate(study.models) for s in study.seeds])
    trials = db.trials()
    for k, rec in enumerate(trials):
        quality = 0.9 + 0.08 * math.sin(k / 7.0) ** 2
        for e in range(1, EPOCHS + 1):
            db.record_epoch(rec.id, e, {"loss": 2.3 / e + 0.01 * rec.seed, "accuracy": quality * (1 - 0.5 / e),
                                        "val_loss": 2.4 / e + 0.02 * rec.seed, "val_accuracy": quality * (1 - 0.6 / e),
                                        "seconds": 0.25})
        if rec is trials[-1]:
            db.mark(rec.id, State.FAILED, error="synthetic failure")
        elif finish or k % 10:
            db.finish(rec.id, test_loss=0.3, test_accuracy=quality + 0.001 * rec.seed, device="cpu")
    store.close()
    return {m["name"]: m.get("factors", {}) for m in models}


@pytest.fixture(scope="session")
def big(tmp_path_factory) -> tuple[Path, dict[str, dict], dict]:
    """The 300-model study directory with its report.html written by `convstudy report --format html`,
    the factors by model name, and the report's data."""
    out = tmp_path_factory.mktemp("scale") / "out"
    factors = fabricate(out, space())
    assert main(["report", str(out), "--format", "html"]) == 0
    return out, factors, _collect(out)


@pytest.fixture(scope="session")
def chromium():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield browser
        browser.close()


class Page:
    """A playwright page that records console problems, uncaught errors, dialogs and every request."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console.{m.type}: {m.text}")
                     if m.type in ("error", "warning", "assert") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"exception: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.as_uri()
        self.page.goto(self.url)

    def __getattr__(self, name):
        return getattr(self.page, name)

    def visible(self) -> list[str]:
        return self.page.evaluate("Array.from(document.querySelectorAll('#comparison-table tbody tr'))"
                                  ".filter(r => !r.hidden).map(r => r.cells[0].textContent)")


def test_300_models_report_is_small_fast_quiet_and_offline(big, chromium):
    out, _, _ = big
    page = out / "report.html"
    assert page.stat().st_size < 5_000_000, page.stat().st_size
    # The acceptance's 2 s bound on the load event. The fastest of three loads, so that another job on a
    # shared machine does not stand for the page (see docs/benchmarks.md for the figure).
    times = []
    for _ in range(3):
        p = Page(chromium, page)
        times.append(p.evaluate("performance.timing.loadEventEnd - performance.timing.navigationStart"))
        assert p.problems == [] and p.requests == [p.url]
        assert p.evaluate("window.__pwned") is None
        p.close()
    assert 0 < min(times) < 2000, times
    print(f"load event: {times} ms")


def test_filters_leave_exactly_the_matching_rows(big, chromium):
    out, factors, _ = big
    p = Page(chromium, out / "report.html")
    names = list(factors)
    assert len(p.visible()) == 300 and p.locator("#f-count").text_content() == "300 of 300 models shown"
    # Real, labelled controls: a <label for> per select and input.
    for ident in ["f-text", "f-state"] + [f"f-factor-{j}" for j in range(len(LEVELS))]:
        assert p.locator(f'label[for="{ident}"]').count() == 1, ident
    p.select_option("#f-factor-0", "5")  # kernel
    assert sorted(p.visible()) == sorted(n for n in names if factors[n]["kernel"] == 5)
    p.select_option("#f-factor-2", HOSTILE_LEVEL)  # and block
    want = sorted(n for n in names if factors[n]["kernel"] == 5 and factors[n]["block"] == HOSTILE_LEVEL)
    assert sorted(p.visible()) == want and len(want) == 25
    # The parallel coordinates fade exactly the lines of the hidden rows.
    assert p.locator("path.pc-line").count() == 300
    assert p.locator("path.pc-line:not(.off)").count() == 25
    # Typed from the keyboard: the text filter narrows further.
    p.focus("#f-text")
    p.keyboard.type("-w64")
    assert sorted(p.visible()) == [n for n in want if n.endswith("-w64")] and len(p.visible()) == 5
    p.click("#f-reset")
    p.wait_for_function("document.querySelector('#f-count').textContent.startsWith('300 of')")
    p.select_option("#f-state", "failed")
    assert p.visible() == [names[-1]]
    assert p.problems == [] and p.requests == [p.url]


def test_curves_on_demand_and_the_best_group_stays_marked(big, chromium):
    out, _, report = big
    p = Page(chromium, out / "report.html")
    best = max(report["models"], key=lambda m: m["test_accuracy"]["mean"])["name"]
    # The best model's seed band is drawn at first; ticking two more rows adds theirs.
    assert p.locator("#curves-legend li").all_text_contents() == [f"{best} ({SEEDS} seeds)"]
    boxes = p.locator("#comparison-table tbody tr:not([hidden]) input.pick")
    boxes.nth(0).check()
    boxes.nth(1).check()
    assert p.locator("#curves-legend li").count() == 3 and p.locator("#curves-plot polyline").count() == 3
    p.select_option("#c-metric", "val_accuracy")
    assert p.locator("#curves-plot polygon").count() == 3
    # Sorting keeps the best group's marks on its rows.
    marked = sorted(m["name"] for m in report["models"] if m["same_as_best"])
    p.click("#comparison-table th:has-text('test acc')")
    rows = "Array.from(document.querySelectorAll('#comparison-table tbody tr.best')).map(r => r.cells[0].textContent)"
    assert 0 < len(marked) < 300 and sorted(p.evaluate(rows)) == marked
    assert p.problems == []


def test_hostile_text_is_text_in_every_view(big, chromium, tmp_path):
    out, _, collected = big
    html = (out / "report.html").read_text()
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in data and json.loads(data)["dims"][3]["name"] == HOSTILE_FACTOR
    # The spec refuses a hostile model name, so it reaches a page only through a hand-made report: a few
    # models of the real one, renamed.
    with pytest.raises(Exception, match="name"):
        build_study({"name": "x", "models": [{"name": HOSTILE_NAME, "layers": ["flatten", "dense(10)"]}]}, "t")
    report = copy.deepcopy(collected)
    report["models"] = [report["models"][i] for i in (7, 15, 16)]  # the hostile description and level
    for m in report["models"]:
        m["name"] = HOSTILE_NAME + m["name"]
    (tmp_path / "names.html").write_text(render(report, "html"))
    for path in (out / "report.html", tmp_path / "names.html"):
        p = Page(chromium, path)
        assert p.evaluate("window.__pwned") is None and p.problems == [], p.problems
        assert p.evaluate("document.scripts.length") == 2 and p.locator("img, iframe").count() == 0
        cells = p.locator("#comparison-table tbody td.text").all_text_contents()
        assert p.locator("#header .desc").text_content() == HOSTILE_DESC and HOSTILE_DESC in cells
        heads = p.locator("#comparison-table th").all_text_contents()
        assert HOSTILE_FACTOR in heads
        assert HOSTILE_LEVEL in p.locator("#f-factor-2 option").all_text_contents()
        assert HOSTILE_FACTOR in p.locator("#filters label").all_text_contents()
        assert HOSTILE_LEVEL in p.locator("#parcoords text title").all_text_contents()
        assert HOSTILE_FACTOR in p.locator("#parcoords text title").all_text_contents()
        if path.name == "names.html":
            name = report["models"][0]["name"]
            assert p.locator("#comparison-table td.name").first.text_content() == name
            p.locator("#comparison-table input.pick").first.check()
            assert any(t.startswith(name) for t in p.locator("#curves-legend li").all_text_contents())
            assert p.locator("#parcoords path title").first.text_content().startswith(name + ": ")
            assert p.locator("#comparison-table input.pick").first.get_attribute("aria-label").endswith(name)
        assert p.evaluate("window.__pwned") is None and p.problems == []
        p.close()


def test_running_study_reloads_itself_and_the_final_report_does_not(tmp_path):
    models = space()[:3]
    fabricate(tmp_path / "running", models, finish=False)
    assert main(["report", str(tmp_path / "running"), "--format", "html"]) == 0
    running = (tmp_path / "running" / "report.html").read_text()
    assert '<meta http-equiv="refresh" content="30">' in running and 'id="running-note"' in running
    fabricate(tmp_path / "done", models)
    done = render(_collect(tmp_path / "done"), "html")
    assert 'http-equiv="refresh"' not in done and "running-note" not in done


def test_optional_sections_show_only_with_their_data(tmp_path):
    fabricate(tmp_path / "s", space()[:2])
    report = _collect(tmp_path / "s")
    report["factors"], report["interactions"] = [], []
    assert 'id="factors"' not in render(report, "html") and 'id="search"' not in render(report, "html")
    report["factors"] = [{"name": HOSTILE_FACTOR, "levels": ["a", HOSTILE_LEVEL], "reference": "a", "p_value": 0.004,
                          "effects": [{"level": HOSTILE_LEVEL, "estimate": 0.0123, "ci95": [0.001, 0.02],
                                       "p_value": 0.004}]}]
    report["factor_fit"] = {"n": 6, "note": None}
    page = render(report, "html")
    effects = page[page.index('id="factors"'):]
    assert "+1.23" in effects and "+0.10 … +2.00" in effects and "0.004" in effects
    assert HOSTILE_FACTOR not in effects and HOSTILE_LEVEL not in effects
    assert "&lt;/script&gt;&lt;script&gt;" in effects and "&quot;&gt;&lt;img" in effects


def _collect(out: Path) -> dict:
    store = StudyStore.open_existing(out)
    try:
        return collect(store)
    finally:
        store.close()


def test_a_big_front_names_only_its_pareto_points():
    """Past LABELLED_POINTS models the trade-off figure draws every point but names only the front's."""
    from convstudy.report.tradeoffs import LABELLED_POINTS, tradeoff_svg

    n = LABELLED_POINTS + 10
    points = [{"name": f"model-{i:03d}", "params": 1000 + 100 * i, "mflops": 1.0 + i, "seconds": 2.0,
               "acc": 90 + (i % 7) * 0.5 + i * 0.01, "std": 0.2, "latency1": None, "latency1_ci": None,
               "latency256": None, "latency256_ci": None, "pareto_params": i in (0, 6, 13), "pareto_mflops": i == 0,
               "pareto_seconds": i == 0, "pareto_latency1": False, "pareto_latency256": False} for i in range(n)]
    svg = tradeoff_svg(points)
    assert all(f"model-{i:03d}" in svg for i in (0, 6, 13))
    assert "model-001" not in svg and "model-020" not in svg


def test_a_model_of_zero_mflops_reports_quietly_on_a_cost_axis_that_holds_it(tmp_path):
    """Issue 25 item 11: a model whose MFLOPs round to 0 (a 1x1x1 map into dense(10)) warned eight times from
    matplotlib and fell off the log cost axis; now the report is silent and the 0 sits on a symlog axis."""
    import subprocess
    import sys

    out = tmp_path / "out"
    fabricate(out, [{"name": "nothing", "layers": ["pool(28)", "flatten", "dense(10)"]},
                    {"name": "some", "layers": ["conv(4,3)", "pool(2)", "flatten", "dense(10)"]}])
    done = subprocess.run([sys.executable, "-m", "convstudy", "report", str(out), "--format", "html"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == f"wrote {out / 'report.html'}\n", done.stderr
    from convstudy.report.tradeoffs import tradeoff_figure, tradeoff_points

    points = tradeoff_points(_collect(out)["models"])
    assert [p["name"] for p in points] == ["nothing", "some"] and points[0]["mflops"] == 0.0
    some = points[1]["mflops"]
    fig = tradeoff_figure(points)
    axes = {ax.get_xlabel(): ax for ax in fig.axes if ax.get_visible()}
    mflops, params = axes["MFLOPs per image"], axes["parameters"]
    assert mflops.get_xscale() == "symlog" and params.get_xscale() == "log"
    lo, hi = mflops.get_xlim()
    assert lo < 0.0 < some < hi
    assert "by MFLOPs: linear from 0 up to the least cost above 0" in (out / "report.html").read_text()
