"""A client under compute-match runs the steps the server's clock prices: the same functions."""

import pytest
import torch

from client import client_app
from maestro_common.app import protocol as P
from maestro_common.app.config import RunConfig
from maestro_common.app.cost import round_steps, trained_examples
from maestro_common.ml.data.arrays import ArrayDataset
from maestro_common.ml.prefix import take_prefix
from server.clock import training_macs
from server.model_ops import ModelOps
from server.policy import VirtualClockPolicy
from server.profiles import TierProfile

TIERS = (0.25, 0.5, 1.0)


def local_steps_of(cfg: RunConfig, beta: float, n: int = 40) -> tuple[int, ModelOps, dict]:
    ops = ModelOps(cfg)
    arrays = ops.initial_arrays()
    received = take_prefix(arrays, ops.shapes({k: v.shape for k, v in arrays.items()}, beta))
    grid = tuple(ops.method_budget(b) for b in cfg.tiers)
    task = P.Instruction(received, 1, beta, ops.method_budget(beta), grid)
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(
        torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,)), 10, "random"
    )
    _, result = client_app.local_round(cfg, task, data, 0)
    return result.steps, ops, arrays


@pytest.mark.parametrize("method", ["maestro", "fjord"])
def test_client_steps_and_the_clocks_price_follow_compute_match(method):
    # Maestro with the paper's sandwich: a step dearer than FjORD's at the same tier.
    nested = {"sub_models": "sandwich"} if method == "maestro" else {}
    cfg = RunConfig(
        **nested,
        method=method,
        model="lenet5",
        tier_fractions=",".join(map(str, TIERS)),
        batch_size=8,
        local_steps=6,
        compute_match="fjord",
        device="cpu",
    )
    steps, ops, arrays = local_steps_of(cfg, 0.5)
    own, match = ops.step_macs(arrays, 0.5), ops.match_step_macs(0.5)
    assert steps == round_steps(cfg, 40, own, match)
    if method == "fjord":
        assert steps == 6  # matched to itself
    else:
        assert steps < 6  # the nested step costs more than FjORD's at the same tier
    unmatched, _, _ = local_steps_of(cfg.replace(compute_match=""), 0.5)
    assert unmatched == 6
    # The clock prices the round the client ran: the same steps, every pass of each.
    profile = TierProfile(beta=0.5, speed=1.0, down_bps=1.0, up_bps=1.0, availability=1.0)
    policy = VirtualClockPolicy(
        [profile],
        lambda b: (ops.step_macs(arrays, b), 0, 0),
        cfg.local_epochs,
        0,
        steps=lambda b, n, own: round_steps(cfg, n, own, ops.match_step_macs(b)),
        batch_size=cfg.batch_size,
    )
    assert policy.train_macs(0.5, own, 40) == training_macs(own, trained_examples(40, 8, steps), 1)
