"""Width matching: the widest width-p sub-model of a width model whose MACs fit a target.

The FjORD / HeteroFL baselines are compared with Maestro at matched MACs
(:meth:`maestro_common.app.methods.Method.budget`): each tier gets the widest width whose MACs stay
within Maestro's MACs at that tier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from torch import nn

from maestro_common.lowrank.accounting import count_macs
from maestro_common.width.sliceable import width_layers

__all__ = ["width_for_macs"]


def _breakpoints(model: nn.Module) -> list[Fraction]:
    # ⌈p·C⌉ = j exactly for p in ((j-1)/C, j/C], so the configuration of out-widths only changes
    # at the fractions j/C of the non-fixed layers' output sizes, C counted in whole units (an
    # attention projection's heads).
    sizes = {m.width_steps for m in width_layers(model).values() if not m.fixed_out}
    points = {Fraction(j, c) for c in sizes for j in range(1, c + 1)}
    return sorted(points | {Fraction(1)})


def _shortest_decimal(low: Fraction, high: Fraction) -> Fraction:
    # The smallest decimal with the fewest digits in (low, high]: a readable label of the interval.
    for digits in range(1, 16):
        scale = 10**digits
        candidate = Fraction(math.floor(low * scale) + 1, scale)
        if candidate <= high:
            return candidate
    return high


def width_for_macs(model: nn.Module, input_shape: Sequence[int], target_macs: float) -> float:
    """The widest width-p sub-model whose MACs stay within a target.

    Parameters
    ----------
    model:
        A width model (from :func:`make_width_sliceable`).
    input_shape:
        Shape of one sample without the batch axis.
    target_macs:
        MAC budget of one forward pass of one sample, as counted by
        :func:`maestro_common.lowrank.accounting.count_macs`.

    Returns
    -------
    A width p in (0, 1] that selects the largest channel configuration with
    ``count_macs(model, input_shape, p) <= target_macs``. All p in an interval (b', b] between
    consecutive breakpoints j/C select the same sub-model; the value returned is the smallest
    decimal with the fewest digits in that interval (e.g. 0.201 rather than 103/512), checked to
    select the same configuration. If even the narrowest sub-model (one channel per layer)
    exceeds the target, the narrowest is returned anyway: a client always trains something.

    Notes
    -----
    Bisection over the finite sorted breakpoints, with an exact MAC count at each probe; this
    relies on MACs growing with width, which holds for every feed-forward Conv/Linear stack.
    """
    if isinstance(target_macs, bool) or not isinstance(target_macs, int | float):
        raise ValueError(f"target_macs must be a number, got {target_macs!r}")
    if not width_layers(model):
        raise ValueError("width_for_macs needs a width model; call make_width_sliceable first")
    points = _breakpoints(model)

    def macs(i: int) -> int:
        return count_macs(model, input_shape, float(points[i]))

    lo, hi = 0, len(points) - 1  # answer index: the largest i with macs(i) ≤ target, else 0
    if macs(hi) <= target_macs:
        lo = hi
    else:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if macs(mid) <= target_macs:
                lo = mid
            else:
                hi = mid - 1
    high = points[lo]
    low = points[lo - 1] if lo > 0 else Fraction(0)
    label = float(_shortest_decimal(low, high))
    config = _out_config(model, float(high))
    # Float rounding of the label must not move it into a neighbouring configuration.
    return label if _out_config(model, label) == config else float(high)


def _out_config(model: nn.Module, width: float) -> tuple[int, ...]:
    return tuple(m.out_width(width) for m in width_layers(model).values())
