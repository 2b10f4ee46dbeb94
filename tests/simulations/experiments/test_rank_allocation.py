"""The rank-allocation comparison on models the centralized trainer saved."""

from __future__ import annotations

import re

import pytest

from simulations import centralized
from simulations.experiments import rank_allocation


def test_scores_every_rule_on_saved_dense_and_factored_models(fmnist_sample, tmp_path):
    out = tmp_path / "cent"
    # fmt: off
    centralized.main(
        [
            "--set", "model=lenet5", "--set", f"data-dir={fmnist_sample}", "--epochs", "2",
            "--methods", "fedavg-all,maestro,fjord,heterofl", "--set", "tier-fractions=0.5,1",
            "--limit-train", "600", "--set", "max-test-examples=100", "--set", "val-size=200",
            "--threads", "1", "--out", str(out),
        ]
    )
    rows = rank_allocation.main(
        [
            str(out), "--data-dir", str(fmnist_sample), "--val-size", "200",
            "--calibration", "64", "--betas", "0.25,0.5", "--limit-test", "100",
            "--out", str(tmp_path / "alloc.json"),
        ]
    )
    # fmt: on
    assert {(r["kind"], r["rule"]) for r in rows} == {
        (kind, rule) for kind in ("svd", "maestro") for rule in rank_allocation.RULES
    }
    assert len(rows) == 2 * 2 * len(rank_allocation.RULES)  # the width models are skipped
    for r in rows:
        assert 0.0 <= r["val"] <= 1.0 and 0.0 <= r["test"] <= 1.0
    by = {(r["kind"], r["beta"], r["rule"]): r["ranks"] for r in rows}
    assert by["maestro", 0.25, "uniform"] == {"conv2": 4, "fc1": 30, "fc2": 21}
    # An allocation never exceeds a larger tier's ranks (nested).
    for rule in ("weights", "outputs"):
        small, large = by["maestro", 0.25, rule], by["maestro", 0.5, rule]
        assert all(small[n] <= large[n] for n in small)
    assert (tmp_path / "alloc.json").is_file()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["x", "--betas", "0.5,1"], "in \\(0, 1\\)"),
        (["x", "--betas", "a"], "comma list"),
        (["x", "--calibration", "0"], "≥ 1"),
    ],
)
def test_bad_arguments_are_refused(argv, match, capsys):
    with pytest.raises(SystemExit):
        rank_allocation.parse_args(argv)
    assert re.search(match, capsys.readouterr().err)


def test_a_folder_without_saved_runs_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no saved dense or factored run"):
        rank_allocation.saved_runs([tmp_path])
