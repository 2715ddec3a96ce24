"""HTML report: all seven parts, escaping, no network, and a real render in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import select
import shutil
import struct
import subprocess
import threading
from html import escape
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from convstudy.cli import main
from convstudy.data import REGISTRY

# One xdist worker runs this file (`--dist loadgroup`), and its costly fixtures are session-scoped, so each is
# built once: a worker may run other files' tests in between, which would tear module fixtures down.
pytestmark = pytest.mark.xdist_group("test_html_report")

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
LAYERS = {
    "small": '["conv(4,3)", "pool(2)", "flatten", "dense(10)"]',
    "wide": '["conv(8,5)", "pool(2)", "flatten", "dense(16)", "dense(10)"]',
}


# ---------------------------------------------------------------- a tiny study, trained for real

def _digits(n: int, seed: int) -> tuple[bytes, bytes]:
    """IDX images whose class shows as a bright bar at a class-dependent row, so models learn something."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, 2 + 2 * y: 4 + 2 * y, 4:24] = 230
    return (struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes(),
            struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())


def write_tiny_dataset(directory: Path, n_train: int = 200, n_test: int = 60) -> dict[str, str]:
    """Gzip IDX files in `directory`; returns the SHA-256 of each decompressed file."""
    directory.mkdir(parents=True, exist_ok=True)
    (tri, trl), (tei, tel) = _digits(n_train, 1), _digits(n_test, 2)
    payloads = {"train_images": tri, "train_labels": trl, "test_images": tei, "test_labels": tel}
    for key, data in payloads.items():
        (directory / FILES[key]).write_bytes(gzip.compress(data, mtime=0))
    return {key: hashlib.sha256(data).hexdigest() for key, data in payloads.items()}


_TINY: dict = {}  # the `tiny` dataset entry the shared study (study_dir) was trained on


def register_tiny(monkeypatch, data_dir: Path) -> None:
    """A `tiny` dataset in the registry, checked against the files just written."""
    digests = write_tiny_dataset(data_dir)
    info = dataclasses.replace(REGISTRY["mnist"], name="tiny", sha256=digests, gz_sha256={}, mirrors=())
    monkeypatch.setitem(REGISTRY, "tiny", info)


def study_toml(name: str, description: str, seeds: int = 2, epochs: int = 2, validation: str = "test") -> str:
    models = "".join(f'\n[[models]]\nname = "{m}"\ndescription = "{m} model"\nlayers = {layers}\n'
                     for m, layers in LAYERS.items())
    return (f'name = "{name}"\ndescription = {_toml_str(description)}\ndataset = "tiny"\nseeds = {seeds}\n'
            f'[train]\nepochs = {epochs}\nbatch_size = 32\noptimizer = "adam"\nvalidation = "{validation}"\n'
            + models)


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_study(tmp: Path, monkeypatch, name: str = "tiny-study", description: str = "two tiny CNNs",
              seeds: int = 2, epochs: int = 2, out: Path | None = None, validation: str = "test") -> Path:
    """Train a 2-model study on the tiny dataset with `convstudy run`; returns its output directory."""
    data_dir = tmp / "data"
    if not (data_dir / FILES["test_images"]).exists():
        register_tiny(monkeypatch, data_dir)
    spec = tmp / f"{name}.toml"
    spec.write_text(study_toml(name, description, seeds, epochs, validation))
    out = out or tmp / "out" / name
    rc = main(["run", str(spec), "--out", str(out), "--data-dir", str(data_dir), "--device", "cpu", "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory):
    """One trained 2-model, 2-seed study, shared by the tests of this file (read-only for them). The `tiny`
    dataset is registered only while it trains (a session fixture's patch would outlive this file);
    `_tiny_known` registers it again for each test."""
    mp = pytest.MonkeyPatch()
    try:
        return run_study(tmp_path_factory.mktemp("html"), mp, description="<script>alert(1)</script> & friends")
    finally:
        _TINY["info"] = REGISTRY["tiny"]
        mp.undo()


@pytest.fixture(autouse=True)
def _tiny_known(study_dir, monkeypatch):
    """Each test of this file sees the `tiny` dataset the shared study was trained on, for its own duration."""
    monkeypatch.setitem(REGISTRY, "tiny", _TINY["info"])


# ---------------------------------------------------------------- headless Chromium over the DevTools pipe

def chromium_binary() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


class Browser:
    """Headless Chromium driven over --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4)."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def fds() -> None:
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        # Nothing may leave the machine: every host name but the loopback resolves to nothing.
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "about:blank"]
        # pass_fds keeps 3 and 4 open in the child after preexec_fn has put the pipe ends there.
        self.proc = subprocess.Popen(args, preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf, self._id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._next(deadline=time.monotonic() + 60)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if not select.select([self._r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("no message from Chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def load(self, url: str, width: int = 1200, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._next(deadline))
        self.call("Runtime.evaluate", session=True, expression="1", awaitPromise=True)  # drain late events

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, log errors (CSP, failed loads) and dialogs."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p['args']]}")
            elif m == "Runtime.exceptionThrown":
                details = p["exceptionDetails"]
                out.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log: {p['entry']['text']}")
            elif m == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('message')}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)


@pytest.fixture
def browser(tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    b = Browser(binary, tmp_path / "profile")
    yield b
    b.close()


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over a folder; `hits` logs every request line it receives."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_request(self, code="-", size="-"):
            hits.append(self.requestline)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_port}/", hits
    httpd.shutdown()
    httpd.server_close()


def test_harness_sees_console_errors_and_requests(browser, served):
    """The checks below can fail: a page with a script error and a remote image is caught."""
    root, base, hits = served
    (root / "bad.html").write_text('<!doctype html><script>console.error("boom"); nosuch();</script>'
                                   '<img src="http://example.com/x.png"><img src="/missing.png">')
    browser.load(base + "bad.html")
    problems = " | ".join(browser.problems())
    assert "boom" in problems and "nosuch" in problems
    assert "http://example.com/x.png" in browser.requests()
    assert "GET /missing.png HTTP/1.1" in hits


def test_page_in_chromium_has_no_errors_no_requests_and_is_not_blank(browser, served, study_dir, tmp_path):
    root, base, hits = served
    shutil.copy(study_dir / "report.html", root / "report.html")
    browser.load(base + "report.html", height=2400)
    assert browser.problems() == []
    assert [u for u in browser.requests() if not u.startswith("data:")] == [base + "report.html"]
    assert hits == ["GET /report.html HTTP/1.1"]
    # Rendered as text, not run: the description is the literal string, and ours is the only script
    # (beside the inert JSON data block).
    assert browser.evaluate("document.querySelector('#header .desc').textContent") == \
        "<script>alert(1)</script> & friends"
    assert browser.evaluate("Array.from(document.scripts).map(s => s.type)") == ["application/json", ""]
    # Sorting by a column reorders the rows: params ascending, then descending.
    order = "Array.from(document.querySelectorAll('#comparison-table tbody tr td.name')).map(c => c.textContent)"
    params = "Array.from(document.querySelectorAll('#comparison-table th')).find(h => h.textContent === 'params')"
    browser.evaluate(f"{params}.click()")
    ascending = browser.evaluate(order)
    browser.evaluate(f"{params}.click()")
    assert browser.evaluate(order) == ascending[::-1] and ascending == ["small", "wide"]
    png = browser.screenshot()
    (tmp_path / "shot.png").write_bytes(png)
    from PIL import Image, ImageStat

    img = Image.open(io.BytesIO(png)).convert("L")
    assert img.size == (1200, 2400)
    assert len(img.getcolors(1 << 16)) > 20 and ImageStat.Stat(img).stddev[0] > 10


# ---------------------------------------------------------------- the page's parts, straight from the HTML

def section(page: str, ident: str) -> str:
    start = page.index(f'id="{ident}"')
    end = page.find("<section", start)
    return page[start: end if end > 0 else len(page)]


@pytest.fixture(scope="session")
def page(study_dir) -> str:
    return (study_dir / "report.html").read_text()


def test_run_writes_report_html_with_all_seven_parts(page, study_dir):
    report = json.loads((study_dir / "report.json").read_text())
    # 1. header: name, description, dataset, settings, trials, time, device, versions, commit, test = validation
    head = section(page, "header")
    for text in ("<h1>tiny-study</h1>", "<dd>tiny</dd>", "<dt>epochs</dt><dd>2</dd>", "<dt>batch size</dt><dd>32</dd>",
                 "4 (4 complete)", "total training time", report["study"]["provenance"]["device"],
                 report["study"]["provenance"]["torch"], "git commit", 'id="validation-note"'):
        assert text in head, text
    # 2. sortable comparison table: one row per model with every column
    table = section(page, "comparison")
    assert 'class="sortable"' in table and table.count("<tr") == 3
    for col in ("state", "params", "MFLOPs", "test acc % (mean ± std)", "95% CI", "best", "test loss", "s/epoch",
                "samples/s", "diverged", "failed"):
        assert f">{escape(col)}</th>" in table, col
    for m in report["models"]:
        assert f'<td data-v="{m["name"]}" class="name">{m["name"]}</td>' in table and ">2 complete</td>" in table
        assert f'{m["params"]:,}' in table and f"{100 * m['test_accuracy']['mean']:.2f} ± " in table
    assert "★" in table and 'id="filters"' in table
    # 3. loss curves on demand, and for readers without JavaScript the best model's figure (±1 std band)
    curves = section(page, "curves")
    assert curves.count("<svg") == 1 and "mean ± std, 2 seeds" in curves and 'id="curves-plot"' in curves
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page).group(1))
    assert [len(m["seeds"]) for m in data["models"]] == [2, 2]
    assert data["models"][0]["seeds"][0]["val_loss"] == \
        [float(f"{e['val_loss']:.5g}") for e in report["models"][0]["trials"][0]["epochs"]]
    # A finished study does not reload itself; hand-written models have no factors to draw.
    assert 'http-equiv="refresh"' not in page and "No model has factors" in section(page, "parallel")
    # 4. overlay of validation loss and accuracy; 5. accuracy vs params and time with the Pareto front
    assert section(page, "overlay").count("<svg") == 1
    trade = section(page, "tradeoffs")
    assert trade.count("<svg") == 1 and "Pareto front" in trade and "training time per trial" in trade
    # 6. best model: confusion matrix, per-class accuracy, misclassified images with labels and confidence
    best = section(page, "best-model")
    summary = report["best_model"]
    assert summary["model"] == max(report["models"], key=lambda m: m["test_accuracy"]["mean"])["name"]
    assert np.array(summary["confusion"]).sum() == 2 * 60 and summary["seeds"] == [0, 1]
    assert 'class="cm"' in best and best.count("<tr>") >= 10 and "Per-class accuracy" in best
    shown = len(summary["misclassified"])
    assert shown == min(24, summary["n_misclassified"]) > 0
    assert best.count('<img src="data:image/png;base64,') == shown and best.count("true <b>") == shown
    assert "Images not shown" not in best
    # 7. user text escaped (see also the browser test)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in page


def test_page_is_self_contained(page):
    assert page.count("<script") == 2 and page.count('<script type="application/json"') == 1
    assert "Content-Security-Policy" in page
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page) + re.findall(r"url\(([^)]*)\)", page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith("data:")]
    assert not re.search(r"@import|<link[^>]+stylesheet|<iframe|<object|<embed", page)


def test_missing_images_are_explained_not_fatal(study_dir):
    from convstudy.report import render

    report = json.loads((study_dir / "report.json").read_text())
    report["study"]["provenance"]["data_dir"] = str(study_dir / "no-such-dir")
    best = section(render(report, "html"), "best-model")
    assert "Images not shown" in best and "no-such-dir" in best and "<img" not in best
    assert best.count("true <b>") == len(report["best_model"]["misclassified"])


def test_holdout_study_has_no_validation_note_and_empty_study_renders(study_dir):
    from convstudy.report import render

    report = json.loads((study_dir / "report.json").read_text())
    report["study"].update(validation="holdout", validation_note=None)
    assert 'id="validation-note"' not in render(report, "html")
    report["models"], report["best_model"] = [], None
    empty = render(report, "html")
    assert "No trial has started yet" in empty and "No finished trial" in empty


def test_cli_report_html_default_and_output_file(study_dir, tmp_path):
    (study_dir / "report.html").unlink()
    assert main(["report", str(study_dir), "--format", "html"]) == 0
    assert (study_dir / "report.html").read_text().startswith("<!doctype html>")
    target = tmp_path / "elsewhere.html"
    assert main(["report", str(study_dir), "--format", "html", "-o", str(target)]) == 0
    assert 'id="best-model"' in target.read_text()


def test_html_is_escaped_in_one_place():
    """Issue 27: every section writes HTML through report.markup, so no module escapes (or forgets to) on its own."""
    from pathlib import Path

    import convstudy.report
    from convstudy.report.markup import el, esc, table

    assert el("td", esc("<b>&"), data_v='"1"', class_=None, title="it's") == \
        '<td data-v="&quot;1&quot;" title="it&#x27;s">&lt;b&gt;&amp;</td>'
    assert table(["<h>"], [["<c>", 2]], scroll=False) == \
        "<table><thead><tr><th>&lt;h&gt;</th></tr></thead><tbody><tr><td>&lt;c&gt;</td><td>2</td></tr></tbody></table>"
    for path in Path(convstudy.report.__file__).parent.glob("*.py"):
        if path.name != "markup.py":
            assert not re.search(r"\bescape\b|import html\b|from html import", path.read_text()), path.name
