"""The centralized trainer's command line: run-config keys from --conf and --set, checked as the
federation checks them; the flags of the earlier interface refused with their key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maestro_common.app.config import RunConfig
from maestro_common.app.methods import METHOD_NAMES
from simulations.centralized import parse_args
from simulations.centralized.options import DEFAULT_EPOCHS, REMOVED_FLAGS, parse_sets

CONF = Path(__file__).resolve().parents[2] / "simulations" / "conf"


def test_defaults_are_the_run_configs():
    opts = parse_args([])
    assert list(opts.configs) == [RunConfig().method] and opts.seeds == [RunConfig().seed]
    # Every key at the federation's default; num-rounds is the epochs (it sizes dense-warmup).
    # Nothing is sent: Maestro's factors train as prefixes, so auto's step is the sandwich.
    assert opts.first == RunConfig(num_rounds=DEFAULT_EPOCHS, transmission="prefix")
    assert opts.first.sub_model_rule == "sandwich"
    assert parse_args(["--set", "sub-models=split"]).first.sub_model_rule == "split"
    assert parse_args(["--methods", "fjord"]).first.transmission == RunConfig().transmission


def test_an_experiment_file_and_sets_give_the_keys_later_ones_winning():
    opts = parse_args(
        [
            *("--conf", str(CONF / "fmnist-100.toml"), "--set", "lr=0.05", "--set", "lr=0.07"),
            *("--set", "tier-fractions=0.5,1", "--methods", "maestro,fjord", "--seeds", "1,2"),
        ]
    )
    cfg = opts.configs["fjord"]
    assert cfg.method == "fjord" and cfg.seed == 1 and opts.seeds == [1, 2]
    assert cfg.lr == 0.07 and cfg.tiers == (0.5, 1.0)
    assert cfg.lr_schedule == "cosine" and cfg.val_size == 5000  # from the file
    assert "num-supernodes" not in opts.run_config  # the harness's key is left out


def test_the_shakespeare_experiment_file_parses():
    cfg = parse_args(["--conf", str(CONF / "shakespeare.toml")]).first
    assert (cfg.dataset, cfg.model, cfg.optimizer) == ("shakespeare", "char-transformer", "adam")
    assert (cfg.local_steps, cfg.batch_size, cfg.lr) == (20, 32, 0.003)


def test_every_registered_method_is_accepted():
    opts = parse_args(["--methods", ",".join(METHOD_NAMES)])
    assert list(opts.configs) == list(METHOD_NAMES)
    assert all(cfg.method == m for m, cfg in opts.configs.items())


def test_set_values_are_toml_or_bare_words():
    sets = parse_sets(["lr=0.1", "resume=true", "model=cnn", "tier-fractions=0.2,1", "seed=3"])
    assert sets == {
        "lr": 0.1,
        "resume": True,
        "model": "cnn",
        "tier-fractions": "0.2,1",
        "seed": 3,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["lr"])


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--set", "nope=1"], "unknown run-config keys \\['nope'\\]"),
        (["--set", "lr=-1"], "lr must be > 0"),
        (["--set", "batch-size=0.5"], "batch-size must be a int"),
        (["--set", "model=mlp"], "model must be one of"),
        (["--methods", "maestro,width"], "method must be one of"),
        (["--methods", "fjord", "--set", "lasso=1e-4"], "lasso applies to maestro only"),
        (["--set", "dense-warmup=0.9", "--epochs", "2"], "leaves no round"),
        (["--set", "dataset=shakespeare", "--set", "model=char-lstm"], "local-steps > 0"),
        (["--set", "num-supernodes=4"], "no nodes"),
        (["--set", "transmission=collective"], "sends no components: leave transmission out"),
        (["--set", "transmission=prefix"], "sends no components: leave transmission out"),
        (["--lrs", "0.1,0.2"], "val-size"),
        (["--lrs", "0.1", "--set", "val-size=10", "--set", "lr=0.1"], "--lrs chooses the lr"),
        (["--seeds", "-1"], "--seeds"),
        (["--epochs", "0"], "--epochs"),
        (["--conf", "/nonexistent/x.toml"], "x.toml"),
    ],
)
def test_bad_keys_values_and_flags_are_refused(argv, match, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert match.replace("\\", "") in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        ("--lr-schedule", "lr-schedule"),
        ("--betas", "tier-fractions"),
        ("--limit-test", "max-test-examples"),
        ("--dense-warmup", "dense-warmup"),
    ],
)
def test_removed_flags_name_their_key(flag, key, capsys):
    assert REMOVED_FLAGS[flag] == key
    with pytest.raises(SystemExit):
        parse_args([flag, "1"])
    assert f"--set {key}=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--hybrid-width"], ["--set", "hybrid-width=true"]])
def test_a_removed_variants_flag_and_key_say_it_was_removed(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    err = capsys.readouterr().err
    assert "'hybrid-width' was removed" in err and 'docs/results.md, "Variants measured"' in err


@pytest.mark.parametrize(
    ("old", "hint"),
    [("dense", "fedavg-all"), ("maestro-sampled", "objective=sampled"), ("maestro-gl", "lasso")],
)
def test_old_method_names_say_what_replaced_them(old, hint, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--methods", old])
    assert hint in capsys.readouterr().err


def test_a_removed_flag_is_not_taken_for_a_longer_one(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--lr", "0.1"])  # not --lrs
    assert "--set lr=VALUE" in capsys.readouterr().err


def test_the_lr_trials_epochs_are_checked_as_the_runs_are(capsys):
    argv = ["--set", "dense-warmup=0.5", "--set", "val-size=10", "--epochs", "4"]
    parse_args(argv)  # 2 dense epochs of 4
    with pytest.raises(SystemExit):
        parse_args([*argv, "--lrs", "0.1,0.2", "--select-epochs", "1"])
    assert "--select-epochs 1" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where there is no GPU")
def test_cuda_without_a_gpu_is_refused_before_any_data_is_read(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--set", "device=cuda"])
    assert "no CUDA device" in capsys.readouterr().err
