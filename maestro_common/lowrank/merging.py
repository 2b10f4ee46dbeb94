"""Merging by measurement: run a factored layer as its dense form where that form is faster.

A factored layer has fewer MACs than its dense form below the break-even rank, but it runs two or
three kernels instead of one, and small or odd channel counts run below peak speed, so the MAC
formula alone misjudges which form is faster (on a 2-core CPU a factored 3x3 conv costs its MAC
ratio plus 0.07–0.10 of dense). :func:`merge_faster` times both forms of each factored layer once
at its active rank, on the layer's device, with the input shape it sees in the model, and replaces
the layer by its dense form (:func:`maestro_common.lowrank.decompose.to_dense_module`) where that
measured faster. Decisions are cached per (layer geometry, rank, input shape, device, threads), so a
model with repeated blocks, or a second call, times each case once.

For inference and export only: a merged layer no longer has nested ranks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from maestro_common.lowrank.decompose import _set_submodule, to_dense_module
from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers

# (decision key) -> (factored seconds, dense seconds)
_CACHE: dict[tuple[Any, ...], tuple[float, float]] = {}


def clear_cache() -> None:
    """Forget every timing decision (e.g. after changing the thread count)."""
    _CACHE.clear()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], device: torch.device, repeats: int = 5, warmup: int = 2
) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    On CPU the calling thread's CPU time (what one layer costs, little moved by other processes
    on the machine); on CUDA wall time with the device synchronized.
    """
    now = time.thread_time if device.type == "cpu" else time.perf_counter
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = now()
        fn()
        _sync(device)
        times.append(now() - start)
    return statistics.median(times)


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
        _CACHE[key] = (
            time_call(lambda: layer(x), device, repeats),
            time_call(lambda: dense(x), device, repeats),
        )
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


@torch.no_grad()
def merge_faster(model: nn.Module, example: torch.Tensor, repeats: int = 5) -> dict[str, bool]:
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

    Returns
    -------
    For every factored layer, whether it was merged.
    """
    shapes = _input_shapes(model, example)
    decisions: dict[str, bool] = {}
    for name, layer in list(low_rank_layers(model).items()):
        if name not in shapes:
            decisions[name] = False  # not reached by the forward pass: leave it as it is
            continue
        factored, dense = layer_timings(layer, shapes[name], repeats)
        decisions[name] = dense < factored
        if decisions[name]:
            _set_submodule(model, name, to_dense_module(layer, layer._resolve(None)))
    return decisions
