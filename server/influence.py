"""A bound on how far one accepted reply can move the weighted average.

Validation (:mod:`server.validation`) makes a reply well-formed; it cannot tell an honest
``num-examples`` from an inflated one, nor trained arrays from noise. Two caps, both relative to
the round's own replies, bound what one reply can do:

- **weight cap and floor** (``weight-cap`` = k, ``weight-floor`` = f): a reply's weight is
  ``num-examples`` clipped to ``[f · m, k · m]``, where ``m`` is the round's low median
  num-examples (the lower middle value, so that with two replies the smaller one sets it). The
  floor keeps a tiny claim (5e-324) from zeroing coordinates only that reply covers.
- **update cap** (``update-cap`` = c): a reply's update, its arrays minus the global leading block
  they cover, is scaled down so that its root-mean-square per coordinate is at most ``c`` times
  the round's reference update RMS: the low median of the RMS values that are not negligible
  (above 1e-3 times the high median), so that replies returning the model unchanged (free
  riders, up to half of a round) never make the cap 0. Float arrays only: integer counters are
  left as they are.

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

from maestro_common.ml.index_sets import SubModel, read_reply
from maestro_common.ml.prefix import leading_block
from server.aggregation import robust_reference


def low_median(values: Sequence[float]) -> float:
    """The lower middle value (``sorted(values)[(n - 1) // 2]``): one outlier never sets it."""
    if not values:
        raise ValueError("low_median of no values")
    return float(sorted(values)[(len(values) - 1) // 2])


def cap_weights(weights: Sequence[float], ratio: float, floor: float = 0.0) -> list[float]:
    """Each weight clipped to ``[floor, ratio]`` times the low median of ``weights``.

    ``ratio`` 0 leaves the top open and ``floor`` 0 the bottom; a floor above the cap is refused.
    """
    if ratio < 0 or floor < 0:
        raise ValueError(f"weight cap and floor must be ≥ 0, got {ratio}, {floor}")
    if ratio and floor > ratio:
        raise ValueError(f"weight floor {floor} is above the weight cap {ratio}")
    if not weights:
        return []
    median = low_median(weights)
    cap = ratio * median if ratio else float("inf")
    return [min(max(float(w), floor * median), cap) for w in weights]


def update_rms(
    global_arrays: Mapping[str, np.ndarray],
    arrays: Mapping[str, np.ndarray],
    sub: SubModel | None = None,
) -> float:
    """Root-mean-square of ``arrays`` minus the global coordinates they cover (floats only).

    ``sub``: what the node was sent; its indexed arrays are compared, multipliers divided out,
    with the global coordinates they hold (default: leading blocks).
    """
    total, count = 0.0, 0
    for key, arr in arrays.items():
        if arr.dtype.kind != "f":
            continue
        values, idx = _placed(key, arr, sub)
        delta = values.astype(np.float64) - global_arrays[key][idx]
        total += float(np.square(delta).sum())
        count += delta.size
    return float(np.sqrt(total / count)) if count else 0.0


def clip_updates(
    global_arrays: Mapping[str, np.ndarray],
    replies: Sequence[Mapping[str, np.ndarray]],
    ratio: float,
    subs: Sequence[SubModel | None] | None = None,
) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """Scale each reply's update so its RMS is at most ``ratio`` × the round's low median RMS.

    Returns the replies' arrays (the same objects where the scale is 1) and each scale in [0, 1].
    The reference is :func:`server.aggregation.robust_reference` of the RMS values: free riders
    (zero updates) do not count, so it is 0 only when every update is 0 (and nothing is scaled).
    ``subs``: what each reply's node was sent (see :func:`update_rms`).
    """
    if ratio < 0:
        raise ValueError(f"update cap ratio must be ≥ 0, got {ratio}")
    if not ratio or not replies:
        return [dict(r) for r in replies], [1.0] * len(replies)
    subs = list(subs) if subs is not None else [None] * len(replies)
    rms = [update_rms(global_arrays, r, sub) for r, sub in zip(replies, subs, strict=True)]
    cap = ratio * robust_reference(rms)
    out, scales = [], []
    for arrays, value, sub in zip(replies, rms, subs, strict=True):
        scale = 1.0 if value <= cap else cap / value
        scales.append(scale)
        out.append(dict(arrays) if scale == 1.0 else _scaled(global_arrays, arrays, scale, sub))
    return out, scales


def _placed(key: str, arr: np.ndarray, sub: SubModel | None) -> tuple[np.ndarray, object]:
    """The reply's array in global units and where it sits in the global array."""
    if sub is not None and key in sub.indices:
        return read_reply(key, arr, sub)
    return arr, leading_block(arr.shape)


def _scaled(
    global_arrays: Mapping[str, np.ndarray],
    arrays: Mapping[str, np.ndarray],
    scale: float,
    sub: SubModel | None = None,
) -> dict[str, np.ndarray]:
    out = {}
    for key, arr in arrays.items():
        if arr.dtype.kind != "f":
            out[key] = arr
            continue
        _, idx = _placed(key, arr, sub)
        base = global_arrays[key][idx].astype(np.float64)
        mult = sub.multiplier(key, arr.shape) if sub is not None else None
        if mult is not None:
            base = base * mult  # in the units the node was sent
        out[key] = (base + scale * (arr.astype(np.float64) - base)).astype(arr.dtype)
    return out
