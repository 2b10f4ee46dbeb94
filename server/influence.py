"""A bound on how far one accepted reply can move the weighted average.

Validation (:mod:`server.validation`) makes a reply well-formed; it cannot tell an honest
``num-examples`` from an inflated one, nor trained arrays from noise. Two caps, both relative to
the round's own replies, bound what one reply can do:

- **weight cap** (``weight-cap`` = k): a reply's weight is ``min(num-examples, k · m)``, where
  ``m`` is the round's low median num-examples (the lower middle value, so that with two replies
  the smaller one sets it).
- **update cap** (``update-cap`` = c): a reply's update, its arrays minus the global leading block
  they cover, is scaled down so that its root-mean-square per coordinate is at most ``c`` times
  the round's low median update RMS. Float arrays only: integer counters are left as they are.

What this guarantees: every aggregated reply weighs at most ``k · m`` and moves its coordinates
by at most ``c`` times the median update RMS on average. While fewer than half of a round's
accepted replies come from one party, ``m`` and the median RMS are bounded by honest values, so
one reply's share of the total weight is at most ``k / (k + n - 1)`` of a round of ``n`` replies
of median weight. It does not guarantee robustness against a majority, nor against a small update
aimed in a harmful direction (that is what the caps let through, at a bounded weight).

The trade-off: an honest node holding more than ``k`` times the median data counts as ``k``
medians (its extra data is under-weighted), and an honest update larger than ``c`` medians (a
node far from the others on strongly non-IID data) is shortened. 0 turns a cap off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from maestro_common.lowrank.prefix import leading_block


def low_median(values: Sequence[float]) -> float:
    """The lower middle value (``sorted(values)[(n - 1) // 2]``): one outlier never sets it."""
    if not values:
        raise ValueError("low_median of no values")
    return float(sorted(values)[(len(values) - 1) // 2])


def cap_weights(weights: Sequence[float], ratio: float) -> list[float]:
    """Each weight capped at ``ratio`` times the low median of ``weights`` (``ratio`` 0: as is)."""
    if ratio < 0:
        raise ValueError(f"weight cap ratio must be ≥ 0, got {ratio}")
    if not ratio or not weights:
        return [float(w) for w in weights]
    cap = ratio * low_median(weights)
    return [min(float(w), cap) for w in weights]


def update_rms(global_arrays: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray]) -> float:
    """Root-mean-square of ``arrays`` minus the global leading blocks they cover (floats only)."""
    total, count = 0.0, 0
    for key, arr in arrays.items():
        if arr.dtype.kind != "f":
            continue
        delta = arr.astype(np.float64) - global_arrays[key][leading_block(arr.shape)]
        total += float(np.square(delta).sum())
        count += delta.size
    return float(np.sqrt(total / count)) if count else 0.0


def clip_updates(
    global_arrays: Mapping[str, np.ndarray],
    replies: Sequence[Mapping[str, np.ndarray]],
    ratio: float,
) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """Scale each reply's update so its RMS is at most ``ratio`` × the round's low median RMS.

    Returns the replies' arrays (the same objects where the scale is 1) and each scale in [0, 1].
    A reply whose update is non-zero while the median is zero gets scale 0.
    """
    if ratio < 0:
        raise ValueError(f"update cap ratio must be ≥ 0, got {ratio}")
    if not ratio or not replies:
        return [dict(r) for r in replies], [1.0] * len(replies)
    rms = [update_rms(global_arrays, r) for r in replies]
    cap = ratio * low_median(rms)
    out, scales = [], []
    for arrays, value in zip(replies, rms, strict=True):
        scale = 1.0 if value <= cap else cap / value
        scales.append(scale)
        out.append(dict(arrays) if scale == 1.0 else _scaled(global_arrays, arrays, scale))
    return out, scales


def _scaled(
    global_arrays: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray], scale: float
) -> dict[str, np.ndarray]:
    out = {}
    for key, arr in arrays.items():
        if arr.dtype.kind != "f":
            out[key] = arr
            continue
        base = global_arrays[key][leading_block(arr.shape)].astype(np.float64)
        out[key] = (base + scale * (arr.astype(np.float64) - base)).astype(arr.dtype)
    return out
