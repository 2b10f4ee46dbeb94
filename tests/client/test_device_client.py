"""A deployed client: automatic tier, its own data (data-path), malloc tuning opt-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from client import client_app
from client.local_data import own_splits
from maestro_common.app.config import RunConfig
from maestro_common.app.device_report import StepMeasurement
from maestro_common.app.malloc import client_wants_tuning
from maestro_common.ml.data import read_idx
from server import server_app
from server.strategy import NestedFedAvg
from tests.fakegrid import FakeGrid

pytestmark = pytest.mark.usefixtures("task_identity")


def slow_device(cfg, beta):
    """A benchmark hook: a device that needs 400 ms per step at β = 1."""
    return StepMeasurement(beta, 400 * beta, 500.0)


@pytest.fixture
def cfg(fmnist_sample, tmp_path):
    return RunConfig(
        model="lenet5",
        data_dir=str(fmnist_sample),
        tier_fractions="0.25,0.5,1.0",
        num_rounds=1,
        clients_per_round=2,
        min_nodes=2,
        max_test_examples=50,
        device="cpu",
        output_dir=str(tmp_path / "runs"),
        run_name="auto",
    )


@pytest.fixture
def own_data(tmp_path, fmnist_sample) -> Path:
    """A device's own 120 images as an .npz."""
    images = read_idx(fmnist_sample / "train-images-idx3-ubyte.gz")[:120]
    labels = read_idx(fmnist_sample / "train-labels-idx1-ubyte.gz")[:120]
    np.savez(tmp_path / "mine.npz", images=images, labels=labels)
    return tmp_path / "mine.npz"


def test_slow_device_chooses_a_smaller_tier_and_the_server_records_it(cfg, monkeypatch, own_data):
    monkeypatch.setattr("maestro_common.app.autotier.benchmark_step", slow_device)
    nodes = {
        1: {"rank-fraction": "auto", "max-step-ms": 250, "data-path": str(own_data)},
        2: {"rank-fraction": 1.0, "partition-id": 0, "num-partitions": 1},
    }
    grid = FakeGrid(nodes, cfg.to_run_config())
    strategy = NestedFedAvg({}, 1)
    strategy.discover(grid)
    assert strategy.nodes[1].beta == 0.5 and strategy.nodes[1].tier == 1
    assert strategy.auto_tiers[1]["max-step-ms"] == 250.0 and 2 not in strategy.auto_tiers

    # The whole ServerApp over the fake grid: the first round row carries the choice.
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_run_config()
    )
    server_app.main(FakeGrid(nodes, cfg.to_run_config()), context)
    rows = [json.loads(x) for x in (Path(cfg.output_dir) / "auto" / "metrics.jsonl").open()]
    (report,) = rows[0]["auto-tier"].values()
    assert report["beta"] == 0.5
    assert [c["step-ms"] for c in report["candidates"]] == [100.0, 200.0, 400.0]
    by_beta = {c["rank-fraction"]: c for c in rows[0]["clients"]}
    assert by_beta[0.5]["num-examples"] == 108  # its own 120 images less the validation tenth


def test_own_data_is_all_a_data_path_client_holds(cfg, own_data):
    train, val = own_splits(str(own_data), cfg.dataset, cfg.val_fraction, cfg.seed)
    assert (len(train), len(val)) == (108, 12)
    with pytest.raises(ValueError, match="neither a folder"):
        own_splits(str(own_data) + ".missing", cfg.dataset, 0.1, 0)


def test_a_node_without_data_is_told_what_to_give(cfg):
    context = Context(1, 1, {"rank-fraction": 0.5}, RecordDict(), cfg.to_run_config())
    with pytest.raises(ValueError, match="data-path"):
        client_app._splits(cfg, context)


@pytest.mark.parametrize(
    ("node", "env", "ray_loaded", "expected"),
    [
        ({}, {}, True, True),  # simulation: on by default
        ({}, {}, False, False),  # a deployed device: off by default
        ({"tune-malloc": True}, {}, False, True),
        ({"tune-malloc": False}, {"MAESTRO_TUNE_MALLOC": "1"}, True, False),
        ({}, {"MAESTRO_TUNE_MALLOC": "1"}, False, True),
        ({}, {"MAESTRO_TUNE_MALLOC": "0"}, True, False),
    ],
)
def test_malloc_tuning_is_opt_in_on_devices(monkeypatch, node, env, ray_loaded, expected):
    if ray_loaded:
        monkeypatch.setitem(__import__("sys").modules, "ray", object())
    else:
        monkeypatch.delitem(__import__("sys").modules, "ray", raising=False)
    assert client_wants_tuning(node, env) is expected


def test_bad_malloc_settings_are_refused():
    with pytest.raises(ValueError, match="tune-malloc must be true or false"):
        client_wants_tuning({"tune-malloc": "yes"}, {})
    with pytest.raises(ValueError, match="MAESTRO_TUNE_MALLOC must be 0 or 1"):
        client_wants_tuning({}, {"MAESTRO_TUNE_MALLOC": "on"})
