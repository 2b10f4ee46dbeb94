"""HeteroFL: Flower's conv model and aggregation against this project's width slicing."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import types
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from maestro_common.width.sliceable import use_width, width_shapes
from server.aggregation import aggregate_nested
from simulations.experiments.flower_crosscheck.loading import FlowerCode
from simulations.experiments.flower_crosscheck.ours import (
    max_abs_diff,
    our_width_model,
    param_count,
    random_updates,
    state_arrays,
)

HETEROFL_RATES = (1.0, 0.5, 0.25, 0.125, 0.0625)  # HeteroFL's levels a..e
# HeteroFL's MNIST "conv" model as its baseline configures it, without normalisation (this
# project's width models refuse BatchNorm).
HETEROFL_CONV = {
    "model": "conv",
    "data_shape": [1, 28, 28],
    "hidden_layers": [64, 128, 256, 512],
    "classes_size": 10,
    "norm": "none",
    "scale": True,
    "mask": False,
    "global_model_rate": 1.0,
}


def _heterofl_model(code: FlowerCode, rate: float) -> nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):  # their helpers print
        return code.heterofl_models.create_model(dict(HETEROFL_CONV), model_rate=rate)


def _heterofl_index(code: FlowerCode, glob: nn.Module, rates: Sequence[float]) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        return code.heterofl_models.param_model_rate_mapping(
            "conv", glob.state_dict(), list(rates), HETEROFL_CONV["global_model_rate"]
        )


class _Dict2Tensor(nn.Module):
    """Calls HeteroFL's dict-in, dict-out model on a tensor, returning its scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = torch.zeros(x.shape[0], dtype=torch.long)
        return self.model({"img": x, "label": label})["score"]


def compare_heterofl_submodels(
    code: FlowerCode, rates: Sequence[float], x: torch.Tensor, seed: int
) -> dict[str, Any]:
    """Their HeteroFL ``conv`` sub-model at rate r vs ours at width r, on the same weights."""
    shape = tuple(x.shape[1:])
    torch.manual_seed(seed)
    glob = _heterofl_model(code, 1.0)
    index = _heterofl_index(code, glob, rates)
    ours = _Dict2Tensor(our_width_model(glob, shape, "heterofl"))
    rows = []
    for r in rates:
        local = _heterofl_model(code, r)
        with warnings_quiet():
            sub = code.heterofl_models.param_idx_to_local_params(glob.state_dict(), index[r])
        local.load_state_dict(sub)
        local = _Dict2Tensor(local)
        their_shapes = {k: tuple(v.shape) for k, v in local.state_dict().items()}
        our_shapes = width_shapes(ours, r, shape)
        row: dict[str, Any] = {
            "rate": r,
            "shapes_equal": their_shapes == our_shapes,
            "params_theirs": param_count(their_shapes),
            "params_ours": param_count(our_shapes),
        }
        for mode in ("eval", "train"):
            local.train(mode == "train")
            ours.train(mode == "train")
            with torch.no_grad(), use_width(ours, r):
                row[f"logits_max_abs_diff_{mode}"] = float((local(x) - ours(x)).abs().max())
        rows.append(row)
    return {"rows": rows}


def compare_heterofl_aggregation(
    code: FlowerCode, rates: Sequence[float], seed: int
) -> dict[str, Any]:
    """Their ``HeteroFL._aggregate_conv`` vs our ``aggregate_nested`` on the same updates."""
    torch.manual_seed(seed)
    glob = _heterofl_model(code, 1.0)
    client_rates = [rates[i % len(rates)] for i in range(len(rates) + 2)]
    index = _heterofl_index(code, glob, client_rates)
    glob_arrays = state_arrays(glob)
    shapes = [
        {k: tuple(v.shape) for k, v in _heterofl_model(code, r).state_dict().items()}
        for r in client_rates
    ]
    updates = random_updates(glob_arrays, shapes, seed + 1)

    # Their method reads self.net and self.active_cl_labels only; every client holds all labels.
    strategy = code.heterofl_strategy.HeteroFL
    fake = types.SimpleNamespace(
        net=copy.deepcopy(glob),
        active_cl_labels=[torch.arange(HETEROFL_CONV["classes_size"])] * len(client_rates),
    )
    fake._agg_layer_conv = functools.partial(strategy._agg_layer_conv, fake)
    local = [OrderedDict((k, u[k]) for k in glob_arrays) for u in updates]
    results = [(types.SimpleNamespace(cid=str(i)), None) for i in range(len(client_rates))]
    with warnings_quiet():
        strategy._aggregate_conv(
            fake, [copy.deepcopy(index[r]) for r in client_rates], local, results
        )
    theirs = state_arrays(fake.net)

    rng = np.random.default_rng(seed)
    examples = [int(n) for n in rng.integers(20, 200, size=len(client_rates))]
    equal = aggregate_nested(glob_arrays, [(u, 1.0) for u in updates])
    weighted = aggregate_nested(glob_arrays, list(zip(updates, examples, strict=True)))
    return {
        "client_rates": client_rates,
        "max_abs_diff_equal_weights": max(max_abs_diff(theirs, equal).values()),
        "max_abs_diff_num_examples_weights": max(max_abs_diff(theirs, weighted).values()),
    }


@contextlib.contextmanager
def warnings_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.meshgrid's indexing warning, in their code
        yield
