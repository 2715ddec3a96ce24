"""`convstudy audit`: a cheap study's top, middle and bottom retrained at the full budget, resumable, refusing bad input."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest

from conftest import convstudy_cmd, db_rows, kill_when
from convstudy.cli import main

# One xdist worker runs this file (`--dist loadgroup`), so the module's cheap study is trained once.
pytestmark = pytest.mark.xdist_group("test_audit")

FIVE = """\
name = "five"
dataset = "mnist"
seeds = 2

[train]
epochs = 1
batch_size = 32
optimizer = "adam"
train_limit = 120

[[models]]
name = "a"
layers = ["conv(4,3)", "pool(2)", "flatten", "dense(10)"]

[[models]]
name = "b"
layers = ["conv(2,3)", "pool(4)", "flatten", "dense(10)"]

[[models]]
name = "c"
layers = ["pool(4)", "flatten", "dense(10)"]

[[models]]
name = "d"
layers = ["conv(6,5)", "pool(2)", "flatten", "dense(16)", "dense(10)"]

[[models]]
name = "e"
layers = ["pool(7)", "flatten", "dense(10)"]
"""


@pytest.fixture(scope="module")
def cheap(tmp_path_factory, tiny_mnist_session):
    """A finished cheap study of 5 models (1 epoch, 120 images, 2 seeds) on the tiny MNIST."""
    root = tmp_path_factory.mktemp("audit")
    (root / "five.toml").write_text(FIVE)
    done = subprocess.run(convstudy_cmd("run", root / "five.toml", "--out", root / "cheap", "--data-dir",
                                        tiny_mnist_session.dir, "--quiet"),
                          env=tiny_mnist_session.env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return root / "cheap"


def audit_args(cheap, out, tiny, *extra) -> list[str]:
    return [str(a) for a in ("audit", cheap, "--epochs", "2", "--train-limit", "240", "--seeds", "2", "--out", out,
                             "--data-dir", tiny.dir, "--quiet", *extra)]


def audit_cmd(cheap, out, tiny, *extra) -> list[str]:
    return convstudy_cmd(*audit_args(cheap, out, tiny, *extra))


def test_an_audit_compares_the_rankings_and_resumes_after_kill_9_to_the_numbers_of_a_whole_run(
        cheap, tmp_path, tiny_mnist, one_thread):
    tiny = tiny_mnist
    whole = subprocess.run(audit_cmd(cheap, tmp_path / "whole", tiny, "--workers", "2"), env=tiny.env, capture_output=True,
                           text=True, timeout=240)
    assert whole.returncode == 0, whole.stderr
    assert "rankings" in whole.stdout and "tau" in whole.stdout
    audit = json.loads((tmp_path / "whole" / "audit.json").read_text())
    assert audit["cheap_budget"] == "1-epoch, 120-image" and audit["full_budget"] == "2-epoch, 240-image"
    assert sorted(r["name"] for r in audit["models"]) == list("abcde")  # 5 models <= 3 strata of 2: all of them
    assert {r["stratum"] for r in audit["models"]} == {"top", "middle", "bottom"}
    assert all(r["cheap_seeds"] == 2 and r["full_seeds"] == 2 for r in audit["models"])
    assert -1 <= audit["kendall_tau"]["estimate"] <= 1 and audit["regret"]["estimate"] >= 0
    assert audit["top_k"]["k"] == 2 and audit["verdict"].startswith("1-epoch, 120-image rankings")
    report = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert report["audit"] == audit and report["study"]["epochs"] == 2 and report["study"]["train_limit"] == 240
    assert "## Fidelity audit" in (tmp_path / "whole" / "report.md").read_text()

    out = tmp_path / "killed"
    proc = subprocess.Popen(audit_cmd(cheap, out, tiny), env=tiny.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def training() -> bool:
        try:
            return bool(db_rows(out / "study.db", "SELECT 1 FROM epochs"))
        except sqlite3.OperationalError:  # not created yet
            return False

    kill_when(proc, training)
    assert not (out / "audit.json").exists()
    assert main(audit_args(cheap, out, tiny)) == 0  # the resume, in this process (one thread, as the others)
    assert json.loads((out / "audit.json").read_text()) == audit


def copy_of(cheap, tmp_path, sql: str):
    """A copy of the cheap study with `sql` applied to its study.db."""
    dst = tmp_path / "copy"
    shutil.copytree(cheap, dst)
    conn = sqlite3.connect(dst / "study.db")
    with conn:
        conn.executescript(sql)
    conn.close()
    return dst


@pytest.mark.parametrize("extra, sql, message", [
    (["--epochs", "1"], None, "the full budget (1-epoch, 120-image) is not larger than the cheap study's"),
    (["--epochs", "2", "--train-limit", "60"], None, "is not larger than the cheap study's (1-epoch, 120-image)"),
    (["--epochs", "2", "--models-per-stratum", "1"], None, "--models-per-stratum 1: picks 3 of"),
    (["--epochs", "2"], "UPDATE trials SET state = 'pending' WHERE id = 1", "an unfinished study (1 of 10 trials"),
    (["--epochs", "2"], "DELETE FROM epochs WHERE trial_id IN (SELECT id FROM trials WHERE model IN ('a', 'b'));"
                        "DELETE FROM trials WHERE model IN ('a', 'b')", "3 models finished with a metric"),
])
def test_bad_audits_are_refused_in_one_line_before_anything_is_written(cheap, tmp_path, capsys, extra, sql, message):
    from convstudy.cli import main

    study = copy_of(cheap, tmp_path, sql) if sql else cheap
    before = sorted(p.relative_to(study) for p in study.rglob("*"))
    assert main(["audit", str(study), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before  # no CHEAP/audit, nothing else


def test_an_out_holding_another_study_is_refused(cheap, tmp_path, capsys):
    from convstudy.cli import main

    before = sorted(p.relative_to(cheap) for p in cheap.rglob("*"))
    assert main(["audit", str(cheap), "--epochs", "2", "--out", str(cheap)]) == 2
    err = capsys.readouterr().err
    assert 'holds a different study ("five")' in err and err.count("\n") == 1, err
    assert sorted(p.relative_to(cheap) for p in cheap.rglob("*")) == before


def test_strata_are_the_top_middle_and_bottom_of_the_cheap_ranking():
    from convstudy.search.audit import _strata

    ranked = [f"m{i}" for i in range(12)]
    assert _strata(ranked, 2) == {"m0": "top", "m1": "top", "m5": "middle", "m6": "middle",
                                  "m10": "bottom", "m11": "bottom"}
    assert _strata(ranked[:6], 2) == {"m0": "top", "m1": "top", "m2": "middle", "m3": "middle",
                                      "m4": "bottom", "m5": "bottom"}
