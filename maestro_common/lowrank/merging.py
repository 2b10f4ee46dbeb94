"""Merging by measurement: run a factored layer as its dense form where that form is faster.

A factored layer has fewer MACs than its dense form below the break-even rank, but it runs two or
three kernels instead of one, and small or odd channel counts run below peak speed, so the MAC
formula alone misjudges which form is faster (on a 2-core CPU a factored 3x3 conv costs its MAC
ratio plus 0.07–0.10 of dense). :func:`merge_faster` times both forms of each factored layer once
at its active rank, on the layer's device, with the input shape it sees in the model, and replaces
the layer by its dense form (:func:`maestro_common.lowrank.decompose.to_dense_module`) where that
measured faster. Decisions are cached per (layer geometry, rank, input shape, device, threads), so a
model with repeated blocks, or a second call, times each case once.

Layer-by-layer timings miss what happens between layers and are noisy for layers that take
microseconds, so the layer decisions are then checked on the whole model (:func:`fastest_plan`):
the model as decided, with every layer merged, and with none merged are timed with their calls
interleaved, and the fastest is kept; a form that keeps factors must beat the fully merged one by
``MERGE_MARGIN``. With every layer merged the model has the dense model's layers, so the kept
form is never slower than the dense model beyond timing noise.

For inference and export only: a merged layer no longer has nested ranks.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from maestro_common.lowrank.decompose import _set_submodule, to_dense_module
from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers

# A form that keeps factors must beat the fully merged (dense-layer) model by this fraction.
MERGE_MARGIN = 0.03
# (decision key) -> (factored seconds, dense seconds)
_CACHE: dict[tuple[Any, ...], tuple[float, float]] = {}


def clear_cache() -> None:
    """Forget every timing decision (e.g. after changing the thread count)."""
    _CACHE.clear()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fns: Sequence[Callable[[], Any]],
    device: torch.device,
    repeats: int = 5,
    warmup: int = 2,
    clock: Callable[[], float] | None = None,
) -> list[float]:
    """Median seconds of each of ``fns``, their calls interleaved round-robin.

    On CPU the calling thread's CPU time (what a call costs, little moved by other processes on
    the machine); on CUDA wall time with the device synchronized; ``clock`` overrides either.
    Interleaving spreads a change of load over all of them alike, so their ratios are fairer
    than back-to-back timings'.
    """
    now = clock or (time.thread_time if device.type == "cpu" else time.perf_counter)
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            start = now()
            fn()
            _sync(device)
            spent.append(now() - start)
    return [statistics.median(t) for t in times]


def _key(layer: LowRankLayer, rank: int, shape: Sequence[int], device: torch.device) -> tuple:
    shapes = tuple((name, tuple(getattr(layer, name).shape)) for name in layer.factor_axes())
    geometry = (type(layer).__name__, layer.extra_repr(), shapes)
    return (geometry, rank, tuple(shape), str(device), torch.get_num_threads())


@torch.no_grad()
def layer_timings(
    layer: LowRankLayer, input_shape: Sequence[int], repeats: int = 5
) -> tuple[float, float]:
    """Seconds of one forward call of ``layer`` at its active rank, factored and merged.

    Parameters
    ----------
    layer:
        A factored layer; its active rank (set by ``use_ranks``/``use_budget``) is used.
    input_shape:
        The full input shape, batch axis included, e.g. ``(64, 32, 14, 14)``.
    repeats:
        Timed runs per form (median); measured once per cache key.
    """
    rank = layer._resolve(None)
    device = layer.u.device
    key = _key(layer, rank, input_shape, device)
    if key not in _CACHE:
        x = torch.randn(*input_shape, device=device, dtype=layer.u.dtype)
        dense = to_dense_module(layer, rank)
        factored_s, dense_s = time_calls([lambda: layer(x), lambda: dense(x)], device, repeats)
        _CACHE[key] = (factored_s, dense_s)
    return _CACHE[key]


def _input_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The input shape each factored layer sees in one forward pass of ``example``."""
    shapes: dict[str, tuple[int, ...]] = {}
    names = {m: n for n, m in low_rank_layers(model).items()}

    def hook(module: nn.Module, args: tuple) -> None:
        shapes[names[module]] = tuple(args[0].shape)

    handles = [m.register_forward_pre_hook(hook) for m in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return shapes


def with_plan(unmerged: nn.Module, plan: Mapping[str, bool]) -> nn.Module:
    """A copy of ``unmerged`` whose factored layers named True in ``plan`` are merged to dense."""
    model = copy.deepcopy(unmerged)
    apply_plan(model, unmerged, plan)
    return model


def apply_plan(model: nn.Module, unmerged: nn.Module, plan: Mapping[str, bool]) -> None:
    """Make ``model``'s layers of ``plan`` those of ``unmerged``, merged where ``plan`` says so."""
    for name, layer in low_rank_layers(unmerged).items():
        if name not in plan:
            continue
        form = to_dense_module(layer, layer._resolve(None)) if plan[name] else copy.deepcopy(layer)
        _set_submodule(model, name, form)


@torch.no_grad()
def fastest_plan(
    unmerged: nn.Module,
    plan: Mapping[str, bool],
    examples: Sequence[torch.Tensor],
    repeats: int = 5,
    timer: Callable[[Sequence[Callable[[], Any]]], list[float]] | None = None,
    margin: float = MERGE_MARGIN,
) -> dict[str, bool]:
    """Of ``plan``, every layer of it merged, and none merged: the plan whose model runs fastest.

    Each candidate is built from ``unmerged`` (a factored model at the ranks to serve) and run on
    every example; calls are interleaved (:func:`time_calls`) and candidates are ranked by the
    product of their times over the examples (the geometric mean). Every layer merged is the
    dense model's layers, never slower than dense: a candidate that keeps factors replaces it
    only when faster by more than ``margin`` (a fraction, per example), so a timing blip of a
    sub-millisecond call cannot keep a slower form. Other ties keep ``plan``.

    Parameters
    ----------
    timer:
        ``timer(fns)``: seconds per call of each function (default :func:`time_calls` on the
        model's device with ``repeats``); tests pass their own.
    """
    candidates = [dict(plan), dict.fromkeys(plan, True), dict.fromkeys(plan, False)]
    unique = list({tuple(sorted(c.items())): c for c in candidates}.values())
    if len(unique) == 1:
        return unique[0]
    device = next(unmerged.parameters()).device
    timer = timer or (lambda fns: time_calls(fns, device, repeats))
    models = [with_plan(unmerged, c).eval() for c in unique]
    score = [1.0] * len(unique)
    for x in examples:
        times = timer([lambda m=m, x=x: m(x) for m in models])
        score = [s * t for s, t in zip(score, times, strict=True)]
    best = min(range(len(unique)), key=lambda i: (score[i], i))
    merged = unique.index(dict.fromkeys(plan, True))
    if score[best] >= score[merged] * (1 - margin) ** len(examples):
        return unique[merged]
    return unique[best]


@torch.no_grad()
def merge_faster(
    model: nn.Module, example: torch.Tensor, repeats: int = 5, whole_model: bool = True
) -> dict[str, bool]:
    """Replace, in place, each factored layer whose dense form is measured faster.

    Parameters
    ----------
    model:
        A factored model, in eval mode, at the ranks to be served (inside ``use_budget`` or with
        layers already truncated). Merged layers keep those ranks.
    example:
        An input batch of the size that will be served (latency at batch 1 and throughput at
        batch 64 can decide differently).
    repeats:
        Timed runs per form and layer (median).
    whole_model:
        Check the layer decisions on the whole model (:func:`fastest_plan`) and keep the
        fastest of them, every layer merged, or none.

    Returns
    -------
    For every factored layer, whether it was merged.
    """
    shapes = _input_shapes(model, example)
    decisions: dict[str, bool] = {}
    for name, layer in low_rank_layers(model).items():
        if name not in shapes:
            decisions[name] = False  # not reached by the forward pass: leave it as it is
            continue
        factored, dense = layer_timings(layer, shapes[name], repeats)
        decisions[name] = dense < factored
    reached = {n: d for n, d in decisions.items() if n in shapes}
    if whole_model and reached:
        reached = fastest_plan(model, reached, [example], repeats)
        decisions.update(reached)
    apply_plan(model, model, {n: True for n, merged in reached.items() if merged})
    return decisions
