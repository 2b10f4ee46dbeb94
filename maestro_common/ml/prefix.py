"""The one prefix rule of the project: a sub-model's array is the leading block of the global one.

Rank prefixes of factored layers and width prefixes of the FjORD/HeteroFL baselines are both
leading blocks ``a[:d0, :d1, ...]`` (docs/architecture.md, "The prefix rule"). The codec cuts
with it, the aggregator adds into it. Pure numpy-style indexing: works on numpy arrays and torch
tensors alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real

import numpy as np


def is_budget(beta: object) -> bool:
    """Whether ``beta`` is a number in (0, 1] (a budget β, a rank fraction or a width)."""
    return isinstance(beta, Real) and not isinstance(beta, bool) and 0.0 < beta <= 1.0


def check_budget(beta: float, what: str = "budget") -> float:
    """β as a float when it is a number in (0, 1]; ValueError naming ``what`` otherwise."""
    if not is_budget(beta):
        raise ValueError(f"{what} must be in (0, 1], got {beta!r}")
    return float(beta)


def state_key(module_name: str, param: str) -> str:
    """The state-dict key of parameter ``param`` of the module called ``module_name``."""
    return f"{module_name}.{param}" if module_name else param


def leading_block(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index of the leading block of the given shape: ``[:a0, :a1, ...]``."""
    return tuple(slice(0, a) for a in shape)


def is_leading_block(shape: tuple[int, ...], of: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` fits as the leading block of one of shape ``of``."""
    return len(shape) == len(of) and all(a <= b for a, b in zip(shape, of, strict=True))


def budget_dim(size: int, beta: float) -> int:
    """⌈β·size⌉, at least 1: the prefix a budget β may use of an axis of length ``size``."""
    check_budget(beta)
    # The small tolerance keeps e.g. 0.6·5 = 3.0000000000000004 from rounding up to 4.
    return max(1, min(size, math.ceil(beta * size - 1e-9)))


def quantize_rank(cap: int, quantum: int) -> int:
    """``cap`` rounded down to a multiple of ``quantum``; a cap below one quantum is kept.

    Rank quantization (Hajimolahoseini et al., arXiv 2309.03824): kernels run fastest at channel
    counts that are multiples of their vector width, so a tier's rank is rounded down to one,
    never above the budget's cap (and so never above the layer's rank) and never to zero.
    """
    if isinstance(quantum, bool) or not isinstance(quantum, int) or quantum < 1:
        raise ValueError(f"rank quantum must be an int ≥ 1, got {quantum!r}")
    if cap < 1:
        raise ValueError(f"rank cap must be ≥ 1, got {cap}")
    return cap if cap < quantum else cap - cap % quantum


def budget_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    prefix_axes: Mapping[str, tuple[int, ...]],
    beta: float,
) -> dict[str, tuple[int, ...]]:
    """The shape of every array in the sub-model of budget β.

    ``prefix_axes[key]`` lists the axes of ``key`` that a budget cuts (a factored layer's rank
    axis; a width baseline's channel axes); keys not listed travel whole.
    """
    out = {}
    for key, shape in shapes.items():
        axes = prefix_axes.get(key, ())
        out[key] = tuple(budget_dim(d, beta) if i in axes else d for i, d in enumerate(shape))
    return out


def take_prefix(
    arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The leading block of each array with the given shape (a view where numpy allows)."""
    missing = set(shapes) - set(arrays)
    if missing:
        raise KeyError(f"no arrays for {sorted(missing)}")
    return {key: arrays[key][leading_block(shape)] for key, shape in shapes.items()}


def array_shapes(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The shape of every named array."""
    return {k: tuple(v.shape) for k, v in arrays.items()}


def payload_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the array data of a payload: the one way payload sizes are counted."""
    return int(sum(a.nbytes for a in arrays.values()))
