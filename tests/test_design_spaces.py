"""Design-space comparisons (docs/design-spaces.md): models record their space, `[report] normalize` is
validated, and the statistics (EDFs, KS and weighted permutation tests, P(A<B), best-of-m, power, good
ranges) hold on small synthetic inputs."""

from __future__ import annotations

import json

import yaml

import numpy as np
import pytest

from convstudy.cli import main
from convstudy.report import design_spaces as ds
from convstudy.spec import build_study

LAYERS = ["conv({f},3)", {"if": "bn", "layer": "bn"}, "flatten", "dense(10)"]
STUDY = {"name": "ds", "spaces": [{"name": "a", "factors": {"f": [4, 8], "bn": [True, False]}, "layers": LAYERS},
                                  {"name": "b", "factors": {"f": [2, 6]}, "layers": ["conv({f},3)", "flatten",
                                                                                     "dense(10)"]}]}


def test_models_record_their_space_outside_the_fingerprint():
    study = build_study(STUDY)
    assert [m.space for m in study.models] == ["a"] * 4 + ["b"] * 2
    again = build_study(study.to_dict())  # the form study.db stores
    assert [m.space for m in again.models] == [m.space for m in study.models]
    stored_before = study.to_dict()
    for m in stored_before["models"]:
        del m["space"]
    assert build_study(stored_before).fingerprint() == study.fingerprint()


def test_report_normalize_is_validated_and_not_in_the_fingerprint(tmp_path, capsys):
    plain = build_study(STUDY)
    flops = build_study({**STUDY, "report": {"normalize": "flops"}})
    assert flops.report.normalize == "flops" and plain.report.normalize == "params"
    assert flops.fingerprint() == plain.fingerprint()
    assert build_study(flops.to_dict()).report.normalize == "flops"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "report": {"normalize": "weights"}}))
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report.normalize" in err and "'params', 'flops' or 'none'" in err, err


def test_p_lower_matches_the_pairwise_count_with_ties_and_weights():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30).astype(float), rng.integers(1, 6, 40).astype(float)
    wa, wb = rng.random(30), rng.random(40)
    pairs = (a[:, None] < b[None]) + 0.5 * (a[:, None] == b[None])
    assert ds.p_lower(a, b) == pytest.approx(pairs.mean())
    assert ds.p_lower(a, b, wa, wb) == pytest.approx((wa[:, None] * wb[None] * pairs).sum() / wa.sum() / wb.sum())
    lo, hi = ds.p_lower_ci(a, b, rng)
    assert lo < pairs.mean() < hi


def test_weights_make_each_population_uniform_over_shared_bins():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    bins = np.array([0, 0, 1, 0, 1, 1, 2])  # bin 2 holds only B: its model gets no weight
    w = ds.weight_table(labels, bins)[labels, bins]
    assert w.tolist() == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.25, 0.25, 0.0])
    assert ds.n_effective(np.ones(8)) == 8 and ds.n_effective(np.array([1.0, 0, 0])) == 1


def test_edf_and_best_of_m():
    xs, f = ds.edf(np.array([0.3, 0.1, 0.2, 0.2]))
    assert xs.tolist() == [0.1, 0.2, 0.3] and f.tolist() == pytest.approx([0.25, 0.75, 1.0])
    errors = np.array([0.1, 0.2, 0.3, 0.4])
    # E[min of 2 draws with replacement] = sum over pairs of the min / 16
    brute = np.minimum(errors[:, None], errors[None]).mean()
    assert ds.best_of_m(errors, [1, 2, 1000]).tolist() == pytest.approx([0.25, brute, 0.1])


def test_plain_and_weighted_tests_on_a_shift_and_on_a_size_confound():
    rng = np.random.default_rng(1)
    same = ds.compare(rng.normal(0, 1, 60), rng.normal(0, 1, 60), rng.uniform(1e3, 1e4, 60),
                      rng.uniform(1e3, 1e4, 60), "params", rng)
    assert same["plain"]["p"] > 0.05 and same["normalized"]["p"] > 0.05
    shifted = ds.compare(rng.normal(0, 1, 60), rng.normal(1, 1, 60), rng.uniform(1e3, 1e4, 60),
                         rng.uniform(1e3, 1e4, 60), "params", rng)
    assert shifted["plain"]["p"] < 0.01 and shifted["normalized"]["p"] < 1e-3  # past 999 permutations: sequential
    assert shifted["plain"]["p_lower"] > 0.7 and shifted["plain"]["n_needed"] <= 30
    # B's models are larger, and error falls with size alone: only the plain comparison sees a difference.
    la, lb = rng.uniform(6, 9, 200), rng.uniform(7, 10, 200)
    confound = ds.compare(-0.5 * la + rng.normal(0, 0.2, 200), -0.5 * lb + rng.normal(0, 0.2, 200),
                          np.exp(la), np.exp(lb), "params", rng)
    assert confound["plain"]["p"] < 1e-6 and confound["normalized"]["p"] > 0.05
    assert ds.compare(np.zeros(6), np.ones(6), np.ones(6), np.ones(6), "none", rng)["normalized"] is None


def test_good_range_brackets_the_best_models_level():
    rng = np.random.default_rng(2)
    values = rng.choice([1.0, 2.0, 4.0, 8.0, 16.0], 200)
    errors = np.abs(np.log2(values) - 2) + rng.normal(0, 0.3, 200)  # best at 4
    out = ds.good_range(values, errors, rng)
    assert out["good_range"][0] <= 4 <= out["good_range"][1] and out["good_range"] != [1.0, 16.0]
    assert out["n_best"] == 50 and out["range"] == [1.0, 16.0]


def _models(space, n, rng, shift=0.0):
    return [{"name": f"{space}{i}", "space": space, "factors": {"f": int(f), "bn": bool(i % 2)},
             "params": int(1000 * f), "flops": int(5000 * f),
             "val_accuracy": {"mean": 0.9 - shift + rng.normal(0, 0.01)}}
            for i, f in enumerate(rng.choice([2, 4, 8], n))]


def test_design_spaces_section_holm_adjusts_every_comparison():
    rng = np.random.default_rng(3)
    models = _models("a", 30, rng) + _models("b", 30, rng, shift=0.05) + _models("c", 3, rng)
    out = ds.design_spaces(models, "val_accuracy", "params")
    labels = [g["label"] for g in out["groups"]]
    assert labels[:2] == ["space a", "space b"] and "space c" not in labels  # c has too few models
    first = out["comparisons"][0]
    assert first["kind"] == "spaces" and first["plain"]["different"] and first["plain"]["p_holm"] >= first["plain"]["p"]
    kinds = {(c["kind"], c["factor"]) for c in out["comparisons"]}
    assert {("levels", "f"), ("levels", "bn")} <= kinds
    assert [r["factor"] for r in out["groups"][0]["good_ranges"]] == ["f"]  # bn is not numeric
    curve = out["groups"][0]["best_of_m"]
    assert curve["m"][0] == 1 and curve["m"][-1] == 30 and curve["mean"][0] > curve["mean"][-1]
    assert ds.design_spaces(_models("a", 3, rng), "val_accuracy", "params") is None
    hand = [{**m, "space": None} for m in _models("a", 12, rng)]  # models with factors written out by hand
    out = ds.design_spaces(hand, "val_accuracy", "none")
    assert "bn = false" in [g["label"] for g in out["groups"]] and not any(c["kind"] == "spaces" for c in out["comparisons"])
    assert all(c["normalized"] is None for c in out["comparisons"])


def test_section_renders_500_models_per_space_without_warnings(recwarn):
    import warnings

    from convstudy.report.design_view import design_figures, design_html as html_section, design_markdown
    from convstudy.report.figures import to_svg

    rng = np.random.default_rng(4)
    report = {"study": {"selection_metric": "val_accuracy"},
              "design_spaces": ds.design_spaces(_models("a", 500, rng) + _models("b", 500, rng, shift=0.002),
                                                "val_accuracy", "flops")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's layout or glyph warnings would fail here
        html = html_section(report)
        figures = design_figures(report)
        svgs = [to_svg(f) for f in figures.values()]
    assert set(figures) == {"design_edf", "design_enough"} and all(s.startswith("<svg") for s in svgs)
    assert html.count("<svg") == 2 and "space a" in html and "normalised by FLOPs" in html
    md = "\n".join(design_markdown(report))
    assert "## Design spaces" in md and "![design_edf](plots/_design_edf.png)" in md and "FLOPs" in md
    assert not [w for w in recwarn if "matplotlib" in str(w.filename)]


def test_a_level_is_a_population_only_where_it_is_compared():
    rng = np.random.default_rng(5)
    models = _models("a", 14, rng)
    for i, m in enumerate(models):
        m["factors"]["lr"] = 0.1 if i < 10 else 0.01  # the other level has too few models to compare
    labels = [g["label"] for g in ds.design_spaces(models, "val_accuracy", "params")["groups"]]
    assert not any(label.startswith("lr") for label in labels)
