"""Nested aggregation: FedAvg, or a robust rule, over leading blocks of different sizes.

A reply's array is read as the leading block ``global[:a0, :a1, ...]`` of the global array with
the same key (docs/architecture.md, "The prefix rule"). Every coordinate of the new global array
is the weighted mean, with the reply's num-examples as weight, over the replies whose block
covers it::

    new[idx] = Σ_c w_c A_c[idx] / Σ_c w_c        (over clients c whose block covers idx)

A reply to an index-set sub-model (``subs``; :mod:`maestro_common.ml.index_sets`: a rolled
window, sampled components) sits at the global indices its node was sent instead, its
multipliers divided out first; "covers" then means "was sent and returned that coordinate".

A coordinate that no reply covers (or that only zero-weight replies cover) keeps its previous
value, and a key missing from a reply gets nothing from that reply. The rule needs no knowledge of
the architecture: it serves rank prefixes and the width prefixes of FjORD/HeteroFL alike. When
every reply is full-size it reduces exactly to FedAvg, ``np.average(arrays, weights=w, axis=0)``.

Sums are accumulated in float64 and cast back to the global dtype. Integer and bool arrays (a
BatchNorm ``num_batches_tracked`` counter, say) follow the same weighted mean, rounded to the
nearest integer (half to even) before the cast, so every key obeys one rule.

**Robust rules** (``rule``, run-config key ``aggregation``) replace the weighted mean of float
arrays, still coordinate by coordinate over the replies that cover it (its *holders*):

- ``mean``: the weighted mean above (FedAvg).
- ``trimmed-mean``: at a coordinate with ``h`` holders, the ``floor(trim · h)`` smallest and the
  as many largest values are dropped and the rest averaged with their weights.
- ``median``: the plain (unweighted) median of the holders' values.
- ``centered-clip``: the reference is the coordinate-wise median; a reply whose update (its
  arrays minus the global block) points away from the reference's update (negative inner
  product over its block) is left out; each other reply's deviation from the reference over its
  own block is scaled so that its root-mean-square per coordinate is at most ``radius`` times the
  round's low median deviation RMS, and the reference plus the weighted mean of the clipped
  deviations is the new value.

Few holders: a rule can only be as robust as a coordinate's holders are many. ``trimmed-mean``
drops nothing where ``floor(trim · h)`` is 0 (the weighted mean there); ``median`` of two values
is their mean and of one value that value; ``centered-clip`` with one holder returns its value
(its deviation from itself is 0). So a coordinate only one reply covers (the high ranks only the
full-budget node trains) is that reply's, under every rule: the influence caps
(:mod:`server.influence`) are what bound it there.

Integer and bool arrays follow the weighted mean under every rule.

This module is pure numpy and assumes replies that passed :mod:`server.validation`; structural
errors it still meets (unknown key, extra axis, block larger than the global array, negative or
non-finite weight) raise ``ValueError`` rather than being broadcast silently.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from maestro_common.ml.index_sets import Index, SubModel, read_reply
from maestro_common.ml.prefix import is_leading_block, leading_block

RULES = ("mean", "trimmed-mean", "median", "centered-clip")


@dataclass(frozen=True)
class Rule:
    """How the float coordinates of a round are combined (see the module docstring).

    Attributes
    ----------
    name : str
        One of :data:`RULES`.
    trim : float
        ``trimmed-mean``: the share of a coordinate's holders dropped at each end, in [0, 0.5).
    radius : float
        ``centered-clip``: a reply's deviation from the median is clipped to this many times the
        round's low median deviation (RMS per coordinate); > 0.
    """

    name: str = "mean"
    trim: float = 0.2
    radius: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"aggregation must be one of {', '.join(RULES)}, got {self.name!r}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim}")
        if not (np.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"clip radius must be finite and > 0, got {self.radius}")


MEAN = Rule()


def aggregate_nested(
    global_arrays: Mapping[str, np.ndarray],
    replies: Sequence[tuple[Mapping[str, np.ndarray], float]],
    rule: Rule = MEAN,
    scales: dict[int, float] | None = None,
    subs: Sequence[SubModel | None] | None = None,
) -> dict[str, np.ndarray]:
    """Weighted mean (or ``rule``) of nested sub-models, coordinate by coordinate.

    Parameters
    ----------
    global_arrays : mapping of str to ndarray
        The current global model, keyed by ``state_dict`` name. Not modified.
    replies : sequence of (arrays, weight)
        Each reply's arrays (a subset of the global keys, every array a leading block of the
        global one) and its weight (num-examples, finite and >= 0). Not modified. A reply of
        weight 0 holds no coordinate under any rule.
    rule : Rule
        How float coordinates are combined; default the weighted mean.
    scales : dict, optional
        Under ``centered-clip``, filled with each reply's index and the scale applied to its
        deviation (0: left out, its update opposing the reference's; 1: untouched), for the
        round's record. Left empty under the other rules.
    subs : sequence of SubModel or None, optional
        What each reply's node was sent (:mod:`maestro_common.ml.index_sets`): a reply's
        array then sits at that sub-model's indices, its multipliers divided out. None (or a
        None entry, or a prefix sub-model): the leading block of the reply's shape.

    Returns
    -------
    dict of str to ndarray
        New arrays with the global shapes and dtypes.

    Raises
    ------
    ValueError
        If a weight is negative or not finite, a reply holds a key the global model lacks, or a
        reply array has another number of axes or is larger than its global array.
    """
    weights = [float(w) for _, w in replies]
    for i, w in enumerate(weights):
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"reply {i}: weight must be finite and >= 0, got {w!r}")
    for i, (arrays, _) in enumerate(replies):
        unknown = sorted(set(arrays) - set(global_arrays))
        if unknown:
            raise ValueError(f"reply {i}: keys not in the global model: {unknown}")
    if subs is not None and len(subs) != len(replies):
        raise ValueError(f"{len(subs)} sub-models for {len(replies)} replies")

    contributions: dict[str, list[tuple[np.ndarray, float, int]]] = {}
    for key, glob in global_arrays.items():
        glob = np.asarray(glob)
        if glob.dtype.kind not in "fiub":
            raise ValueError(f"{key!r}: unsupported dtype {glob.dtype}")
        contributions[key] = []
        for i, ((arrays, _), w) in enumerate(zip(replies, weights, strict=True)):
            if key not in arrays:
                continue
            arr = np.asarray(arrays[key])
            sub = subs[i] if subs is not None else None
            if sub is not None and key in sub.indices:
                if not is_leading_block(arr.shape, sub.shapes[key]):
                    raise ValueError(
                        f"{key!r}: reply shape {arr.shape} does not fit the shape sent, "
                        f"{sub.shapes[key]}"
                    )
                arr, idx = read_reply(key, arr, sub)
            elif not is_leading_block(arr.shape, glob.shape):
                raise ValueError(
                    f"{key!r}: reply shape {arr.shape} is not a leading block of {glob.shape}"
                )
            else:
                idx = leading_block(arr.shape)
            contributions[key].append((arr, w, i, idx))

    robust = {
        key: global_arrays[key].dtype.kind == "f" and rule.name != "mean" for key in global_arrays
    }
    clip = (
        _clip_scales(global_arrays, contributions, robust, len(replies), rule.radius)
        if rule.name == "centered-clip"
        else None
    )
    if clip and scales is not None:
        scales.update(next(iter(clip.values()))[1])
    new: dict[str, np.ndarray] = {}
    for key, glob in global_arrays.items():
        glob = np.asarray(glob)
        held = contributions[key]
        if not held:
            new[key] = glob.copy()
        elif not robust[key]:
            new[key] = _finish(glob, *_weighted_mean(glob.shape, held))
        elif rule.name == "trimmed-mean":
            new[key] = _finish(glob, *_trimmed_mean(glob.shape, held, rule.trim))
        elif rule.name == "median":
            new[key] = _finish(glob, *_median(glob.shape, held))
        else:
            assert clip is not None
            new[key] = _finish(glob, *_clipped_mean(glob.shape, held, clip[key]))
    return new


# (array, weight, reply index, where it sits in the global array) of a key's holders
Held = list[tuple[np.ndarray, float, int, Index]]


def _finish(glob: np.ndarray, value: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """The global array with its covered coordinates replaced by ``value`` (cast to its dtype)."""
    if glob.dtype.kind != "f":
        value = np.rint(value)
    out = glob.copy()
    # Uncovered coordinates are never written, so they stay bit-identical.
    np.copyto(out, value, casting="unsafe", where=covered)
    return out


def _weighted_mean(shape: tuple[int, ...], held: Held) -> tuple[np.ndarray, np.ndarray]:
    acc = np.zeros(shape, dtype=np.float64)
    wsum = np.zeros(shape, dtype=np.float64)
    for arr, w, _, block in held:
        acc[block] += w * arr.astype(np.float64, copy=False)
        wsum[block] += w
    covered = wsum > 0
    # Zeros where uncovered, so the cast never sees NaN or garbage.
    return np.divide(acc, wsum, out=np.zeros_like(acc), where=covered), covered


def _holder_values(shape: tuple[int, ...], held: Held) -> tuple[np.ndarray, list[float]]:
    """The holders' values stacked on a new first axis, NaN where a reply does not hold the
    coordinate, and their weights. Replies of weight 0 hold nothing."""
    live = [(arr, w, block) for arr, w, _, block in held if w > 0]
    values = np.full((len(live), *shape), np.nan)
    for row, (arr, _, block) in zip(values, live, strict=True):
        row[block] = arr
    return values, [w for _, w, _ in live]


def _sorted_holders(
    shape: tuple[int, ...], held: Held
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per coordinate, the holders' values sorted (NaN past the last holder), their weights in
    the same order, and the number of holders."""
    values, weights = _holder_values(shape, held)
    order = np.argsort(values, axis=0, kind="stable")  # NaN sorts last
    values = np.take_along_axis(values, order, axis=0)
    ordered_weights = np.asarray(weights, dtype=np.float64)[order]
    count = np.count_nonzero(~np.isnan(values), axis=0)
    return values, ordered_weights, count


def _trimmed_mean(shape: tuple[int, ...], held: Held, trim: float) -> tuple[np.ndarray, np.ndarray]:
    values, weights, count = _sorted_holders(shape, held)
    cut = np.floor(trim * count).astype(np.int64)
    rank = np.arange(values.shape[0]).reshape((-1,) + (1,) * len(shape))
    keep = (rank >= cut) & (rank < count - cut)
    acc = np.where(keep, values * weights, 0.0).sum(axis=0)
    wsum = np.where(keep, weights, 0.0).sum(axis=0)
    covered = count > 0
    return np.divide(acc, wsum, out=np.zeros(shape), where=covered), covered


def _median(shape: tuple[int, ...], held: Held) -> tuple[np.ndarray, np.ndarray]:
    values, _ = _holder_values(shape, held)
    values.sort(axis=0)  # NaN sorts last; no weights to carry along
    count = np.count_nonzero(~np.isnan(values), axis=0)
    covered = count > 0
    if not values.shape[0]:
        return np.zeros(shape), covered
    low = (np.maximum(count - 1, 0) // 2)[None]
    high = np.minimum(count // 2, values.shape[0] - 1)[None]
    a = np.take_along_axis(values, low, axis=0)[0]
    b = np.take_along_axis(values, high, axis=0)[0]
    return np.where(covered, (a + b) / 2, 0.0), covered


def _clip_scales(
    global_arrays: Mapping[str, np.ndarray],
    contributions: Mapping[str, Held],
    robust: Mapping[str, bool],
    n_replies: int,
    radius: float,
) -> dict[str, tuple[np.ndarray, dict[int, float]]]:
    """Centred clipping's reference (the coordinate-wise median) and each reply's scale.

    A reply's scale is 0 (it is left out) when its update points away from the reference's
    (their inner product over the reply's block is negative); otherwise it is at most 1, so that
    its deviation from the reference has an RMS of at most ``radius`` × the low median deviation.
    """
    refs = {
        key: _median(np.shape(global_arrays[key]), held)[0]
        for key, held in contributions.items()
        if robust[key] and held
    }
    squares, counts, inner = np.zeros(n_replies), np.zeros(n_replies), np.zeros(n_replies)
    for key, ref in refs.items():
        glob = np.asarray(global_arrays[key], dtype=np.float64)
        for arr, w, i, block in contributions[key]:
            if w > 0:
                values = arr.astype(np.float64)
                dev = values - ref[block]
                squares[i] += float(np.square(dev).sum())
                counts[i] += dev.size
                inner[i] += float(np.sum((values - glob[block]) * (ref[block] - glob[block])))
    live = counts > 0
    rms = np.sqrt(np.divide(squares, counts, out=np.zeros(n_replies), where=live))
    tau = radius * robust_reference(rms[live].tolist()) if live.any() else 0.0
    scale = {
        i: (0.0 if inner[i] < 0 else 1.0 if rms[i] <= tau else tau / rms[i])
        for i in range(n_replies)
        if live[i]
    }
    return {key: (ref, scale) for key, ref in refs.items()}


def _clipped_mean(
    shape: tuple[int, ...], held: Held, ref_scale: tuple[np.ndarray, dict[int, float]]
) -> tuple[np.ndarray, np.ndarray]:
    ref, scale = ref_scale
    acc = np.zeros(shape, dtype=np.float64)
    wsum = np.zeros(shape, dtype=np.float64)
    for arr, w, i, block in held:
        if w > 0 and scale[i] > 0:
            acc[block] += w * scale[i] * (arr.astype(np.float64) - ref[block])
            wsum[block] += w
    covered = _held(shape, held)  # where every holder was left out: the reference itself
    return ref + np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0), covered


def _held(shape: tuple[int, ...], held: Held) -> np.ndarray:
    """Coordinates some reply of positive weight covers."""
    out = np.zeros(shape, dtype=bool)
    for _, w, _, block in held:
        if w > 0:
            out[block] = True
    return out


def robust_reference(values: Sequence[float], negligible: float = 1e-3) -> float:
    """The low median of the values that are not negligible next to the round's high median.

    A value at most ``negligible`` times the high middle value (``sorted(values)[n // 2]``) is
    left out, so that replies that changed nothing (free riders, half of a round or fewer) never
    pull the reference to 0 and with it every honest update's cap. 0 when every value is 0.
    """
    if not len(values):
        raise ValueError("robust_reference of no values")
    ordered = sorted(float(v) for v in values)
    floor = negligible * ordered[len(ordered) // 2]
    kept = [v for v in ordered if v > floor]
    return kept[(len(kept) - 1) // 2] if kept else 0.0
