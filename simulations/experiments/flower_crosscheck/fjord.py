"""FjORD: this project's model rebuilt from Flower's ordered-dropout layers, and the comparisons."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from maestro_common.ml.models import build_model
from maestro_common.width.sliceable import WidthLinear, width_shapes
from server.aggregation import aggregate_nested
from simulations.experiments.flower_crosscheck.loading import FlowerCode
from simulations.experiments.flower_crosscheck.ours import (
    layer_dims,
    max_abs_diff,
    our_logits,
    our_width_model,
    param_count,
    random_updates,
    state_arrays,
)

# Flower's FjORD ResNet-18 widths and p values (its common.yaml), for the rounding sweep.
FJORD_RESNET_WIDTHS = (64, 128, 256, 512)
FJORD_P_S = (0.2, 0.4, 0.6, 0.8, 1.0)


# ------------------------------------------------------------------------- FjORD: their OD twin


class _Cell:
    """Holds the sampler of the current forward pass (a plain object, not a module)."""

    sampler: Callable[[], float | None] | None = None


class _Fed(nn.Module):
    """Calls a Flower OD layer as their ResNet does: ``layer(x, p=sampler())`` if it drops."""

    def __init__(self, layer: nn.Module, cell: _Cell) -> None:
        super().__init__()
        self.layer = layer
        self._cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.layer, "is_od", False) and self._cell.sampler is not None:
            return self.layer(x, p=self._cell.sampler())
        return self.layer(x)


class ODTwin(nn.Module):
    """``dense``'s forward with every Conv2d / Linear replaced by an ordered-dropout layer.

    ``conv_cls`` / ``linear_cls`` are the OD layer classes (Flower's ``ODConv2d`` /
    ``ODLinear``), built with ``is_od`` and the dense layer's hyper-parameters and weights. The
    last Linear (the classifier) gets ``is_od=False``, as in Flower's ResNet. ``forward(x,
    sampler)`` feeds every dropping layer ``p = sampler()``; without a sampler, full width.
    """

    def __init__(self, dense: nn.Module, conv_cls: type, linear_cls: type) -> None:
        super().__init__()
        self._cell = _Cell()
        self.net = copy.deepcopy(dense)
        layers = [
            (n, m) for n, m in self.net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
        ]
        linears = [n for n, m in layers if isinstance(m, nn.Linear)]
        classifier = linears[-1] if linears else layers[-1][0]
        self.od: dict[str, nn.Module] = {}
        for name, m in layers:
            is_od = name != classifier
            if isinstance(m, nn.Conv2d):
                od = conv_cls(
                    m.in_channels,
                    m.out_channels,
                    kernel_size=m.kernel_size,
                    stride=m.stride,
                    padding=m.padding,
                    dilation=m.dilation,
                    groups=m.groups,
                    bias=m.bias is not None,
                    is_od=is_od,
                )
            else:
                od = linear_cls(m.in_features, m.out_features, bias=m.bias is not None, is_od=is_od)
            with torch.no_grad():
                od.weight.copy_(m.weight)
                if m.bias is not None:
                    od.bias.copy_(m.bias)
            parent_name, _, child = name.rpartition(".")
            parent = self.net.get_submodule(parent_name) if parent_name else self.net
            setattr(parent, child, _Fed(od, self._cell))
            self.od[name] = od

    def forward(self, x: torch.Tensor, sampler: Callable[[], Any] | None = None) -> torch.Tensor:
        self._cell.sampler = sampler
        try:
            return self.net(x)
        finally:
            self._cell.sampler = None

    def dims(self) -> dict[str, tuple[int, int]]:
        """(out, in) each OD layer used in the last forward pass (their own record)."""
        return {n: (int(m.last_output_dim), int(m.last_input_dim)) for n, m in self.od.items()}

    def used_params(self) -> int:
        """Parameters the OD layers used in the last forward pass."""
        total = 0
        for m in self.od.values():
            out, inp = m.last_output_dim, m.last_input_dim
            total += out * inp * int(np.prod(m.weight.shape[2:], dtype=np.int64))
            total += out if m.bias is not None else 0
        return int(total)

    def agg_config(self, x: torch.Tensor, p_s: Sequence[float], sampler_cls: type) -> dict:
        """FjORD's per-p aggregation config, built the way its client builds it: a forward pass
        at each p, then every state-dict entry's layer class and (in, out) dims."""
        owners = []
        for key in self.state_dict():
            owners.append(self.get_submodule(key.rpartition(".")[0]))
        config: dict[Any, Any] = {p: [{} for _ in owners] for p in p_s}
        with torch.no_grad():
            for p in p_s:
                self(x, sampler=sampler_cls(p_s=[p], max_p=p, model=self))
                for i, layer in enumerate(owners):
                    config[p][i] = {
                        "in_dim": layer.last_input_dim,
                        "out_dim": layer.last_output_dim,
                    }
        config["layer"] = [type(m).__name__ for m in owners]
        config["layer_p"] = [getattr(m, "p", None) for m in owners]
        return config


# ------------------------------------------------------------------------------- the comparisons


def _fjord_pair(
    code: FlowerCode, model: str, x: torch.Tensor, seed: int
) -> tuple[tuple[int, ...], nn.Module, ODTwin]:
    """The input shape, this project's ``fjord`` width model and Flower's OD twin of the same
    seeded weights."""
    shape = tuple(x.shape[1:])
    torch.manual_seed(seed)
    dense = build_model(model, num_classes=10, in_channels=shape[0], image_size=shape[-1])
    ours = our_width_model(dense, shape)
    return shape, ours, ODTwin(dense, code.od_layers.ODConv2d, code.od_layers.ODLinear).eval()


def compare_fjord_submodels(
    code: FlowerCode, model: str, widths: Sequence[float], x: torch.Tensor, seed: int
) -> dict[str, Any]:
    """Their OD twin vs our ``fjord`` width model on the same weights, at every width."""
    shape, ours, twin = _fjord_pair(code, model, x, seed)
    rows = []
    for p in widths:
        with torch.no_grad():
            theirs = twin(x, sampler=code.od_samplers.ODSampler(p_s=[p], max_p=p, model=twin))
        mine = our_logits(ours, x, p)
        our_shapes = width_shapes(ours, p, shape)
        rows.append(
            {
                "p": p,
                "dims_theirs": twin.dims(),
                "dims_ours": layer_dims(our_shapes),
                "dims_equal": twin.dims() == layer_dims(our_shapes),
                "params_theirs": twin.used_params(),
                "params_ours": param_count(our_shapes),
                "logits_max_abs_diff": float((theirs - mine).abs().max()),
            }
        )
    return {"model": model, "rows": rows}


def rounding_sweep(
    code: FlowerCode, sizes: Iterable[int], ps: Iterable[float]
) -> list[dict[str, float | int]]:
    """Where their OD layer and ours keep a different number of outputs: (size, p, theirs, ours)."""
    diffs = []
    for size in sorted(set(sizes)):
        od = code.od_layers.ODLinear(1, size, is_od=True)
        mine = WidthLinear.from_module(nn.Linear(1, size))
        for p in ps:
            with torch.no_grad():
                od(torch.zeros(1, 1), p=p)
            theirs, ours = int(od.last_output_dim), mine.out_width(p)
            if theirs != ours:
                diffs.append({"size": size, "p": p, "theirs": theirs, "ours": ours})
    return diffs


def compare_fjord_aggregation(
    code: FlowerCode, model: str, widths: Sequence[float], x: torch.Tensor, seed: int
) -> dict[str, Any]:
    """Their FjORD ``aggregate`` vs our ``aggregate_nested`` (mean) on the same updates."""
    shape, ours, twin = _fjord_pair(code, model, x, seed)
    p_s = sorted(set(widths))
    config = twin.agg_config(x, p_s, code.od_samplers.ODSampler)
    glob = state_arrays(ours)
    rng = np.random.default_rng(seed)
    p_max = [p_s[i % len(p_s)] for i in range(len(p_s) + 2)]  # every tier, two twice
    examples = [int(n) for n in rng.integers(20, 200, size=len(p_max))]
    blocks = random_updates(glob, [width_shapes(ours, p, shape) for p in p_max], seed + 1)
    # Their clients return full-size arrays; coordinates outside the p_max block are never read.
    full = []
    for reply in blocks:
        arrays = {k: v.copy() for k, v in glob.items()}
        for key, block in reply.items():
            arrays[key][tuple(slice(0, n) for n in block.shape)] = block
        full.append(arrays)
    keys = list(glob)
    results = [
        ([a[k] for k in keys], n, p, p_s, config)
        for a, n, p in zip(full, examples, p_max, strict=True)
    ]
    theirs = code.fjord_strategy.aggregate(results, [glob[k] for k in keys])
    mine = aggregate_nested(glob, list(zip(blocks, examples, strict=True)))
    diff = max_abs_diff(dict(zip(keys, theirs, strict=True)), mine)
    return {
        "model": model,
        "p_max": p_max,
        "examples": examples,
        "max_abs_diff": max(diff.values()),
    }
