"""Tests for maestro_common.app.config: parsing Flower's run_config into the typed RunConfig."""

import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from maestro_common.app.config import ConfigError, RunConfig, parse_floats, parse_options
from maestro_common.app.methods import METHOD_NAMES
from maestro_common.app.removed import REMOVED_KEYS, removed_key_message
from maestro_common.app.task import load_run_config

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_defaults_parse_from_empty_run_config():
    cfg = RunConfig.from_run_config({})
    assert cfg == RunConfig()
    assert cfg.tiers == (0.2, 0.4, 0.6, 0.8, 1.0)
    assert cfg.shares == pytest.approx((0.2,) * 5)
    assert cfg.method == "maestro"
    assert cfg.name == "maestro-cnn-fashion-mnist-seed0"


def test_kebab_case_keys_map_to_fields():
    cfg = RunConfig.from_run_config(
        {
            "num-rounds": 7,
            "clients-per-round": 4,
            "rank-fraction": 0.5,
            "data-dir": "/tmp/x",
            "max-grad-norm": 0.0,
            "run-name": "r",
        }
    )
    assert (cfg.num_rounds, cfg.clients_per_round, cfg.rank_fraction) == (7, 4, 0.5)
    assert (cfg.data_dir, cfg.max_grad_norm, cfg.name) == ("/tmp/x", 0.0, "r")
    keys = RunConfig.keys()
    assert "num-rounds" in keys and "num_rounds" not in keys
    # tiers / shares are derived, not keys
    assert "tiers" not in keys and "shares" not in keys


def test_snake_case_key_is_unknown():
    with pytest.raises(ConfigError, match="num_rounds"):
        RunConfig.from_run_config({"num_rounds": 3})


def test_unknown_key_rejected_listing_allowed_keys():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_run_config({"num-round": 3, "bogus": 1})
    msg = str(err.value)
    assert "'bogus'" in msg and "'num-round'" in msg
    assert "allowed" in msg
    allowed = RunConfig.keys()
    assert len(allowed) >= 30
    for key in allowed:
        assert repr(key) in msg


def test_to_run_config_round_trips():
    cfg = RunConfig(model="lenet5", tier_fractions="0.25,1.0", tier_shares="3,1", seed=4)
    back = RunConfig.from_run_config(cfg.to_run_config())
    assert back == cfg
    assert set(cfg.to_run_config()) == set(RunConfig.keys())


@pytest.mark.parametrize(
    "key,value",
    [
        ("num-rounds", True),  # bool is not an int
        ("num-rounds", 2.5),
        ("num-rounds", "3"),
        ("seed", None),
        ("lr", "0.1"),  # str is not a float
        ("lr", True),
        ("alpha", False),
        ("resume", 1),
        ("resume", "yes"),
        ("method", True),
        ("model", None),
        ("tier-fractions", False),
    ],
)
def test_wrong_types_rejected(key, value):
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        RunConfig.from_run_config({key: value})
    assert type(value).__name__ in str(err.value)


def test_lossless_coercions_accepted():
    cfg = RunConfig.from_run_config(
        {"num-rounds": 4.0, "lr": 1, "resume": "True", "tier-fractions": 1.0, "run-name": 7}
    )
    assert cfg.num_rounds == 4 and isinstance(cfg.num_rounds, int)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.resume is True
    assert cfg.tiers == (1.0,) and cfg.shares == (1.0,)
    assert cfg.run_name == "7"
    assert RunConfig.from_run_config({"resume": "false"}).resume is False


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"device": "tpu"}, "device"),
        ({"rank-fraction": 0.0}, "rank-fraction"),
        ({"rank-fraction": 1.5}, "rank-fraction"),
        ({"num-rounds": 0}, "num-rounds"),
        ({"clients-per-round": 0}, "clients-per-round"),
        ({"local-epochs": 0}, "local-epochs"),
        ({"local-steps": -1}, "local-steps"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"model-options": "dim"}, "model-options"),
        ({"model-options": "dim=1,dim=2"}, "model-options"),
        ({"freeze-per-epoch": 0}, "freeze-per-epoch"),
        ({"batch-size": 0}, "batch-size"),
        ({"eval-every": 0}, "eval-every"),
        ({"min-nodes": 0}, "min-nodes"),
        ({"classes-per-partition": 0}, "classes-per-partition"),
        ({"clients-per-eval": -1}, "clients-per-eval"),
        ({"shrink-every": -1}, "shrink-every"),
        ({"max-test-examples": -1}, "max-test-examples"),
        ({"seed": -1}, "seed"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"alpha": -1.0}, "alpha"),
        ({"round-timeout": 0.0}, "round-timeout"),
        ({"query-timeout": 0.0}, "query-timeout"),
        ({"query-timeout": -1.0}, "query-timeout"),
        ({"momentum": -0.1}, "momentum"),
        ({"weight-decay": -1e-4}, "weight-decay"),
        ({"max-grad-norm": -1.0}, "max-grad-norm"),
        ({"lasso": -0.1}, "lasso"),
        ({"shrink-eps": -1e-3}, "shrink-eps"),
        ({"val-fraction": 1.0}, "val-fraction"),
        ({"val-fraction": -0.1}, "val-fraction"),
        ({"tier-fractions": "0,0.5"}, "tier-fractions"),
        ({"tier-fractions": "0.5,1.5"}, "tier-fractions"),
        ({"tier-fractions": ""}, "tier-fractions"),
        ({"tier-fractions": "a,b"}, "tier-fractions"),
        ({"tier-fractions": "nan"}, "tier-fractions"),
        ({"tier-fractions": "0.5,1,0.5"}, "tier-fractions"),  # duplicate tier
        ({"tier-fractions": "0.5,0.50"}, "tier-fractions"),  # duplicate as numbers
        ({"tier-fractions": "0.5,1", "tier-shares": "1,1,1"}, "tier-shares"),  # length
        ({"tier-fractions": "0.5,1", "tier-shares": "1"}, "tier-shares"),
        ({"tier-fractions": "0.5,1", "tier-shares": "-1,2"}, "tier-shares"),  # negative
        ({"tier-fractions": "0.5,1", "tier-shares": "0,0"}, "tier-shares"),  # zero sum
        ({"tier-shares": "x"}, "tier-shares"),
        ({"objective": "both"}, "objective"),
        ({"full-pass-share": 1.5}, "full-pass-share"),
        ({"dense-warmup": 1.0}, "dense-warmup"),
        ({"dense-warmup": -0.1}, "dense-warmup"),
        ({"dense-warmup": 0.9, "num-rounds": 2}, "dense-warmup=0.9 of num-rounds=2 leaves no"),
        # issue 30: tiers that print alike would share a report row
        ({"tier-fractions": "0.2,0.2000001"}, "tier-fractions repeat a value"),
        ({"aggregation": "krum"}, "aggregation must be one of mean, trimmed-mean, median"),
        ({"aggregation": "Median"}, "aggregation"),
        ({"trim-fraction": 0.5}, "trim-fraction must be in [0, 0.5)"),
        ({"trim-fraction": -0.1}, "trim-fraction"),
        ({"clip-radius": 0.0}, "clip-radius must be > 0"),
        ({"clip-radius": float("inf")}, "clip-radius"),
        ({"weight-floor": -0.01}, "weight-floor"),
        ({"weight-floor": 3.0}, "weight-floor (3.0) must not exceed weight-cap (2.0)"),
    ],
)
def test_each_validation_raises_naming_the_key(changes, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        RunConfig.from_run_config(changes)


def test_robust_aggregation_keys_parse():
    cfg = RunConfig.from_run_config(
        {"aggregation": "centered-clip", "clip-radius": 2, "trim-fraction": 0, "weight-floor": 0}
    )
    assert (cfg.aggregation, cfg.clip_radius, cfg.trim_fraction, cfg.weight_floor) == (
        "centered-clip",
        2.0,
        0.0,
        0.0,
    )
    # With the weight cap off, any floor is allowed.
    assert RunConfig.from_run_config({"weight-cap": 0, "weight-floor": 5}).weight_floor == 5.0


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        RunConfig(rank_fraction=2.0)


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"method": "fedprox"}, "method"),
        ({"model": "vgg"}, "model"),
        ({"dataset": "mnist"}, "dataset"),
        ({"sampler": "random"}, "sampler"),
        ({"partitioning": "shards"}, "partitioning"),
        ({"sub-models": "all"}, "sub-models"),
        ({"lr-schedule": "linear"}, "lr-schedule"),
        ({"conv-factorization": "cp"}, "conv-factorization"),
        ({"freeze": "all"}, "freeze"),
    ],
)
def test_names_are_checked_against_their_registries(changes, key):
    # The config itself is a leaf and parses any name; the apps read it through load_run_config.
    RunConfig.from_run_config(changes)
    (value,) = changes.values()
    with pytest.raises(ConfigError, match=rf"{key} must be one of .*got '{value}'"):
        load_run_config(changes)


@pytest.mark.parametrize(
    ("share", "rounds", "warm"), [(0.0, 100, 0), (0.6, 100, 60), (0.6, 20, 12), (0.01, 10, 1)]
)
def test_warmup_rounds_are_a_rounded_share_and_at_least_one(share, rounds, warm):
    assert RunConfig(dense_warmup=share, num_rounds=rounds).warmup_rounds == warm


def test_a_dense_warmup_needs_a_factored_method():
    load_run_config({"dense-warmup": 0.5, "num-rounds": 4})  # maestro
    with pytest.raises(ConfigError, match="dense-warmup applies to factored methods only"):
        load_run_config({"dense-warmup": 0.5, "num-rounds": 4, "method": "fjord"})


@pytest.mark.parametrize("value", [True, False, "false"])
def test_a_removed_key_is_refused_saying_why_and_where_its_verdict_is(value):
    # At any value, its old default too: a config that names it was written for the variant.
    with pytest.raises(ConfigError) as err:
        load_run_config({"hybrid-width": value})
    message = str(err.value)
    assert "'hybrid-width' was removed" in message
    assert 'docs/results.md, "Variants measured"' in message and "59c7f3e" in message
    assert "unknown run-config keys" not in message


def test_every_removed_key_is_gone_from_the_run_config():
    assert not set(REMOVED_KEYS) & set(RunConfig.keys())
    for key in REMOVED_KEYS:
        assert key in removed_key_message(key) and "Variants measured" in removed_key_message(key)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("distill", True),
        ("distill-temperature", 2.0),
        ("pass-average", True),
        ("frobenius-decay", 1e-4),
        ("initial-ranks", "breakeven"),
        ("rank-quantum", 4),
    ],
)
def test_keys_of_removed_variants_are_refused(key, value):
    # Issue 31: these variants lost and their code is gone; old run folders may still name them.
    with pytest.raises(ConfigError, match=key):
        load_run_config({key: value})


@pytest.mark.parametrize("mode", ["factor", "layer"])
def test_removed_freeze_modes_are_refused(mode):
    with pytest.raises(ConfigError, match=rf"freeze must be one of .*stage.*got '{mode}'"):
        load_run_config({"freeze": mode})


@pytest.mark.parametrize("method", ["fjord", "heterofl", "fedavg-all", "fedavg-fit"])
def test_the_lasso_and_shrinking_need_a_method_that_uses_them(method):
    load_run_config({"lasso": 1e-3, "shrink-every": 10})  # maestro
    load_run_config({"lasso": 0.0, "shrink-every": 0, "method": method})
    with pytest.raises(ConfigError, match=rf"lasso applies to maestro only.*{method!r}"):
        load_run_config({"lasso": 1e-3, "method": method})
    with pytest.raises(ConfigError, match=rf"shrink-every applies to maestro only.*{method!r}"):
        load_run_config({"shrink-every": 10, "method": method})


@pytest.mark.parametrize("key", ["full-pass-share", "sub-batch-share"])
def test_split_sub_models_refuse_the_shares_they_replace(key):
    load_run_config({"sub-models": "split"})
    with pytest.raises(ConfigError, match=r"sub-models = 'split'.*leave full-pass-share"):
        load_run_config({"sub-models": "split", key: 0.5})
    # the default (auto) runs split with Collective transmission: the message says so
    with pytest.raises(ConfigError, match=r"what sub-models = 'auto' runs here.*'sandwich'"):
        load_run_config({key: 0.5})
    load_run_config({key: 0.5, "sub-models": "sandwich"})
    load_run_config({key: 0.5, "transmission": "prefix"})  # auto on prefixes: the sandwich


def test_config_module_is_a_leaf():
    """Reading a config loads neither torch nor the models, data or samplers."""
    code = (
        "import sys; import maestro_common.app.config; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(("
        "'maestro_common.ml.models', 'maestro_common.ml.data', 'maestro_common.lowrank.samplers'"
        "))]; print(bad); sys.exit(bool(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tier_fractions_string_parses_to_floats_and_shares_normalise():
    cfg = RunConfig.from_run_config({"tier-fractions": " 0.25, 0.5,1 ,", "tier-shares": "1, 1,2"})
    assert cfg.tiers == (0.25, 0.5, 1.0)
    assert all(isinstance(t, float) for t in cfg.tiers)
    assert cfg.shares == pytest.approx((0.25, 0.25, 0.5))
    assert math.isclose(sum(cfg.shares), 1.0)


def test_empty_shares_mean_equal_shares_and_a_zero_share_is_allowed():
    cfg = RunConfig.from_run_config({"tier-fractions": "0.1,0.3,0.9,1.0"})
    assert cfg.shares == pytest.approx((0.25,) * 4)
    cfg = RunConfig.from_run_config({"tier-fractions": "0.5,1.0", "tier-shares": "0,3"})
    assert cfg.shares == (0.0, 1.0)


def test_parse_floats_ignores_empty_items_and_reports_bad_ones():
    assert parse_floats("1, ,2,", "x") == (1.0, 2.0)
    assert parse_floats("", "x") == ()
    with pytest.raises(ConfigError, match="what-key"):
        parse_floats("1,two", "what-key")


def test_infinite_tier_share_rejected():
    with pytest.raises(ConfigError, match="tier-shares"):
        RunConfig.from_run_config({"tier-fractions": "0.5,1", "tier-shares": "inf,1"})


def test_pyproject_app_config_is_exactly_the_defaults():
    with open(PYPROJECT, "rb") as f:
        table = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    assert set(table) == set(RunConfig.keys())
    assert RunConfig.from_run_config(table) == RunConfig()
    # Not just equal after coercion: the TOML values have the field types already.
    assert RunConfig.from_run_config(table).to_run_config() == table


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_parses(method):
    assert load_run_config({"method": method}).method == method


def test_name_and_replace():
    method = METHOD_NAMES[-1]  # a baseline
    assert method != "maestro"
    cfg = RunConfig(method=method, model="lenet5", seed=3)
    assert cfg.name == f"{method}-lenet5-fashion-mnist-seed3"
    other = cfg.replace(tier_fractions="0.5,1.0")
    assert other.tiers == (0.5, 1.0) and cfg.tiers == (0.2, 0.4, 0.6, 0.8, 1.0)
    with pytest.raises(ConfigError, match="tier-fractions"):
        cfg.replace(tier_fractions="2")


@pytest.mark.parametrize("key", ["lr", "alpha", "deadline", "shrink-eps", "query-timeout"])
def test_non_finite_numbers_are_rejected(key):
    with pytest.raises(ConfigError, match=f"{key} must be finite"):
        RunConfig.from_run_config({key: float("inf")})


def test_val_size_and_test_eval():
    cfg = RunConfig.from_run_config({"val-size": 5000, "test-eval": False})
    assert (cfg.val_size, cfg.test_eval) == (5000, False)
    assert (RunConfig().val_size, RunConfig().test_eval) == (0, True)
    with pytest.raises(ConfigError, match="val-size must be ≥ 0, got -1"):
        RunConfig(val_size=-1)
    with pytest.raises(ConfigError, match="test-eval = false needs val-size > 0"):
        RunConfig(test_eval=False)


def test_model_options_parse_to_typed_snake_case_keywords():
    assert parse_options("dim=64, mlp-ratio=2.5,norm=group", "x") == {
        "dim": 64,
        "mlp_ratio": 2.5,
        "norm": "group",
    }
    assert parse_options("", "x") == {}


def test_sampled_transmission_needs_svd_factors():
    message = r"transmission = 'collective'.*conv-factorization.*set transmission to 'auto'"
    with pytest.raises(ConfigError, match=message):
        load_run_config({"transmission": "collective", "conv-factorization": "tucker"})
    load_run_config({"conv-factorization": "tucker"})  # auto: prefixes cut a Tucker core


def test_the_default_step_is_split_with_collective_transmission_where_the_factors_allow():
    cfg = load_run_config({})
    assert (cfg.sub_models, cfg.transmission) == ("auto", "auto")
    assert (cfg.sub_model_rule, cfg.transmission_rule) == ("split", "collective")
    # Tucker cores are sent as prefixes, and on prefixes auto trains the sandwich
    tucker = load_run_config({"conv-factorization": "tucker"})
    assert (tucker.sub_model_rule, tucker.transmission_rule) == ("sandwich", "prefix")
    assert load_run_config({"transmission": "prefix"}).sub_model_rule == "sandwich"
    # a rule that is set is kept
    cfg = load_run_config({"sub-models": "split", "transmission": "prefix"})
    assert (cfg.sub_model_rule, cfg.transmission_rule) == ("split", "prefix")
    assert load_run_config({"sub-models": "sandwich"}).transmission_rule == "collective"


@pytest.mark.parametrize("method", ["spectral-unbiased", "spectral-collective", "prism"])
def test_the_sampled_spectral_methods_need_svd_factors(method):
    with pytest.raises(ConfigError, match=rf"method {method} samples.*conv-factorization"):
        load_run_config({"method": method, "conv-factorization": "tucker"})
