"""Export's stated target: no tier bigger than its factored form unless it says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import server.export as export
from maestro_common.lowrank.decompose import to_dense
from server.export import export_tier, load_run, load_test_set, main, merge_rule
from tests.server.test_export import make_run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, fmnist_sample) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "tiny", fmnist_sample)


@pytest.mark.parametrize(
    ("beta", "target", "merge", "rule"),
    [
        (0.2, None, None, "size"),  # below the full tier: the smaller form
        (0.999, None, None, "size"),
        (1.0, None, None, "measure"),  # the full tier: the faster form
        (0.2, "latency", None, "measure"),
        (1.0, "size", None, "size"),
        (0.2, None, "measure", "measure"),  # the older flag keeps its meaning
        (0.2, None, "none", "none"),
        (1.0, None, "all", "all"),
    ],
)
def test_merge_rule_of_target_and_merge(beta, target, merge, rule):
    assert merge_rule(beta, target, merge) == rule


def test_merge_rule_refuses_bad_or_conflicting_choices():
    with pytest.raises(ValueError, match=r"target must be one of \('size', 'latency'\)"):
        merge_rule(0.5, target="speed")
    with pytest.raises(ValueError, match="merge must be one of"):
        merge_rule(0.5, merge="some")
    with pytest.raises(ValueError, match="not both"):
        merge_rule(0.5, target="size", merge="all")


def test_default_export_of_a_small_tier_is_no_bigger_than_its_factored_form(checkpoint, tmp_path):
    run = load_run(checkpoint)
    facts = export_tier(run, 0.2, tmp_path, load_test_set(run.cfg, limit=50), repeats=1)
    assert (facts["target"], facts["merge"]) == ("size", "size")
    assert facts["params"] <= facts["factored-params"]
    assert facts["bigger-than-factored"] is False and facts["warnings"] == []
    sizes = facts["merge-params"]
    assert sorted(d["layer"] for d in sizes) == sorted(facts["ranks"])
    merged = sorted(d["layer"] for d in sizes if d["dense_params"] < d["factored_params"])
    assert facts["merged-to-dense"] == merged
    # The written program has exactly the parameters the JSON states.
    program = torch.export.load(tmp_path / facts["artifact"]).module()
    assert sum(p.numel() for p in program.parameters()) == facts["params"]
    assert facts["test-accuracy-pct"] == pytest.approx(facts["framework-accuracy-pct"], abs=0.1)


def test_a_tier_bigger_than_its_factored_form_is_reported(checkpoint, tmp_path, caplog):
    run = load_run(checkpoint)
    test = load_test_set(run.cfg, limit=50)
    with caplog.at_level(logging.WARNING):
        facts = export_tier(run, 0.2, tmp_path, test, merge="all", repeats=1)
    assert facts["params"] > facts["factored-params"] and facts["bigger-than-factored"] is True
    assert facts["target"] is None and facts["merge"] == "all"
    (note,) = facts["warnings"]
    assert f"{facts['params']:,} parameters" in note and "--target size" in note
    assert note in caplog.text
    written = json.loads((tmp_path / facts["artifact"].replace(".pt2", ".json")).read_text())
    assert written["bigger-than-factored"] is True and written["warnings"] == [note]


def test_latency_keeps_the_measured_choice_and_reports_its_size(checkpoint, tmp_path, monkeypatch):
    calls = []

    def merge_all_as_if_faster(model, shape, batches):  # the timings decided: all dense
        calls.append(tuple(batches))
        to_dense(model, beta=1.0)
        return []

    monkeypatch.setattr(export, "merge_where_faster", merge_all_as_if_faster)
    run = load_run(checkpoint)
    test = load_test_set(run.cfg, limit=50)
    facts = export_tier(run, 0.2, tmp_path, test, repeats=1, target="latency")
    assert calls == [export.LATENCY_BATCHES]
    assert (facts["target"], facts["merge"]) == ("latency", "measure")
    assert facts["merged-to-dense"] == sorted(facts["ranks"])
    assert facts["bigger-than-factored"] is True and len(facts["warnings"]) == 1


def test_cli_target_and_merge(checkpoint, tmp_path, capsys):
    base = ["export", str(checkpoint), "--beta", "0.2", "--limit-test", "20", "--repeats", "1"]
    assert main([*base, "--target", "size", "--out", str(tmp_path / "a")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["target"] == "size" and facts["bigger-than-factored"] is False
    assert main([*base, "--merge", "none", "--out", str(tmp_path / "b")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["merge"] == "none" and facts["merged-to-dense"] == []
    with pytest.raises(SystemExit) as stop:
        main([*base, "--target", "size", "--merge", "all", "--out", str(tmp_path / "c")])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
