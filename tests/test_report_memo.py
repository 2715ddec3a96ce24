"""The report's drawing memo (report.figures.memoized): a refresh redraws only what changed, and what it
returns never depends on what was drawn before."""

from __future__ import annotations

import pytest

from convstudy.report import curves, figures
from convstudy.report.design_view import design_part
from convstudy.report.factors import factor_part


@pytest.fixture(autouse=True)
def empty_memo(monkeypatch):
    monkeypatch.setattr(figures, "_MEMO", type(figures._MEMO)())


def _counted(calls: list, key=None):
    @figures.memoized(key=key)
    def draw(data, label="x"):
        calls.append((data, label))
        return {"drawn": data, "label": label}
    return draw


def test_same_arguments_are_drawn_once_and_new_ones_again():
    calls = []
    draw = _counted(calls)
    assert draw({"a": [1, 2]}) == draw({"a": [1, 2]}) == {"drawn": {"a": [1, 2]}, "label": "x"}
    assert len(calls) == 1
    assert draw({"a": [1, 3]})["drawn"] == {"a": [1, 3]}
    assert draw({"a": [1, 2]}, label="y")["label"] == "y"
    assert len(calls) == 3


def test_a_caller_changing_what_it_got_does_not_change_the_next_answer():
    draw = _counted([])
    first = draw([1])
    first["drawn"].append(99)
    assert draw([1]) == {"drawn": [1], "label": "x"}


def test_a_key_names_what_is_read_and_nothing_else_redraws():
    calls = []
    draw = _counted(calls, key=lambda data, label="x": data["part"])
    draw({"part": 1, "other": "a"})
    draw({"part": 1, "other": "b"})
    assert len(calls) == 1
    draw({"part": 2, "other": "b"})
    assert len(calls) == 2


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(figures, "MEMO_SIZE", 3)
    calls = []
    draw = _counted(calls)
    for i in range(5):
        draw(i)
    assert len(figures._MEMO) == 3
    draw(0)  # the oldest left the memo: drawn again
    draw(4)  # the newest did not
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4, 0]


def _model(losses: list[float]) -> dict:
    return {"name": "m", "description": "d", "epochs": [
        {"epoch": i + 1, "n": 1, "loss": v, "loss_std": 0.0, "val_loss": v, "val_loss_std": 0.0}
        for i, v in enumerate(losses)]}


def test_a_models_loss_png_is_redrawn_only_when_its_curves_change(monkeypatch, tmp_path):
    drawn = []
    real = curves.draw_loss
    monkeypatch.setattr(curves, "draw_loss", lambda *a, **k: (drawn.append(1), real(*a, **k)))
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    curves.loss_figure(_model([1.0, 0.5]), one)
    curves.loss_figure(_model([1.0, 0.5]), two)
    assert len(drawn) == 1 and one.read_bytes() == two.read_bytes()
    assert one.read_bytes().startswith(b"\x89PNG")
    curves.loss_figure(_model([1.0, 0.5, 0.25]), two)
    assert len(drawn) == 2 and one.read_bytes() != two.read_bytes()


def test_the_section_keys_hold_the_selection_metric_the_sections_print():
    report = {"study": {"selection_metric": "val_accuracy", "states": {}}, "factors": [], "models": [1]}
    other = {**report, "models": [2], "study": {**report["study"], "states": {"running": 1}}}
    test = {**report, "study": {"selection_metric": "test_accuracy"}}
    for part in (factor_part, design_part):
        assert part(report) == part(other)
        assert part(report) != part(test)
