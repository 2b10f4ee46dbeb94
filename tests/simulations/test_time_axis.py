"""The time axis maps methods to benchmark variants and tabulates step time beside MACs."""

from __future__ import annotations

import json

import pytest

from simulations.time_axis import (
    factored_kind,
    load_bench,
    step_times,
    time_axis_table,
    variant,
)

BENCH = {
    "models": [
        {"group": "cnn", "variant": "dense", "beta": 1.0, "macs": 100, "train_ms": 10.0},
        {"group": "cnn", "variant": "svd", "beta": 0.25, "macs": 30, "train_ms": 6.0},
        {"group": "cnn", "variant": "tucker", "beta": 0.25, "macs": 20, "train_ms": 5.0},
        {"group": "cnn", "variant": "width", "beta": 0.25, "macs": 30, "train_ms": 4.0},
        {"group": "cnn", "variant": "tucker-be", "beta": 0.25, "macs": 15, "train_ms": 4.5},
    ]
}


def test_a_run_config_names_the_benchmark_kind_its_clients_train():
    assert factored_kind({"method": "maestro"}) == "svd"
    assert factored_kind({"conv-factorization": "tucker", "initial-ranks": "full"}) == "tucker"
    tucker_be = {"conv-factorization": "tucker", "initial-ranks": "breakeven"}
    assert factored_kind(tucker_be) == "tucker-be"
    assert step_times(BENCH, "cnn", "maestro", factored_kind(tucker_be)) == {0.25: (4.5, 0.15)}
    # An older run stores the removed hybrid-width at its default: the plain kind.
    assert factored_kind({"hybrid-width": False}) == "svd"


@pytest.mark.parametrize(
    ("option", "kind"),
    [
        ({"frobenius-decay": 1e-3}, "svd +fd"),
        ({"lasso": 1e-3}, "svd +gl"),
        ({"shrink-every": 10}, "svd +shrink"),
        ({"lasso": 1e-3, "shrink-every": 10}, "svd +gl +shrink"),
    ],
)
def test_untimed_options_get_no_step_time(option, kind):
    # The benchmark timed the plain svd step (6.0 ms here): a run with an extra term per step
    # or ranks that shrink must not borrow it.
    assert step_times(BENCH, "cnn", "maestro", "svd") == {0.25: (6.0, 0.3)}
    config = {"method": "maestro", **option}
    assert factored_kind(config) == kind
    assert step_times(BENCH, "cnn", "maestro", factored_kind(config)) == {}
    off = {"frobenius-decay": 0.0, "lasso": 0.0, "shrink-every": 0}
    assert factored_kind({"method": "maestro", **off}) == "svd"


def test_methods_map_to_variants():
    assert variant("maestro") == "svd"
    assert variant("maestro", "tucker") == "tucker"
    assert variant("fjord") == variant("heterofl") == "width"
    with pytest.raises(ValueError, match="unknown method"):
        variant("fedprox")


def test_step_times_and_table():
    assert step_times(BENCH, "cnn", "maestro", "tucker") == {0.25: (5.0, 0.2)}
    assert step_times(BENCH, "cnn", "fedavg-all")[0.25] == (10.0, 1.0)
    pair = {"maestro": ("maestro", "svd"), "fjord": ("fjord", "svd")}
    table = time_axis_table(BENCH, "cnn", pair)
    assert "| 0.25 | 6.0 | 0.30 | 4.0 | 0.30 |" in table
    variants = {"maestro": ("maestro", "svd"), "maestro+tucker": ("maestro", "tucker")}
    table = time_axis_table(BENCH, "cnn", variants)
    assert "maestro+tucker step ms" in table and "| 0.25 | 6.0 | 0.30 | 5.0 | 0.20 |" in table
    with pytest.raises(ValueError, match="no benchmark rows"):
        step_times(BENCH, "lenet5", "maestro")


def test_load_bench(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"simulations\.bench"):
        load_bench(tmp_path / "missing.json")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    assert load_bench(path) == BENCH


def test_fedavg_fit_runs_the_weakest_tiers_width_at_every_tier():
    rows = [
        {"group": "cnn", "variant": "dense", "beta": 1.0, "train_ms": 10.0, "macs": 100},
        {"group": "cnn", "variant": "width", "beta": 0.2, "train_ms": 3.0, "macs": 25},
        {"group": "cnn", "variant": "width", "beta": 1.0, "train_ms": 10.0, "macs": 100},
    ]
    times = step_times({"models": rows}, "cnn", "fedavg-fit")
    assert times == {0.2: (3.0, 0.25), 1.0: (3.0, 0.25)}
    assert step_times({"models": rows}, "cnn", "fjord")[1.0] == (10.0, 1.0)


def test_a_freezing_run_takes_the_freezing_sections_step_time_never_the_unfrozen_one():
    bench = {
        **BENCH,
        "freezing": [
            {
                "group": "cnn",
                "variant": "svd freeze=none",
                "beta": 1.0,
                "macs": 90,
                "train_ms": 9.0,
            },
            {
                "group": "cnn",
                "variant": "svd freeze=stage",
                "beta": 1.0,
                "macs": 90,
                "train_ms": 7.0,
            },
            {
                "group": "cnn",
                "variant": "svd freeze=stage",
                "beta": 0.25,
                "macs": 30,
                "train_ms": 4.2,
            },
        ],
    }
    config = {"method": "maestro", "freeze": "stage", "freeze-per-epoch": 2}
    assert factored_kind(config) == "svd freeze=stage"
    assert factored_kind({"freeze": "none"}) == "svd"
    got = step_times(bench, "cnn", "maestro", factored_kind(config))
    assert got == {0.25: (4.2, 0.3), 1.0: (7.0, 0.9)}  # not the models section's svd 6.0 ms
    # No freezing section measured: its tiers have no step time rather than the unfrozen one.
    assert step_times(BENCH, "cnn", "maestro", factored_kind(config)) == {}


def test_passes_per_step_column_shows_what_the_step_time_leaves_out():
    pair = {"maestro": ("maestro", "svd"), "fjord": ("fjord", "svd")}
    table = time_axis_table(BENCH, "cnn", pair, {"maestro": {0.25: 2.1}})
    assert "| maestro MACs ratio | maestro passes/step | fjord step ms" in table
    assert "| 0.25 | 6.0 | 0.30 | 2.10 | 4.0 | 0.30 | – |" in table
