"""Run labels: a method's variants are tuned and reported apart from it."""

import pytest

from simulations.labels import method_label, method_list


@pytest.mark.parametrize(
    ("config", "label"),
    [
        ({"method": "fjord"}, "fjord"),
        ({"method": "maestro", "sub-models": "alternate"}, "maestro+alternate"),
        ({"method": "maestro", "sub-models": "sandwich", "sub-batch-share": 1.0}, "maestro"),
        ({"method": "maestro", "sub-batch-share": 0.25}, "maestro+sub-batch0.25"),
        ({"method": "maestro", "sub-models": "random"}, "maestro+random"),
        ({"method": "heterofl", "compute-match": "fjord"}, "heterofl+compute-fjord"),
        ({"method": "fjord", "compute-match": ""}, "fjord"),
        ({"method": "maestro", "dense-warmup": 0.0}, "maestro"),
        ({"method": "maestro", "dense-warmup": 0.6}, "maestro+warmup"),
        (
            {"method": "maestro", "dense-warmup": 0.6, "warmup-method": "fedavg-all"},
            "maestro+warmup",
        ),
        (
            {"method": "maestro", "dense-warmup": 0.6, "warmup-method": "fjord"},
            "maestro+fjord-warmup",
        ),
        ({"method": "maestro", "warmup-method": "fjord"}, "maestro"),  # no warm-up at all
        ({"method": "maestro", "conv-factorization": "svd", "pass-average": False}, "maestro"),
        ({"method": "maestro", "pass-average": True}, "maestro+pass-average"),
        ({"method": "maestro", "initial-ranks": "full"}, "maestro"),
        (
            {"method": "maestro", "conv-factorization": "tucker", "initial-ranks": "breakeven"},
            "maestro+tucker+breakeven",
        ),
        (
            {"method": "maestro", "conv-factorization": "tucker-b2", "dense-warmup": 0.6},
            "maestro+tucker-b2+warmup",
        ),
        # An older run stores the removed hybrid-width at its default: no suffix.
        ({"method": "maestro", "hybrid-width": False}, "maestro"),
        ({"method": "maestro", "frobenius-decay": 1e-3}, "maestro+fd"),
        ({"method": "maestro", "frobenius-decay": 0.0}, "maestro"),
        ({"method": "maestro", "freeze": "none", "freeze-per-epoch": 2}, "maestro"),
        ({"method": "maestro", "freeze": "stage"}, "maestro+freeze-stage"),
        ({"method": "maestro", "lasso": 1e-3, "shrink-every": 10}, "maestro+gl0.001+shrink"),
        ({"method": "maestro", "lasso": 3e-4, "shrink-every": 0}, "maestro+gl0.0003"),
        ({"method": "maestro", "lasso": 0.0, "shrink-every": 5}, "maestro+shrink"),
        (
            {"method": "maestro", "freeze": "stage", "freeze-per-epoch": 2},
            "maestro+freeze-stage-x2",
        ),
    ],
)
def test_method_label(config, label):
    assert method_label(config) == label


def test_method_list_reads_a_comma_list_with_spaces_and_empty_items():
    assert method_list("fjord, fedavg-fit,,") == ["fjord", "fedavg-fit"]
    assert method_list("") == []


def test_variant_is_the_label_less_its_method_and_its_settings_are_columns():
    from simulations.labels import VARIANT_SETTINGS, variant_of, variant_settings

    config = {"method": "maestro", "conv-factorization": "tucker", "dense-warmup": 0.6}
    assert variant_of(config) == "tucker+warmup"
    assert variant_of({"method": "fjord"}) == ""
    settings = variant_settings(config)
    assert list(settings) == list(VARIANT_SETTINGS)
    assert settings["conv-factorization"] == "tucker" and settings["dense-warmup"] == 0.6
    assert settings["lasso"] == 0.0 and settings["initial-ranks"] == "full"  # the defaults


def test_variant_defaults_are_the_run_configs():
    from dataclasses import fields

    from maestro_common.app.config import RunConfig
    from simulations.labels import HISTORICAL_SETTINGS, VARIANT_SETTINGS

    defaults = {f.name.replace("_", "-"): f.default for f in fields(RunConfig)}
    # The historical keys are those of removed options: read from old runs, no longer keys.
    assert set(VARIANT_SETTINGS) - set(defaults) == set(HISTORICAL_SETTINGS)
    current = {k: v for k, v in VARIANT_SETTINGS.items() if k not in HISTORICAL_SETTINGS}
    # Two defaults changed after their keys existed (issue 29): the settings keep the earlier
    # values, the paper's step, which are also what a run config without the key ran with.
    changed = {"sub-models": "sandwich", "transmission": "prefix"}
    assert {k: defaults[k] for k in current if k not in changed} == {
        k: v for k, v in current.items() if k not in changed
    }
    assert {k: current[k] for k in changed} == changed
    assert {k: defaults[k] for k in changed} == {"sub-models": "auto", "transmission": "auto"}


def test_the_default_maestro_step_is_labelled_apart_from_the_papers_sandwich_on_prefixes():
    from maestro_common.app.config import RunConfig

    def label(**changes):
        return method_label(RunConfig(**changes).to_run_config())

    assert label() == "maestro+split+collective"
    assert label(sub_models="sandwich", transmission="prefix") == "maestro"
    assert label(sub_models="sandwich") == "maestro+collective"
    assert label(sub_models="split", transmission="prefix") == "maestro+split"
    # auto: on prefixes the sandwich, which Tucker cores are sent as
    assert label(transmission="prefix") == "maestro"
    assert label(conv_factorization="tucker") == "maestro+tucker"
    # a sampled objective runs no nested sub-models
    assert label(objective="sampled") == "maestro+collective"
    # the other methods hold Maestro's step keys at their defaults, unused
    for method in ("fjord", "heterofl", "fedrolex", "spectral-unbiased", "prism", "fedavg-all"):
        assert label(method=method) == method
    # a run made before the keys existed ran the paper's step
    assert method_label({"method": "maestro", "conv-factorization": "svd"}) == "maestro"


def test_the_ordered_methods_are_the_registrys():
    from maestro_common.app.methods import METHOD_NAMES, get_method
    from simulations.labels import ORDERED_METHODS

    assert set(ORDERED_METHODS) == {m for m in METHOD_NAMES if get_method(m).ordered}
