"""examples/quickstart.ipynb runs top to bottom in a Jupyter kernel (nbclient) on the tiny MNIST."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from test_api import srcdoc

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"

# Run after the notebook's cells, in its kernel: the frame's rows, then a hostile study shown quietly.
CHECK_ROWS = """import json
print(json.dumps([[m, int(s), st] for m, s, st in zip(frame.model, frame.seed, frame.state)]))"""
HOSTILE = """from convstudy.spec import Study
hostile = Study(name="hostile", description="<script>window.pwned = 1</script>", models=[
    {"name": "m", "description": "<img src=x onerror=alert(1)>", "layers": ["conv(4,3)", "pool(2)", "flatten", "dense(10)"]}])
convstudy.run(hostile, out="runs/hostile", data_dir=data_dir, epochs=1, train_limit=100, quiet=True)"""


def texts(cell) -> str:
    """Everything a cell showed, as text (streams, and the text/plain and text/html of displays)."""
    parts = [o.get("text", "") for o in cell.outputs]
    parts += [o["data"].get(k, "") for o in cell.outputs if "data" in o for k in ("text/plain", "text/html")]
    return "\n".join(parts)


def test_quickstart_notebook_runs_on_tiny_data(tiny_mnist, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    n = len(nb.cells)
    nb.cells += [nbformat.v4.new_code_cell(CHECK_ROWS), nbformat.v4.new_code_cell(HOSTILE)]

    # The kernel is this interpreter (the venv's), started from a spec in tmp_path: nothing is installed.
    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    env = {**tiny_mnist.env, "CONVSTUDY_DATA_DIR": str(tiny_mnist.dir), "CONVSTUDY_QUICKSTART": "tiny"}
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "convstudy test", "language": "python", "env": env}))
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    work = tmp_path / "work"  # the notebook's runs/ go here, not into examples/
    work.mkdir()
    NotebookClient(nb, km=km, timeout=240, resources={"metadata": {"path": str(work)}}).execute()

    code = [c for c in nb.cells[:n] if c.cell_type == "code"]
    run_cell = next(c for c in code if "convstudy.run(" in c.source)
    assert "k3-2 seed 1 · Epoch 1/1" in texts(run_cell)  # the progress lines render in Jupyter
    assert {"text/plain": ""} in [o.get("data") for o in run_cell.outputs]  # the live table, cleared at the end
    assert json.loads(nb.cells[n].outputs[0]["text"]) == [
        ["k3-1", 0, "complete"], ["k3-1", 1, "complete"], ["k3-2", 0, "complete"], ["k3-2", 1, "complete"]]
    summary = next(c for c in code if c.source.strip() == "results.summary()")
    assert "★" in texts(summary) and "k3-2" in texts(summary)

    report = code[-1].outputs[0]["data"]["text/html"]
    assert report.startswith("<iframe") and "<script" not in report
    assert "k3-1" in srcdoc(report) and (work / "runs" / "quickstart" / "study.db").is_file()

    hostile = nb.cells[n + 1].outputs
    assert [o["output_type"] for o in hostile] == ["execute_result"]  # quiet=True: silent, no progress
    page = srcdoc(hostile[0]["data"]["text/html"])
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page and "<script>window.pwned" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
