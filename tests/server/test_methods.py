"""Every registered method runs 2 rounds through the ServerApp's strategy and the real ClientApp
code (in-process fake grid), on a small local sample of Fashion-MNIST."""

import numpy as np
import pytest

from maestro_common.app.config import RunConfig
from maestro_common.app.methods import METHODS, Method
from maestro_common.app.task import build_run_model
from maestro_common.lowrank.samplers import NestedSampler
from maestro_common.lowrank.spectral import SpectralPlan
from maestro_common.lowrank.training import evaluate
from maestro_common.ml.prefix import array_shapes, take_prefix
from server.model_ops import ModelOps
from server.server_app import make_strategy
from tests.fakegrid import FakeGrid

pytestmark = pytest.mark.usefixtures("task_identity")

TIERS = (0.25, 0.5, 1.0)


def cfg_of(method: str, data_dir, **changes) -> RunConfig:
    return RunConfig(
        method=method,
        model="lenet5",
        data_dir=str(data_dir),
        tier_fractions=",".join(map(str, TIERS)),
        clients_per_round=6,
        clients_per_eval=3,
        partitioning="iid",
        max_test_examples=200,
        device="cpu",
        lr=0.05,
        **changes,
    )


def run_method(method: str, data_dir, **changes) -> tuple[ModelOps, dict, list, dict]:
    cfg = cfg_of(method, data_dir, **changes)
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
    return (
        ops,
        start,
        logs,
        ops.evaluate_tiers(final, TIERS) | {"final": final, "sent": strategy._sent},
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_two_rounds(method, fmnist_sample):
    ops, start, logs, result = run_method(method, fmnist_sample)
    final = result.pop("final")
    sent = result.pop("sent")  # what the last round sent each node
    # Index-set methods (rolled windows, sampled components) sent the weaker tiers other than
    # their leading blocks in round 2; prefix methods only leading blocks.
    weak = [s.sub for s in sent.values() if s.beta < 1.0]
    assert weak and all(sub is not None for sub in weak)
    assert any(not sub.is_prefix for sub in weak) == (ops.plan is not None)
    assert [log.server_round for log in logs] == [1, 2]
    for log in logs:
        assert log.rejected == [] and len(log.clients) == 6
    assert all(np.isfinite(a).all() for a in final.values())
    assert any(not np.array_equal(final[k], start[k]) for k in start)
    up = {c["tier-beta"]: c["bytes-up"] for c in logs[-1].clients}
    macs = {b: result[f"{b:g}"]["macs"] for b in TIERS}
    if method not in ("fedavg-all", "fedavg-fit"):
        # Sub-models per tier (prefixes, rolled windows, sampled components): a weaker tier
        # sends and computes less.
        assert up[0.25] < up[0.5] < up[1.0]
        assert macs[0.25] < macs[0.5] <= macs[1.0]
    else:
        # fedavg-all: the whole model everywhere; fedavg-fit: the weakest tier's model everywhere.
        assert up[0.25] == up[0.5] == up[1.0]
        assert macs[0.25] == macs[1.0]
    # Federated evaluation on local splits ran on the received sub-models and reported a loss.
    assert logs[-1].federated and all(m["num-examples"] > 0 for m in logs[-1].federated.values())
    # Two short rounds: the loss of the tiers' sub-models moved below the untrained model's.
    untrained = ModelOps(cfg_of(method, fmnist_sample)).evaluate_tiers(start, TIERS)
    assert min(m["loss"] for m in result.values()) < min(m["loss"] for m in untrained.values())


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


@pytest.mark.parametrize("method", METHODS)
def test_client_and_server_evaluate_the_same_sub_model(method, fmnist_sample):
    """A tier's received arrays, loaded as the client loads them and run at the method's
    loaded budget, compute what the server's global model computes at the tier's budget."""
    cfg = cfg_of(method, fmnist_sample)
    ops = ModelOps(cfg)
    arrays = ops.initial_arrays()
    test = ops.test_set()
    for beta in TIERS:
        server = ops.evaluate_tiers(arrays, [beta])[f"{beta:g}"]
        received = take_prefix(arrays, ops.shapes(array_shapes(arrays), beta))
        model = ops.method.load(build_run_model(cfg), received)
        loss, acc = evaluate(
            model, test.images, test.labels, ops.method.loaded_budget(server["budget"])
        )
        assert acc == server["accuracy"]
        assert loss == pytest.approx(server["loss"], rel=1e-5)


def test_registry_names_match_and_methods_are_distinct():
    assert all(name == m.name and isinstance(m, Method) for name, m in METHODS.items())
    # Lasso and shrinking act on factored layers: only the factored method has them.
    assert {n for n, m in METHODS.items() if m.uses_lasso or m.shrinks} == {"maestro"}
    # Each method prepares its own global model from the same dense one.
    keys = {
        name: set(build_run_model(RunConfig(model="lenet5", method=name)).state_dict())
        for name in METHODS
    }
    factored = {n for n, m in METHODS.items() if m.factored}
    assert factored == {"maestro", "spectral-unbiased", "spectral-collective", "prism"}
    assert all("fc1.u" in keys[n] and "fc1.weight" not in keys[n] for n in factored)
    assert all(keys[name] == keys["fedavg-all"] for name in METHODS if name not in factored)


def test_maestro_sends_components_drawn_by_the_collective_rule(fmnist_sample):
    """transmission = collective: Maestro's own nested step, on components the server drew."""
    ops, start, logs, result = run_method("maestro", fmnist_sample, transmission="collective")
    final, sent = result.pop("final"), result.pop("sent")
    assert isinstance(ops.plan, SpectralPlan) and ops.plan.rule == "collective"
    weak = [s for s in sent.values() if s.beta < 1.0]
    for s in weak:
        prefix = ops.shapes(array_shapes(final), s.beta)
        assert s.sub.shapes == prefix  # as many components as the tier's prefix holds
        idx = s.sub.indices["fc1.u"][1]
        # Sent in the global model's order (the node's nested sub-models lead with the largest
        # components), with the Collective multipliers on both factors.
        assert np.all(np.diff(idx) > 0) and idx.size == prefix["fc1.u"][1]
        assert np.all(s.sub.scales["fc1.u"][1] >= 1.0) and "fc1.v" in s.sub.scales
    assert any(not s.sub.is_prefix for s in weak)
    assert all(not s.sub.indices for s in sent.values() if s.beta == 1.0)
    # The node trains with Maestro's objective: its step is the nested sandwich.
    model = ops.method.load(build_run_model(ops.cfg), take_prefix(final, weak[0].sub.shapes))
    sampler = ops.method.sampler(model, ops.cfg, weak[0].budget, TIERS, 0, weak[0].beta)
    assert isinstance(sampler, NestedSampler)
    for log in logs:
        assert log.rejected == [] and len(log.clients) == 6
    assert all(np.isfinite(a).all() for a in final.values())
    # The server keeps the factors in balanced SVD form: ‖u_i‖ = ‖v_i‖, σ_i decreasing.
    for pair in ops.plan.pairs:
        u = np.moveaxis(final[pair.u], pair.u_axis, -1).reshape(
            -1, final[pair.u].shape[pair.u_axis]
        )
        v = np.moveaxis(final[pair.v], pair.v_axis, -1).reshape(
            -1, final[pair.v].shape[pair.v_axis]
        )
        nu, nv = np.linalg.norm(u, axis=0), np.linalg.norm(v, axis=0)
        np.testing.assert_allclose(nu, nv, rtol=1e-4)
        assert np.all(np.diff(nu * nv) <= 1e-6 * nu[0] * nv[0])
    untrained = ModelOps(cfg_of("maestro", fmnist_sample)).evaluate_tiers(start, TIERS)
    assert min(m["loss"] for m in result.values()) < min(m["loss"] for m in untrained.values())
