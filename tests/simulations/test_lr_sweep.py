"""The lr sweep's selection logic: scores on validation rows, choice, the selection file."""

from __future__ import annotations

import json

import pytest

from simulations import lr_sweep
from simulations.report import selection_table


def _row(rnd: int, accs: dict[str, float] | None) -> dict:
    row = {"round": rnd}
    if accs is not None:
        row["val-tiers"] = {t: {"accuracy": a, "loss": 1.0} for t, a in accs.items()}
    return row


def test_parse_lrs():
    assert lr_sweep.parse_lrs("0.02, 0.05,0.1") == (0.02, 0.05, 0.1)
    for bad, match in (
        ("0.1,x", "comma-separated"),
        ("0,0.1", "positive"),
        ("0.1,0.10", "repeats"),
    ):
        with pytest.raises(ValueError, match=match):
            lr_sweep.parse_lrs(bad)


def test_score_is_mean_over_tiers_of_the_last_k_validation_evaluations():
    rows = [
        _row(1, {"0.5": 0.1, "1": 0.1}),
        _row(2, None),  # not evaluated
        _row(3, {"0.5": 0.5, "1": 0.7}),
        _row(4, {"0.5": 0.7, "1": 0.9}),
    ]
    per_tier, mean = lr_sweep.val_score(rows, last_k=2)
    assert per_tier == pytest.approx({"0.5": 0.6, "1": 0.8})
    assert mean == pytest.approx(0.7)
    assert lr_sweep.val_score(rows, last_k=5)[1] == pytest.approx((0.1 + 0.1 + 1.2 + 1.6) / 6)
    # Test accuracies are never read: rows without val-tiers give no score.
    with pytest.raises(ValueError, match="no round was evaluated on the validation split"):
        lr_sweep.val_score([{"round": 1, "tiers": {"1": {"accuracy": 0.9}}}], 3)


def test_choice_takes_the_best_mean_and_skips_failed_runs():
    results = {
        0.1: [_row(1, {"0.5": 0.80, "1": 0.84})],
        0.02: [_row(1, {"0.5": 0.78, "1": 0.80})],
        0.05: "maestro-lr0.05: no round had a valid reply",
        0.2: [_row(1, None)],
    }
    sel = lr_sweep.method_selection(results, last_k=3)
    assert sel["lr"] == 0.1
    assert [e["lr"] for e in sel["grid"]] == [0.02, 0.05, 0.1, 0.2]
    assert sel["grid"][0]["mean"] == pytest.approx(0.79)
    assert "valid reply" in sel["grid"][1]["failed"] and "validation" in sel["grid"][3]["failed"]
    assert lr_sweep.choose([{"lr": 0.1, "mean": 0.5}, {"lr": 0.05, "mean": 0.5}]) == 0.05  # tie
    assert lr_sweep.choose([{"lr": 0.1, "failed": "x"}]) is None


def test_sweep_config_is_short_validation_only_and_in_its_own_folder(tmp_path):
    cfg = {"method": "fjord", "seed": 2, "num-rounds": 100, "lr": 0.02, "run-name": "fjord-seed2"}
    got = lr_sweep.sweep_config(cfg, 0.05, 20, 0, tmp_path)
    assert got["run-name"] == "fjord-lr0.05" and got["output-dir"] == str(tmp_path / "select")
    assert (got["lr"], got["num-rounds"], got["seed"], got["test-eval"]) == (0.05, 20, 0, False)


def test_selection_file_merges_methods_and_refuses_other_settings(tmp_path):
    wanted = lr_sweep.settings((0.02, 0.05), 20, 0, 3)
    lr_sweep.check_selection(tmp_path, wanted)  # no file yet: fine
    a = {"maestro": {"lr": 0.05, "grid": [{"lr": 0.05, "val-accuracy": {"1": 0.8}, "mean": 0.8}]}}
    b = {"fjord": {"lr": 0.02, "grid": [{"lr": 0.02, "val-accuracy": {"1": 0.7}, "mean": 0.7}]}}
    lr_sweep.write_selection(tmp_path, wanted, a)
    lr_sweep.write_selection(tmp_path, wanted, b)
    record = json.loads((tmp_path / lr_sweep.SELECTION).read_text())
    assert set(record["methods"]) == {"maestro", "fjord"} and record["settings"] == wanted
    lr_sweep.check_selection(tmp_path, wanted)
    with pytest.raises(ValueError, match=r"select-rounds: 20 -> 30.*same tuning budget"):
        lr_sweep.check_selection(tmp_path, lr_sweep.settings((0.02, 0.05), 30, 0, 3))
    table = selection_table(record)
    assert "| maestro | **0.05** | 80.00 | 80.00 | ✓ |" in table
    assert "| fjord | **0.02** | 70.00 | 70.00 | ✓ |" in table
    assert table.index("| maestro") < table.index("| fjord")  # the report's method order
