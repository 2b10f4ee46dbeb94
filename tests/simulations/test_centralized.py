"""The centralized trainer end to end on a small image sample: every registered method, the lr
chosen on validation, the dense warm-up, and a summary.csv that simulations.paired reads."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from maestro_common.app.methods import METHOD_NAMES
from simulations import paired
from simulations.centralized import main, trainer
from simulations.report import SUMMARY_COLUMNS


def small(fmnist_sample, *extra: str) -> list[str]:
    return [
        "--set", "model=lenet5", "--set", f"data-dir={fmnist_sample}",
        "--set", "tier-fractions=0.5,1", "--set", "max-test-examples=100",
        "--limit-train", "300", "--epochs", "1", "--threads", "1", *extra,
    ]  # fmt: skip


def test_every_method_of_the_registry_trains_and_is_scored_per_tier(fmnist_sample, tmp_path):
    out = tmp_path / "out"
    rows = main(small(fmnist_sample, "--methods", ",".join(METHOD_NAMES), "--out", str(out)))
    by = {(r.method, r.beta): r for r in rows}
    assert {r.method for r in rows} == {*METHOD_NAMES, "svd"}
    # Width methods run at MAC-matched widths; maestro's β = 1 is its whole model.
    assert by["fjord", 0.5].width < 1.0 and by["fjord", 0.5].macs <= by["maestro", 0.5].macs
    assert by["heterofl", 0.5].width == by["fjord", 0.5].width
    assert by["maestro", 0.5].width == 0.5 and by["maestro", 1.0].width == 1.0
    # fedavg-all is one dense model at every tier, fedavg-fit one narrow model.
    assert by["fedavg-all", 0.5].accuracy == by["fedavg-all", 1.0].accuracy
    assert by["fedavg-fit", 1.0].width == by["fjord", 0.5].width
    assert by["fedavg-fit", 0.5].macs == by["fedavg-fit", 1.0].macs
    # The svd rows cut the trained dense model: exact at full rank.
    assert by["svd", 1.0].accuracy == pytest.approx(by["fedavg-all", 1.0].accuracy, abs=0.011)
    assert by["svd", 0.5].params < by["svd", 1.0].params
    # A nested step runs the whole model and a smaller one: dearer than one dense pass; FjORD's
    # widths are cheaper.
    assert by["maestro", 1.0].step_cost > 1.0 == by["fedavg-all", 1.0].step_cost
    assert by["fjord", 1.0].step_cost < 1.0
    assert all(r.accuracy_last is None and r.epochs == 1 for r in rows)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == len(rows) and set(summary["run"]) >= {"maestro-seed0"}
    row = summary[(summary["method"] == "maestro") & (summary["beta"] == 0.5)].iloc[0]
    assert row["accuracy-pct"] == pytest.approx(100 * by["maestro", 0.5].accuracy)
    # Each model is saved where its rows say.
    assert (out / "fjord-seed0" / "checkpoint.npz").is_file()
    assert json.loads((out / "args.json").read_text())["methods"] == list(METHOD_NAMES)


def test_paired_reads_the_summary_of_two_seeds(fmnist_sample, tmp_path, capsys):
    out = tmp_path / "out"
    rows = main(
        small(fmnist_sample, "--methods", "maestro,fjord", "--seeds", "0,1", "--out", str(out))
    )
    capsys.readouterr()
    paired.main([str(out / "summary.csv"), "--method", "maestro", "--against", "fjord"])
    table = capsys.readouterr().out
    by = {(r.method, r.beta, r.seed): r.accuracy for r in rows}
    diffs = [100 * (by["maestro", 0.5, s] - by["fjord", 0.5, s]) for s in (0, 1)]
    assert f"| maestro | fjord | 0.5 | 2 | 0,1 | {diffs[0]:+.2f} / {diffs[1]:+.2f} |" in table


def test_the_lr_is_chosen_on_validation_per_method(fmnist_sample, tmp_path):
    out = tmp_path / "out"
    argv = small(fmnist_sample, "--methods", "fedavg-all,maestro", "--set", "val-size=100")
    rows = main([*argv, "--lrs", "0.01,0.05", "--select-epochs", "1", "--out", str(out)])
    selection = json.loads((out / "lr-selection.json").read_text())
    assert set(selection) == {"fedavg-all", "maestro"}
    for method, scores in selection.items():
        best = float(max(scores, key=scores.get))
        assert {r.lr for r in rows if r.method == method} == {best}
    # Every final model is also scored on the validation split.
    assert all(r.val_accuracy is not None and 0.0 <= r.val_accuracy <= 1.0 for r in rows)


def test_dense_warmup_trains_dense_then_factors_the_trained_weights(fmnist_sample, monkeypatch):
    prepared = []
    real = trainer.get_method

    class Spy:
        def __init__(self, method):
            self._method = method

        def __getattr__(self, name):
            return getattr(self._method, name)

        def prepare(self, model, shape, cfg):
            # Factoring a warmed-up model: its weights were trained, not the seed's.
            fresh = trainer.build_run_model(trainer.dense_config(cfg))
            pairs = zip(model.parameters(), fresh.parameters(), strict=True)
            prepared.append(any(not torch.equal(a, b) for a, b in pairs))
            return self._method.prepare(model, shape, cfg)

    monkeypatch.setattr(trainer, "get_method", lambda name: Spy(real(name)))
    base = small(fmnist_sample, "--methods", "maestro", "--epochs", "2")
    warm = main([*base, "--set", "dense-warmup=0.5"])
    assert prepared == [True]
    plain = main(base)
    assert prepared == [True]  # factored when built, never during training
    assert {r.method for r in warm} == {"maestro+warmup"}
    assert {r.method for r in plain} == {"maestro"}
    by_warm, by_plain = ({r.beta: r for r in rows} for rows in (warm, plain))
    assert by_warm[1.0].params == by_plain[1.0].params
    # One dense epoch of two makes the mean step cheaper.
    assert 1.0 < by_warm[1.0].step_cost < by_plain[1.0].step_cost


def test_keys_label_the_variant_as_the_federation_does(fmnist_sample):
    keys = ["lasso=1e-2", "shrink-every=1", "shrink-eps=0.5"]
    rows = main(
        small(fmnist_sample, "--methods", "maestro", *(a for k in keys for a in ("--set", k)))
    )
    assert {r.method for r in rows} == {"maestro+gl0.01+shrink"}
    # Shrinking after the epoch cut ranks: fewer parameters than the unshrunk full model.
    full = main(small(fmnist_sample, "--methods", "maestro"))
    assert max(r.params for r in rows) < max(r.params for r in full)


def test_too_large_a_validation_split_is_refused(fmnist_sample):
    with pytest.raises(SystemExit, match="val-size"):
        main(small(fmnist_sample, "--set", "val-size=300"))


def test_the_objective_key_picks_maestros_step(fmnist_sample):
    nested = main(small(fmnist_sample, "--methods", "maestro"))
    sampled = main(small(fmnist_sample, "--methods", "maestro", "--set", "objective=sampled"))
    # One sampled sub-model per step (the paper's sampler) against the whole model plus one more.
    assert sampled[0].step_cost <= 1.2 < nested[0].step_cost
