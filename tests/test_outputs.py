"""`-o FILE` of report, compare and export: a bad path is one line (exit 2), a good one is written atomically."""

from __future__ import annotations

import json
import os

import pytest

from convstudy.cli import main
from test_html_report import run_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One trained 2-model, 1-seed study (read-only for the tests of this file)."""
    mp = pytest.MonkeyPatch()
    try:
        yield run_study(tmp_path_factory.mktemp("outputs"), mp, seeds=1, epochs=1)
    finally:
        mp.undo()


def _argv(command: str, study, target) -> list[str]:
    if command == "report":
        return ["report", str(study), "--format", "json", "-o", str(target)]
    if command == "report-html":
        return ["report", str(study), "--format", "html", "-o", str(target)]
    if command == "compare":
        return ["compare", str(study), str(study), "--format", "markdown", "-o", str(target)]
    return ["export", str(study), "--model", "small", "--format", "safetensors", "-o", str(target)]


COMMANDS = ("report", "report-html", "compare", "export")


def _one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_output_into_a_missing_directory_is_one_line(study, tmp_path, capsys, command):
    target = tmp_path / "no" / "such" / "out.txt"
    err = _one_line_error(capsys, _argv(command, study, target))
    assert str(target) in err and "does not exist" in err
    assert not (tmp_path / "no").exists()  # nothing created on the way


@pytest.mark.parametrize("command", COMMANDS)
def test_output_onto_a_directory_is_one_line(study, tmp_path, capsys, command):
    err = _one_line_error(capsys, _argv(command, study, tmp_path))
    assert str(tmp_path) in err and "is a directory" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_output_under_a_file_is_one_line(study, tmp_path, capsys, command):
    (tmp_path / "plain").write_text("x")
    target = tmp_path / "plain" / "out.txt"
    err = _one_line_error(capsys, _argv(command, study, target))
    assert str(target) in err and "not a directory" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.parametrize("command", COMMANDS)
def test_output_into_a_read_only_directory_is_one_line(study, tmp_path, capsys, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        err = _one_line_error(capsys, _argv(command, study, locked / "out.txt"))
    finally:
        locked.chmod(0o755)
    assert str(locked / "out.txt") in err and "not writable" in err


@pytest.mark.parametrize("command", ("report", "compare"))
def test_a_write_that_fails_anyway_is_one_line_and_leaves_no_temp_file(study, tmp_path, capsys, monkeypatch,
                                                                       command):
    """What the checks cannot foresee (disk full, a race, root on a read-only mount) is still one line."""
    from convstudy.cli import outputs

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", full)
    target = tmp_path / "out.txt"
    target.write_text("old")
    err = _one_line_error(capsys, _argv(command, study, target))
    assert str(target) in err and "No space left on device" in err
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_export_card_onto_a_directory_is_one_line(study, tmp_path, capsys):
    (tmp_path / "m.safetensors.md").mkdir()
    err = _one_line_error(capsys, _argv("export", study, tmp_path / "m.safetensors"))
    assert "m.safetensors.md" in err and "is a directory" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_report_output_replaces_the_file_atomically_with_ordinary_permissions(study, tmp_path, capsys):
    target = tmp_path / "r.json"
    target.write_text("stale")
    capsys.readouterr()
    assert main(_argv("report", study, target)) == 0
    assert json.loads(target.read_text())["study"]["name"] == "tiny-study"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private 0600


def test_compare_output_through_a_symlink_writes_the_linked_file(study, tmp_path, capsys):
    real = tmp_path / "real.md"
    real.write_text("old")
    (tmp_path / "link.md").symlink_to(real)
    assert main(_argv("compare", study, tmp_path / "link.md")) == 0
    assert (tmp_path / "link.md").is_symlink() and real.read_text().startswith("# tiny-study vs tiny-study")


# Issue 25 item 12: CSV injection. A cell starting with one of these runs as a formula in a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_report_csv_neutralises_every_text_cell_a_spreadsheet_would_run(tmp_path, capsys):
    import csv
    import io

    from test_html_scale import fabricate

    hostile = {f"m{i}": f"{c}HYPERLINK(\"http://evil.example\",\"x\")" for i, c in enumerate(FORMULA_STARTS)}
    fabricate(tmp_path / "out", [{"name": name, "description": text, "layers": ["flatten", "dense(10)"]}
                                 for name, text in hostile.items()])
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out"), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["model"]: r["description"] for r in rows} == {name: "'" + text for name, text in hostile.items()}
    assert {r["kernel"] for r in rows} == {"-"}  # convstudy's own "none" is no formula and stays as it was
    cells = [c for r in rows for key, c in r.items() if key != "kernel"]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]


def test_csv_text_leaves_numbers_and_plain_text_alone():
    from convstudy.report.markup import csv_text

    assert csv_text([["a-b", -0.5, 3, None, "=1+2", "@x", "-", "- 1"]]) == "a-b,-0.5,3,,'=1+2,'@x,-,'- 1\r\n"
