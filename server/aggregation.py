"""Nested aggregation: FedAvg over leading blocks of different sizes.

A reply's array is read as the leading block ``global[:a0, :a1, ...]`` of the global array with
the same key (docs/architecture.md, "The prefix rule"). Every coordinate of the new global array
is the weighted mean, with the reply's num-examples as weight, over the replies whose block
covers it::

    new[idx] = Σ_c w_c A_c[idx] / Σ_c w_c        (over clients c whose block covers idx)

A coordinate that no reply covers (or that only zero-weight replies cover) keeps its previous
value, and a key missing from a reply gets nothing from that reply. The rule needs no knowledge of
the architecture: it serves rank prefixes and the width prefixes of FjORD/HeteroFL alike. When
every reply is full-size it reduces exactly to FedAvg, ``np.average(arrays, weights=w, axis=0)``.

Sums are accumulated in float64 and cast back to the global dtype. Integer and bool arrays (a
BatchNorm ``num_batches_tracked`` counter, say) follow the same weighted mean, rounded to the
nearest integer (half to even) before the cast, so every key obeys one rule.

This module is pure numpy and assumes replies that passed :mod:`server.validation`; structural
errors it still meets (unknown key, extra axis, block larger than the global array, negative or
non-finite weight) raise ``ValueError`` rather than being broadcast silently.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from maestro_common.lowrank.prefix import is_leading_block, leading_block


def aggregate_nested(
    global_arrays: Mapping[str, np.ndarray],
    replies: Sequence[tuple[Mapping[str, np.ndarray], float]],
) -> dict[str, np.ndarray]:
    """Weighted mean of nested leading blocks, coordinate by coordinate.

    Parameters
    ----------
    global_arrays : mapping of str to ndarray
        The current global model, keyed by ``state_dict`` name. Not modified.
    replies : sequence of (arrays, weight)
        Each reply's arrays (a subset of the global keys, every array a leading block of the
        global one) and its weight (num-examples, finite and >= 0). Not modified.

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

    new: dict[str, np.ndarray] = {}
    for key, glob in global_arrays.items():
        glob = np.asarray(glob)
        contributions = [
            (arrays[key], w)
            for (arrays, _), w in zip(replies, weights, strict=True)
            if key in arrays
        ]
        if not contributions:
            new[key] = glob.copy()
            continue
        new[key] = _aggregate_key(key, glob, contributions)
    return new


def _aggregate_key(
    key: str, glob: np.ndarray, contributions: list[tuple[np.ndarray, float]]
) -> np.ndarray:
    """Nested weighted mean of one array; see :func:`aggregate_nested`."""
    if glob.dtype.kind not in "fiub":
        raise ValueError(f"{key!r}: unsupported dtype {glob.dtype}")
    acc = np.zeros(glob.shape, dtype=np.float64)
    wsum = np.zeros(glob.shape, dtype=np.float64)
    for arr, w in contributions:
        arr = np.asarray(arr)
        if not is_leading_block(arr.shape, glob.shape):
            raise ValueError(
                f"{key!r}: reply shape {arr.shape} is not a leading block of {glob.shape}"
            )
        block = leading_block(arr.shape)
        acc[block] += w * arr.astype(np.float64, copy=False)
        wsum[block] += w

    covered = wsum > 0
    # Zeros where uncovered, so the cast below never sees NaN or garbage.
    mean = np.divide(acc, wsum, out=np.zeros_like(acc), where=covered)
    if glob.dtype.kind != "f":
        mean = np.rint(mean)
    out = glob.copy()
    # Uncovered coordinates are never written, so they stay bit-identical.
    np.copyto(out, mean, casting="unsafe", where=covered)
    return out
