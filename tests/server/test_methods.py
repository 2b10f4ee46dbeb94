"""Every method of the comparison runs 2 rounds through the ServerApp's strategy and the real
ClientApp code (in-process fake grid), on a small local sample of Fashion-MNIST."""

import numpy as np
import pytest

from maestro_common.config import METHODS, RunConfig
from server.evaluation import ModelOps
from server.server_app import make_strategy
from tests.fakegrid import FakeGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread", "task_identity")

TIERS = (0.25, 0.5, 1.0)


def run_method(method: str, data_dir) -> tuple[ModelOps, dict, list, dict]:
    cfg = RunConfig(
        method=method,
        model="lenet5",
        data_dir=str(data_dir),
        tier_fractions=",".join(map(str, TIERS)),
        clients_per_round=6,
        partitioning="iid",
        max_test_examples=200,
        device="cpu",
        lr=0.05,
    )
    ops = ModelOps(cfg)
    start = ops.initial_arrays()
    state = {"arrays": start}
    strategy, train_config = make_strategy(cfg, ops, state)
    # Two nodes per tier, stated the deployment way (rank-fraction in the node config).
    nodes = {
        1000 + i: {"partition-id": i, "num-partitions": 6, "rank-fraction": TIERS[i % 3]}
        for i in range(6)
    }
    grid = FakeGrid(nodes, cfg.to_run_config())
    logs = []
    final = strategy.run(
        grid, start, 2, train_config, on_round_end=lambda log, arrays, _: logs.append(log)
    )
    return ops, start, logs, ops.evaluate_tiers(final, TIERS) | {"final": final}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_two_rounds(method, fmnist_sample):
    _, start, logs, result = run_method(method, fmnist_sample)
    final = result.pop("final")
    assert [log.server_round for log in logs] == [1, 2]
    for log in logs:
        assert log.rejected == [] and len(log.clients) == 6
    assert all(np.isfinite(a).all() for a in final.values())
    assert any(not np.array_equal(final[k], start[k]) for k in start)
    up = {c["tier-beta"]: c["bytes-up"] for c in logs[-1].clients}
    macs = {b: result[f"{b:g}"]["macs"] for b in TIERS}
    if method in ("maestro", "fjord", "heterofl"):
        # Nested sub-models: a weaker tier sends and computes less.
        assert up[0.25] < up[0.5] < up[1.0]
        assert macs[0.25] < macs[0.5] <= macs[1.0]
    else:
        # fedavg-all: the whole model everywhere; fedavg-fit: the weakest tier's model everywhere.
        assert up[0.25] == up[0.5] == up[1.0]
        assert macs[0.25] == macs[1.0]
    for m in result.values():
        assert 0.0 <= m["accuracy"] <= 1.0


def test_width_methods_are_matched_to_maestro_macs(fmnist_sample):
    """FjORD/HeteroFL tiers get the widest width whose MACs fit Maestro's at that tier."""
    cfg = RunConfig(method="maestro", model="lenet5", tier_fractions="0.25,0.5,1.0")
    maestro = ModelOps(cfg)
    fjord = ModelOps(cfg.replace(method="fjord"))
    fit = ModelOps(cfg.replace(method="fedavg-fit"))
    for beta in TIERS:
        target = maestro.forward_macs(maestro.initial_arrays(), beta)
        got = fjord.forward_macs(fjord.initial_arrays(), beta)
        assert got <= target
        assert fit.method_budget(beta) == fjord.method_budget(0.25)
    assert fjord.method_budget(0.25) < fjord.method_budget(0.5) < fjord.method_budget(1.0) == 1.0


def test_same_seed_gives_the_same_rounds(fmnist_sample):
    """Reproducible on CPU: partitions, tiers, sampling and training all follow the seed."""
    _, _, logs_a, a = run_method("maestro", fmnist_sample)
    _, _, logs_b, b = run_method("maestro", fmnist_sample)
    for key in a["final"]:
        np.testing.assert_array_equal(a["final"][key], b["final"][key])
    loss = [[c["train-loss"] for c in log.clients] for log in logs_a]
    assert loss == [[c["train-loss"] for c in log.clients] for log in logs_b]
