"""Design-space comparisons (docs/design-spaces.md): models record their space, `[report] normalize` is
validated, and the statistics (EDFs, KS and weighted permutation tests, P(A<B), best-of-m, power, good
ranges) hold on small synthetic inputs."""

from __future__ import annotations

import json

import yaml

import numpy as np
import pytest

from convstudy.cli import main
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
