"""Tests of NestedFedAvg with an index plan (spectral-unbiased): sampled components travel,
come back and are placed; a reply missing some of them is refused."""

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import ConfigRecord

from maestro_common.app.protocol import ARRAYS as ARRAYS_KEY
from maestro_common.app.protocol import from_record, to_record
from maestro_common.ml.index_sets import take_sub_model
from server.model_ops import ModelOps
from server.strategy import NestedFedAvg
from tests.fakegrid import FakeGrid, Handler
from tests.server.strategy_setup import (
    FACTORED,
    assert_bit_equal,
    echo,
)

pytestmark = pytest.mark.usefixtures("task_identity")


def _unchanged(corrupt: Callable[[dict, dict], None] | None = None) -> Handler:
    """A train handler that replies with exactly the arrays it received."""
    return echo(lambda arrays, metrics: _minus_half(arrays, corrupt, metrics))


def _minus_half(arrays, corrupt, metrics):
    for key in arrays:
        arrays[key] = arrays[key] - np.asarray(0.5, arrays[key].dtype)
    if corrupt is not None:
        corrupt(arrays, metrics)


def _spectral_strategy(cfg) -> tuple[NestedFedAvg, ModelOps]:
    spectral = ModelOps(cfg.replace(method="spectral-unbiased"))
    strategy = NestedFedAvg(
        spectral.axes,
        cfg.clients_per_round,
        0,
        cfg.seed,
        shapes_fn=spectral.shapes,
        plan=spectral.plan,
    )
    return strategy, spectral


def test_an_index_plan_picks_records_and_places_each_nodes_components(cfg):
    """Sampled components travel gathered and scaled; a node that returns them untouched leaves
    the model's function unchanged (multipliers divided out, then re-factored)."""
    strategy, spectral = _spectral_strategy(cfg)
    nodes = {
        7: {"rank-fraction": 0.25, "partition-id": 0, "num-partitions": 2},
        8: {"rank-fraction": 1.0, "partition-id": 1, "num-partitions": 2},
    }
    grid = FakeGrid(nodes, cfg.to_run_config(), train=_unchanged())
    init = spectral.initial_arrays()
    messages = list(strategy.configure_train(1, to_record(init), ConfigRecord({}), grid))
    by_node = {m.metadata.dst_node_id: from_record(m.content[ARRAYS_KEY]) for m in messages}
    weak, full = strategy._sent[7].sub, strategy._sent[8].sub
    assert full.is_prefix and not weak.is_prefix
    assert set(weak.indices) == {f"{n}.{f}" for n in FACTORED for f in "uv"}
    assert weak.shapes["fc1.u"] == (120, 30)  # as many components as the prefix at 0.25
    for key, arr in by_node[7].items():
        np.testing.assert_array_equal(arr, take_sub_model(init, weak)[key])
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert strategy.round_log.rejected == []
    for name in FACTORED:
        u, v = out[f"{name}.u"], out[f"{name}.v"]
        u0, v0 = init[f"{name}.u"], init[f"{name}.v"]
        if v.ndim == 4:  # conv: v is (R, in, kh, kw)
            v, v0 = v.reshape(v.shape[0], -1).T, v0.reshape(v0.shape[0], -1).T
        np.testing.assert_allclose(u @ v.T, u0 @ v0.T, atol=1e-4)


def test_a_reply_missing_some_of_its_components_is_refused(cfg):
    strategy, spectral = _spectral_strategy(cfg)
    nodes = {7: {"rank-fraction": 0.25, "partition-id": 0, "num-partitions": 1}}

    def drop_one(arrays, metrics):
        arrays["fc1.u"] = arrays["fc1.u"][:, :-1]

    grid = FakeGrid(nodes, cfg.to_run_config(), train=_unchanged(drop_one))
    init = spectral.initial_arrays()
    out = strategy.run(grid, init, 1, ConfigRecord({}))
    assert [reason for _, reason in strategy.round_log.rejected] == [
        "'fc1.u': axis 1 holds 29 entries, but the node was sent 30 indices on it "
        "(shape (120, 29) vs sent (120, 30))"
    ]
    assert_bit_equal(out, init)
