"""The one prefix rule of the project: a sub-model's array is the leading block of the global one.

Rank prefixes of factored layers and width prefixes of the FjORD/HeteroFL baselines are both
leading blocks ``a[:d0, :d1, ...]`` (DESIGN.md §3). The codec cuts with it, the aggregator adds
into it. Pure numpy-style indexing: works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def leading_block(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index of the leading block of the given shape: ``[:a0, :a1, ...]``."""
    return tuple(slice(0, a) for a in shape)


def budget_dim(size: int, beta: float) -> int:
    """⌈β·size⌉, at least 1: the prefix a budget β may use of an axis of length ``size``."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"budget must be in (0, 1], got {beta}")
    # The small tolerance keeps e.g. 0.6·5 = 3.0000000000000004 from rounding up to 4.
    return max(1, min(size, math.ceil(beta * size - 1e-9)))


def budget_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    prefix_axes: Mapping[str, tuple[int, ...]],
    beta: float,
    quantum: int = 1,
) -> dict[str, tuple[int, ...]]:
    """The shape of every array in the sub-model of budget β.

    ``prefix_axes[key]`` lists the axes of ``key`` that a budget cuts (a factored layer's rank
    axis; a width baseline's channel axes); keys not listed travel whole. With ``quantum`` > 1 a
    cut axis of size ≥ ``quantum`` is rounded down to a multiple of it (rank quantization).
    """
    if isinstance(quantum, bool) or not isinstance(quantum, int) or quantum < 1:
        raise ValueError(f"quantum must be an int ≥ 1, got {quantum!r}")

    def cut(d: int) -> int:
        k = budget_dim(d, beta)
        return k if k < quantum else k - k % quantum

    out = {}
    for key, shape in shapes.items():
        axes = prefix_axes.get(key, ())
        out[key] = tuple(cut(d) if i in axes else d for i, d in enumerate(shape))
    return out


def take_prefix(
    arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The leading block of each array with the given shape (a view where numpy allows)."""
    missing = set(shapes) - set(arrays)
    if missing:
        raise KeyError(f"no arrays for {sorted(missing)}")
    return {key: arrays[key][leading_block(shape)] for key, shape in shapes.items()}
