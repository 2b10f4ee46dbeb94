"""Inference forms of a tier: its standalone sub-model, dense merging by measurement, latency.

A tier's sub-model at budget β keeps the first ⌈β·r⌉ components of every factored layer
(:func:`tier_model`). Whether a factored layer runs faster as its two thin products or as the
merged dense product depends on the rank, the shapes and the CPU, so :func:`merge_where_faster`
times both forms of every layer on its real input and merges only where dense wins;
:func:`merge_where_smaller` merges only where the dense form has fewer parameters, so the result
is never bigger than the factored tier.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from maestro_common.lowrank.decompose import to_dense_module
from maestro_common.lowrank.layers import budget_rank, low_rank_layers
from maestro_common.lowrank.merging import apply_plan, fastest_plan
from maestro_common.width.sliceable import width_layers

__all__ = [
    "MergeDecision",
    "Normalize",
    "SizeDecision",
    "latency_ms",
    "merge_where_faster",
    "merge_where_smaller",
    "tier_model",
]


def tier_model(model: nn.Module, beta: float) -> nn.Module:
    """A standalone copy of ``model``'s sub-model of budget β, in eval mode.

    Every factored layer is truncated to its ⌈β·r⌉ leading components; dense layers are kept.

    Raises
    ------
    ValueError
        For β outside (0, 1], or a width model (its sub-models are slices of every layer, which
        this function does not cut out).
    """
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta <= 1:
        raise ValueError(f"budget must be in (0, 1], got {beta!r}")
    if width_layers(model):
        raise ValueError("tier_model cuts factored models only; this model has width layers")
    sub = copy.deepcopy(model)
    for layer in low_rank_layers(sub).values():
        layer.truncate(budget_rank(layer.rank, beta))
    return sub.eval()


class Normalize(nn.Module):
    """Standardise pixels in [0, 1] per channel before the model: the artifact takes raw pixels."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)  # (B, C, H, W) -> (B, classes)


@torch.no_grad()
def latency_ms(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeats: int) -> float:
    """Median wall time of ``fn(x)`` in milliseconds over ``repeats`` calls, after one warm-up."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@dataclass(frozen=True)
class MergeDecision:
    """The timing behind one layer's merge decision (milliseconds per call, by batch size)."""

    layer: str
    rank: int
    factored_ms: dict[int, float]
    dense_ms: dict[int, float]
    merged: bool

    def to_json(self) -> dict:
        out = asdict(self)
        out["factored_ms"] = {str(b): t for b, t in self.factored_ms.items()}
        out["dense_ms"] = {str(b): t for b, t in self.dense_ms.items()}
        return out


def _layer_inputs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """One sample's input to every factored layer (recorded by forward hooks)."""
    seen: dict[str, torch.Tensor] = {}

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen.setdefault(name, args[0])  # returning a value would replace the output

        return hook

    handles = [
        layer.register_forward_hook(recorder(name))
        for name, layer in low_rank_layers(model).items()
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    return seen


Timer = Callable[[nn.Module, torch.Tensor], float]


@torch.no_grad()
def merge_where_faster(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 20,
    timer: Timer | None = None,
    whole_model: bool = True,
    plan_timer: Callable[[Sequence[Callable[[], object]]], list[float]] | None = None,
) -> list[MergeDecision]:
    """Merge each factored layer of ``model`` into a dense one where that is faster, in place.

    Both forms of each layer are timed on its own input shape at every batch size, twice and
    alternating so that a load change on the machine hits both (the faster of the two timings
    counts); a layer is merged when the geometric mean of dense/factored time over the batch
    sizes is below 1. With ``whole_model`` these decisions are then checked on the whole model
    against merging every layer and merging none (:func:`~maestro_common.lowrank.merging.
    fastest_plan`, every batch size), and the fastest of the three is kept: with every layer
    merged the model has the dense model's layers, so the result is never slower than dense
    beyond timing noise.

    Parameters
    ----------
    model:
        A factored model at the ranks to keep (e.g. from :func:`tier_model`).
    input_shape:
        Shape of one sample without the batch axis.
    batch_sizes, repeats:
        Batch sizes timed, and calls per timing (the median is used).
    timer:
        ``timer(module, x)``: milliseconds per call (default: :func:`latency_ms`); tests pass
        their own.
    plan_timer:
        The whole-model check's timer (see :func:`~maestro_common.lowrank.merging.fastest_plan`).
    """
    timer = timer or (lambda module, x: latency_ms(module, x, repeats))
    inputs = _layer_inputs(model, input_shape)
    timings = {}
    for name, layer in low_rank_layers(model).items():
        dense = to_dense_module(layer).eval()
        fact_ms: dict[int, float] = {}
        dense_ms: dict[int, float] = {}
        for b in batch_sizes:
            x = inputs[name].expand(b, *inputs[name].shape[1:]).contiguous()
            f1, d1 = timer(layer, x), timer(dense, x)
            f2, d2 = timer(layer, x), timer(dense, x)
            fact_ms[b], dense_ms[b] = min(f1, f2), min(d1, d2)
        timings[name] = (layer.rank, fact_ms, dense_ms)
    plan = {
        name: statistics.geometric_mean(dense_ms[b] / fact_ms[b] for b in batch_sizes) < 1.0
        for name, (_, fact_ms, dense_ms) in timings.items()
    }
    if whole_model and plan:
        examples = [torch.randn(b, *input_shape) for b in batch_sizes]
        plan = fastest_plan(model, plan, examples, repeats, plan_timer)
    apply_plan(model, model, {name: True for name, merged in plan.items() if merged})
    decisions = [
        MergeDecision(name, rank, fact_ms, dense_ms, plan[name])
        for name, (rank, fact_ms, dense_ms) in timings.items()
    ]
    return decisions


@dataclass(frozen=True)
class SizeDecision:
    """The parameter counts behind one layer's merge decision by size (bias included in both)."""

    layer: str
    rank: int
    factored_params: int
    dense_params: int
    merged: bool

    def to_json(self) -> dict:
        return asdict(self)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def merge_where_smaller(model: nn.Module) -> list[SizeDecision]:
    """Merge each factored layer of ``model`` into a dense one where that has fewer parameters.

    In place. A layer is merged only when its dense form is strictly smaller than its factored
    form at the rank it keeps, so no layer, and so not the model, ends up bigger than the
    factored model it started from (at a small budget r·(m + n) < m·n and nothing is merged).

    Parameters
    ----------
    model:
        A factored model at the ranks to keep (e.g. from :func:`tier_model`).
    """
    decisions = []
    plan = {}
    for name, layer in low_rank_layers(model).items():
        factored, dense = _numel(layer), _numel(to_dense_module(layer))
        plan[name] = dense < factored
        decisions.append(SizeDecision(name, layer.rank, factored, dense, plan[name]))
    apply_plan(model, model, {name: True for name, merged in plan.items() if merged})
    return decisions
