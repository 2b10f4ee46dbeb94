"""Server-side evaluation: every tier scored, each distinct sub-model evaluated once."""

import pytest
import torch

from maestro_common.app.config import ConfigError, RunConfig
from server import model_ops
from server.model_ops import EVAL_THREADS_ENV, ModelOps, eval_threads


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
    real = model_ops.evaluate_metrics

    def counting(model, images, labels, budget, **kw):
        calls.append(budget)
        return real(model, images, labels, budget, **kw)

    monkeypatch.setattr(model_ops, "evaluate_metrics", counting)
    arrays = ops.initial_arrays()
    tiers = ops.evaluate_tiers(arrays, cfg.tiers)
    assert len(calls) == distinct and set(tiers) == {"0.25", "0.5", "1"}
    for beta in cfg.tiers:
        alone = ModelOps(cfg).evaluate_tiers(arrays, [beta])[f"{beta:g}"]
        assert tiers[f"{beta:g}"]["accuracy"] == alone["accuracy"]
        assert tiers[f"{beta:g}"]["loss"] == alone["loss"]


def test_the_server_evaluates_on_the_threads_it_is_given(fmnist_sample, monkeypatch):
    monkeypatch.delenv(EVAL_THREADS_ENV, raising=False)
    assert eval_threads() >= 1  # every usable core by default
    monkeypatch.setenv(EVAL_THREADS_ENV, "2")
    cfg = RunConfig(model="lenet5", data_dir=str(fmnist_sample), max_test_examples=50)
    ops = ModelOps(cfg)
    seen = []
    real = model_ops.evaluate_metrics

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return real(*args, **kw)

    monkeypatch.setattr(model_ops, "evaluate_metrics", spy)
    before = torch.get_num_threads()
    two = ops.evaluate_tiers(ops.initial_arrays(), [1.0])
    assert seen == [2] and torch.get_num_threads() == before  # put back after
    monkeypatch.setenv(EVAL_THREADS_ENV, "1")
    one = ModelOps(cfg).evaluate_tiers(ops.initial_arrays(), [1.0])
    assert one["1"]["accuracy"] == two["1"]["accuracy"]
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(EVAL_THREADS_ENV, bad)
        with pytest.raises(ConfigError, match="MAESTRO_EVAL_THREADS must be a positive integer"):
            eval_threads()
