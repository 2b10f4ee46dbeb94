"""The centralized trainer saves its models so export/evaluate read them like federated runs."""

from __future__ import annotations

import pytest

from server.export import evaluate_run, load_run, load_test_set
from simulations.centralized import main


def test_saved_models_evaluate_as_the_trainer_reported(fmnist_sample, tmp_path):
    rows = main(
        [
            *("--set", "model=lenet5", "--methods", "fedavg-all,maestro", "--epochs", "1"),
            *("--limit-train", "300", "--set", "max-test-examples=200"),
            *("--set", "tier-fractions=0.5,1", "--set", f"data-dir={fmnist_sample}"),
            *("--out", str(tmp_path), "--threads", "1"),
        ]
    )
    for method in ("maestro", "fedavg-all"):
        run = load_run(tmp_path / f"{method}-seed0" / "checkpoint.npz")
        assert run.cfg.method == method and run.cfg.tiers == (0.5, 1.0)
        assert run.cfg.num_rounds == 1  # the epochs trained
        test = load_test_set(run.cfg, limit=200)
        table = evaluate_run(run, [0.5, 1.0], test, repeats=1)
        reported = {r.beta: r.accuracy for r in rows if r.method == method}
        for row in table:
            if row["beta"] in reported:
                assert row["accuracy-pct"] == pytest.approx(100 * reported[row["beta"]])


def test_a_tucker_model_with_cut_ranks_is_rebuilt_as_trained(fmnist_sample, tmp_path):
    # export rebuilds the model from config.json: the factorisation and ranks must be recorded.
    rows = main(
        [
            *("--set", "model=lenet5", "--methods", "maestro", "--epochs", "1"),
            *("--set", "conv-factorization=tucker", "--set", "rank-fraction=0.5"),
            *("--limit-train", "300", "--set", "max-test-examples=200", "--threads", "1"),
            *("--set", "tier-fractions=0.5,1", "--set", f"data-dir={fmnist_sample}"),
            *("--out", str(tmp_path)),
        ]
    )
    run = load_run(tmp_path / "maestro+tucker-seed0" / "checkpoint.npz")
    assert run.cfg.conv_factorization == "tucker" and run.cfg.rank_fraction == 0.5
    table = evaluate_run(run, [0.5, 1.0], load_test_set(run.cfg, limit=200), repeats=1)
    reported = {r.beta: r.accuracy for r in rows}
    assert {row["beta"] for row in table} >= set(reported)
    for row in table:
        if row["beta"] in reported:
            assert row["accuracy-pct"] == pytest.approx(100 * reported[row["beta"]])
