"""Rank quantization: a tier's ranks are multiples of q, never above its budget nor the rank."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.task import build_run_model
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import (
    budget_rank,
    budget_ranks,
    low_rank_layers,
    quantize_rank,
    set_rank_quantum,
)
from maestro_common.ml.prefix import budget_dim
from tests.received import model_arrays_at_budget

BETAS = (0.05, 0.2, 0.25, 0.4, 0.6, 0.8, 1.0)


@pytest.mark.parametrize("quantum", [1, 2, 4, 8, 16])
def test_quantized_rank_within_budget_and_layer_rank(quantum):
    for rank in range(1, 70):
        for beta in BETAS:
            cap = budget_dim(rank, beta)
            k = budget_rank(rank, beta, quantum)
            assert 1 <= k <= cap <= rank
            if cap >= quantum:
                assert k % quantum == 0
                assert cap - k < quantum  # rounded down by less than one quantum
            else:
                assert k == cap


def test_quantize_rank_hand_cases():
    assert quantize_rank(65, 16) == 64
    assert quantize_rank(64, 16) == 64
    assert quantize_rank(15, 16) == 15
    assert quantize_rank(1, 8) == 1
    assert quantize_rank(7, 1) == 7


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_quantum_rejected(bad):
    with pytest.raises(ValueError, match="quantum must be an int"):
        quantize_rank(5, bad)
    with pytest.raises(ValueError, match="quantum must be an int"):
        set_rank_quantum(nn.Linear(2, 2), bad)


def test_config_rejects_bad_rank_quantum():
    with pytest.raises(ConfigError, match="rank-quantum must be ≥ 1"):
        RunConfig(rank_quantum=0)


def model(quantum: int, kind: str = "svd") -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 20, 3, padding=1),
        nn.Conv2d(20, 36, 3, padding=1),
        nn.Flatten(),
        nn.Linear(36 * 16, 50),
        nn.Linear(50, 10),
    )
    decompose(m, conv_factorization=kind)
    set_rank_quantum(m, quantum)
    return m


@pytest.mark.parametrize("kind", ["svd", "tucker"])
@pytest.mark.parametrize("beta", [0.2, 0.4, 0.6, 1.0])
def test_model_caps_and_wire_agree(kind, beta):
    m = model(8, kind)
    caps = budget_ranks(m, beta)
    layers = low_rank_layers(m)
    for name, k in caps.items():
        assert k <= budget_dim(layers[name].rank, beta) <= layers[name].rank
        assert k % 8 == 0 or k < 8
    arrays = model_arrays_at_budget(m, beta)
    for name, layer in layers.items():
        assert arrays[f"{name}.u"].shape[layer.rank_axes["u"]] == caps[name]
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad(), use_budget(m, beta):
        used = {n: layer._resolve(None) for n, layer in layers.items()}
        m(x)
    assert used == caps


def test_run_model_carries_the_quantum():
    m = build_run_model(RunConfig(model="lenet5", rank_quantum=4, conv_factorization="tucker"))
    assert {layer.rank_quantum for layer in low_rank_layers(m).values()} == {4}


@pytest.mark.parametrize("beta", [0.2, 0.6])
def test_server_tier_shapes_match_the_codec_cut(beta):
    from server.model_ops import ModelOps

    cfg = RunConfig(model="lenet5", rank_quantum=4, conv_factorization="tucker")
    ops = ModelOps(cfg)
    arrays = ops.initial_arrays()
    shapes = ops.shapes({k: v.shape for k, v in arrays.items()}, beta)
    cut = model_arrays_at_budget(build_run_model(cfg), beta)
    assert shapes == {k: v.shape for k, v in cut.items()}
