"""The centralized trainer end to end on a small sample: lr chosen on validation, every method."""

from __future__ import annotations

import json

import pytest
import torch

from simulations import centralized


def test_lr_grid_on_validation_and_every_method(fmnist_sample, tmp_path):
    out = tmp_path / "out"
    argv = [
        "--model", "lenet5", "--data-dir", str(fmnist_sample), "--epochs", "1",
        "--methods", "dense,maestro,maestro-sampled,fjord", "--betas", "0.5,1",
        "--limit-train", "600", "--limit-test", "200", "--val-size", "200",
        "--lrs", "0.01,0.05", "--select-epochs", "1", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    rows = centralized.main(argv)
    methods = {r.method for r in rows}
    assert methods == {"dense", "svd", "maestro", "maestro-sampled", "fjord"}
    selection = json.loads((out / "lr-selection.json").read_text())
    assert set(selection) == {"dense", "maestro", "maestro-sampled", "fjord"}
    for method, scores in selection.items():
        best = max(scores, key=scores.get)
        assert {r.lr for r in rows if r.method == method} == {float(best)}
    by = {(r.method, r.beta): r for r in rows}
    # fjord's sub-model at β fits the factored model's MACs at β; maestro's β = 1 is the whole.
    assert by["fjord", 0.5].macs <= by["maestro", 0.5].macs
    assert by["fjord", 0.5].width < 1.0 and by["fjord", 1.0].width == 1.0
    # A nested step runs the prefix and the smaller sub-model: dearer than one dense pass.
    assert by["maestro", 1.0].step_cost > 1.0 and by["dense", 1.0].step_cost == 1.0
    assert "step cost" in (out / "table.md").read_text()
    # Every final model is also scored on the validation split, at its own budget.
    assert all(r.val_accuracy is not None and 0.0 <= r.val_accuracy <= 1.0 for r in rows)


def test_validation_split_is_fixed_and_disjoint(fmnist_sample):
    train = centralized.load_dataset("fashion-mnist", "train", str(fmnist_sample))
    fit, val = centralized.split_validation(train, 300)
    fit2, val2 = centralized.split_validation(train, 300)
    assert len(val) == 300 and len(fit) == len(train) - 300
    assert torch.equal(val.images, val2.images) and torch.equal(fit.labels, fit2.labels)
    # No validation image is among the training images.
    flat = {bytes(x.numpy().tobytes()) for x in fit.images}
    assert not any(bytes(x.numpy().tobytes()) in flat for x in val.images)


def test_dense_warmup_trains_dense_then_factors_the_trained_weights(fmnist_sample, monkeypatch):
    base = [
        "--model", "lenet5", "--data-dir", str(fmnist_sample), "--epochs", "2", "--betas",
        "0.5,1", "--limit-train", "300", "--limit-test", "100", "--threads", "1",
        "--methods", "maestro",
    ]  # fmt: skip
    factored_after = []
    real_factor = centralized._factor

    def spy(model, args):
        # Factoring a warmed-up model: its weights were trained, not fresh from the seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the run's seed, which run_one builds the model from
            fresh = centralized._build(args)
        pairs = zip(model.parameters(), fresh.parameters(), strict=True)
        factored_after.append(any(not torch.equal(a, b) for a, b in pairs))
        return real_factor(model, args)

    monkeypatch.setattr(centralized, "_factor", spy)
    warm = centralized.main([*base, "--dense-warmup", "0.5"])
    assert factored_after == [True]
    factored_after.clear()
    plain = centralized.main([*base, "--dense-warmup", "0"])
    assert factored_after == [False]  # factored at initialisation, before any step
    assert {r.method for r in warm} == {"maestro+warmup"}
    assert all(r.val_accuracy is None for r in warm)  # no --val-size: no validation score
    assert {r.method for r in plain} == {"maestro"}
    by_warm = {r.beta: r for r in warm}
    by_plain = {r.beta: r for r in plain}
    # Same factored model at the end; one dense epoch of two makes the mean step cheaper.
    assert by_warm[1.0].params == by_plain[1.0].params
    assert 1.0 < by_warm[1.0].step_cost < by_plain[1.0].step_cost


def test_hybrid_rows_run_at_the_budget_within_the_plain_models_macs(fmnist_sample):
    base = [
        "--model", "lenet5", "--data-dir", str(fmnist_sample), "--epochs", "1", "--betas",
        "0.5,1", "--limit-train", "300", "--limit-test", "100", "--threads", "1",
        "--dense-warmup", "0",
    ]  # fmt: skip
    hybrid = centralized.main([*base, "--methods", "maestro", "--hybrid-width"])
    plain = centralized.main([*base, "--methods", "maestro"])
    hybrid, plain = ({r.beta: r for r in rows} for rows in (hybrid, plain))
    assert {r.method for r in hybrid.values()} == {"maestro+hybrid"}
    # β = 0.5 runs a larger fraction of the hybrid (conv1 cut too) within plain Maestro's MACs.
    assert 0.5 < hybrid[0.5].width < 1.0 and hybrid[1.0].width == 1.0
    assert hybrid[0.5].macs <= plain[0.5].macs and hybrid[1.0].macs == plain[1.0].macs
    assert hybrid[0.5].params > plain[0.5].params  # more rank for the same MACs


def test_warmup_epochs_round_and_leave_a_factored_epoch():
    args = centralized.parse_args(["--epochs", "5", "--dense-warmup", "0.6"])
    assert centralized.warmup_epochs(args) == 3
    args = centralized.parse_args(["--epochs", "2", "--dense-warmup", "0.9"])
    assert centralized.warmup_epochs(args) == 1
    args = centralized.parse_args(["--epochs", "5"])
    assert centralized.warmup_epochs(args) == 3  # the default share, 0.6
    args = centralized.parse_args(["--epochs", "5", "--dense-warmup", "0"])
    assert centralized.warmup_epochs(args) == 0


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--lrs", "0.1,0.2"], "--val-size"),
        (["--full-pass-share", "2"], "--full-pass-share"),
        (["--grid", "0,1"], "--grid"),
        (["--methods", "dense,width"], "unknown method"),
        (["--dense-warmup", "1"], "--dense-warmup"),
        (["--select-seed", "-1"], "--select-seed"),
    ],
)
def test_bad_arguments_are_refused(argv, match, capsys):
    with pytest.raises(SystemExit):
        centralized.parse_args(argv)
    assert match in capsys.readouterr().err


def test_the_lr_trial_runs_on_the_select_seed_not_this_process_first_seed(monkeypatch):
    # Seeds split over processes (--seeds 0,1 here, --seeds 2 there) must share one trial.
    args = centralized.parse_args(["--seeds", "2", "--lrs", "0.1,0.2", "--val-size", "10"])
    assert args.select_seed == 0
    trial_seeds = []

    def fake_run_one(method, seed, sub, train_ds, val_ds, lr):
        trial_seeds.append(seed)
        return [centralized.Row("cnn", method, seed, 1.0, 0.5 + lr, 0.0, 0, 0, 0.0, lr)]

    monkeypatch.setattr(centralized, "run_one", fake_run_one)
    lr, scores = centralized.choose_lr("maestro", args, None, None)
    assert trial_seeds == [0, 0] and lr == 0.2 and set(scores) == {0.1, 0.2}


def test_dense_is_chosen_on_the_dense_model_not_its_truncations(monkeypatch):
    args = centralized.parse_args(["--lrs", "0.1,0.2", "--val-size", "10"])

    def fake_run_one(method, seed, sub, train_ds, val_ds, lr):
        # lr 0.1: the better dense model; lr 0.2: far better truncations.
        dense = centralized.Row(
            "cnn", "dense", seed, 1.0, 0.9 if lr == 0.1 else 0.8, 0.0, 0, 0, 0.0, lr
        )
        svd = [
            centralized.Row("cnn", "svd", seed, b, 0.3 if lr == 0.1 else 0.7, 0.0, 0, 0, 0.0, lr)
            for b in (0.25, 0.5)
        ]
        return [dense, *svd]

    monkeypatch.setattr(centralized, "run_one", fake_run_one)
    lr, scores = centralized.choose_lr("dense", args, None, None)
    assert lr == 0.1 and scores == {0.1: 0.9, 0.2: 0.8}


def test_frobenius_decay_rows_are_labelled_and_negative_decay_is_refused(fmnist_sample, capsys):
    base = [
        "--model", "lenet5", "--data-dir", str(fmnist_sample), "--epochs", "1", "--betas",
        "1", "--limit-train", "100", "--limit-test", "50", "--threads", "1",
        "--dense-warmup", "0", "--frobenius-decay", "1e-4",
    ]  # fmt: skip
    rows = centralized.main([*base, "--methods", "maestro,dense"])
    # Dense (and its SVD truncation) has no factors to decay: only the factored rows say +fd.
    assert {r.method for r in rows} == {"maestro+fd", "dense", "svd"}
    with pytest.raises(SystemExit):
        centralized.parse_args(["--frobenius-decay", "-1"])
    assert "--frobenius-decay must be ≥ 0" in capsys.readouterr().err
