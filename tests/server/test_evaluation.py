"""Server-side evaluation: every tier scored, each distinct sub-model evaluated once."""

import pytest

from maestro_common.app.config import RunConfig
from server import evaluation
from server.evaluation import ModelOps

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("method", "distinct"), [("fedavg-all", 1), ("maestro", 3)])
def test_each_distinct_budget_is_evaluated_once(fmnist_sample, monkeypatch, method, distinct):
    cfg = RunConfig(
        method=method,
        model="lenet5",
        data_dir=str(fmnist_sample),
        tier_fractions="0.25,0.5,1.0",
        max_test_examples=50,
        device="cpu",
    )
    ops = ModelOps(cfg)
    calls = []
    real = evaluation.evaluate

    def counting(model, images, labels, budget, **kw):
        calls.append(budget)
        return real(model, images, labels, budget, **kw)

    monkeypatch.setattr(evaluation, "evaluate", counting)
    arrays = ops.initial_arrays()
    tiers = ops.evaluate_tiers(arrays, cfg.tiers)
    assert len(calls) == distinct and set(tiers) == {"0.25", "0.5", "1"}
    for beta in cfg.tiers:
        alone = ModelOps(cfg).evaluate_tiers(arrays, [beta])[f"{beta:g}"]
        assert tiers[f"{beta:g}"]["accuracy"] == alone["accuracy"]
        assert tiers[f"{beta:g}"]["loss"] == alone["loss"]
