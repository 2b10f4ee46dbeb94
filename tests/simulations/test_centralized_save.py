"""The centralized trainer saves its models so export/evaluate read them like federated runs."""

from __future__ import annotations

import pytest

from server.export import evaluate_run, load_run, load_test_set
from simulations.centralized import main


def test_saved_models_evaluate_as_the_trainer_reported(fmnist_sample, tmp_path):
    rows = main(
        [
            *("--model", "lenet5", "--methods", "dense,maestro", "--epochs", "1"),
            *("--limit-train", "300", "--limit-test", "200", "--betas", "0.5,1"),
            *("--data-dir", str(fmnist_sample), "--out", str(tmp_path), "--threads", "1"),
        ]
    )
    for method, saved_as in (("maestro", "maestro"), ("dense", "fedavg-all")):
        run = load_run(tmp_path / f"{method}-seed0" / "checkpoint.npz")
        assert run.cfg.method == saved_as and run.cfg.tiers == (0.5, 1.0)
        test = load_test_set(run.cfg, limit=200)
        table = evaluate_run(run, [0.5, 1.0], test, repeats=1)
        reported = {r.beta: r.accuracy for r in rows if r.method == method}
        for row in table:
            if row["beta"] in reported:
                assert row["accuracy"] == pytest.approx(reported[row["beta"]])


def test_a_tucker_model_with_breakeven_ranks_is_rebuilt_as_trained(fmnist_sample, tmp_path):
    # export rebuilds the model from config.json: the factorisation and ranks must be recorded.
    rows = main(
        [
            *("--model", "lenet5", "--methods", "maestro", "--epochs", "1", "--threads", "1"),
            *("--conv-factorization", "tucker", "--initial-ranks", "breakeven"),
            *("--limit-train", "300", "--limit-test", "200", "--betas", "0.5,1"),
            *("--data-dir", str(fmnist_sample), "--out", str(tmp_path)),
        ]
    )
    run = load_run(tmp_path / "maestro-seed0" / "checkpoint.npz")
    assert run.cfg.conv_factorization == "tucker" and run.cfg.initial_ranks == "breakeven"
    table = evaluate_run(run, [0.5, 1.0], load_test_set(run.cfg, limit=200), repeats=1)
    reported = {r.beta: r.accuracy for r in rows}
    assert {row["beta"] for row in table} >= set(reported)
    for row in table:
        if row["beta"] in reported:
            assert row["accuracy"] == pytest.approx(reported[row["beta"]])
