"""Validation of client replies before they reach :func:`server.aggregation.aggregate_nested`.

A reply is accepted only if all of these hold, otherwise :class:`InvalidReply` names what failed:

- **keys**: exactly the expected key set (the keys of the budget shapes sent to the node, or the
  global keys when no budget is given); missing and unknown keys are both rejected.
- **shapes**: the same number of axes as the global array and, on every axis, a size no larger
  than the global array's and no larger than the node's budget shape.
- **dtype**: the same kind as the global dtype (float for float, signed int for signed int,
  unsigned for unsigned, bool for bool) and values that fit it. A float64 or float16 reply for a
  float32 global is accepted (clients may train at another precision and aggregation accumulates
  in float64 anyway), but a float reply for an integer counter, an int reply for float weights, or
  a float64 value that overflows float32 is not: each means the codec or the model disagrees.
- **indices**: where the node was sent an index set on an axis (a rolled window, sampled
  components: :mod:`maestro_common.ml.index_sets`), the reply holds exactly as many
  entries on that axis as indices were sent: each entry is then the node's value of one known
  global coordinate. (A leading-block axis may come back shorter, as before.)
- **values**: all finite (no NaN, no Inf).
- **num-examples**: a real number (``bool`` is not), finite, ``>= MIN_NUM_EXAMPLES`` (1: a
  device that trained on something saw at least one example; 5e-324 would otherwise underflow
  its weighted arrays to 0) and ``<= MAX_NUM_EXAMPLES`` (1e9, far above any device's dataset).
  Fractions above 1 are allowed, since the value is only a weight.
  A valid value can still be a lie: :mod:`server.influence` bounds what one reply weighs.
"""

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from logging import WARNING

import numpy as np
from flwr.common.logger import log

from maestro_common.app.protocol import MAX_NUM_EXAMPLES
from maestro_common.ml.index_sets import SubModel

MIN_NUM_EXAMPLES = 1.0
# What of a reply's metrics the server keeps in its records: the contract's keys, then at most
# this many others (sorted by name) with names of at most MAX_METRIC_NAME characters.
MAX_EXTRA_METRICS = 16
MAX_METRIC_NAME = 64


class InvalidReply(ValueError):
    """A client reply that must not be aggregated.

    Parameters
    ----------
    reason : str
        What was wrong, naming the offending key where there is one.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    """One client's reply, as the strategy read it from the message.

    Attributes
    ----------
    node_id : hashable
        Who sent it; used only in the rejection list and the log.
    arrays : mapping of str to ndarray
        The reply's arrays, keyed by ``state_dict`` name.
    num_examples : object
        The reply's ``num-examples`` metric, untrusted until validated.
    max_shapes : mapping of str to tuple of int, or None
        The shapes the server sent to this node (its budget); None means the global shapes.
    sent : SubModel or None
        The sub-model the node was sent, with its index sets; None: leading blocks of
        ``max_shapes``.
    """

    node_id: Hashable
    arrays: Mapping[str, np.ndarray]
    num_examples: object
    max_shapes: Mapping[str, tuple[int, ...]] | None = None
    sent: SubModel | None = None


def validate_reply(
    global_arrays: Mapping[str, np.ndarray],
    reply_arrays: Mapping[str, object],
    num_examples: object,
    max_shapes: Mapping[str, tuple[int, ...]] | None = None,
    sent: SubModel | None = None,
) -> None:
    """Check one reply against the global model and the node's budget.

    Parameters
    ----------
    global_arrays : mapping of str to ndarray
        The server's full global arrays.
    reply_arrays : mapping of str to object
        The reply's arrays (anything that is not an ndarray is rejected).
    num_examples : object
        The reply's ``num-examples`` metric.
    max_shapes : mapping of str to tuple of int, optional
        The shapes sent to this node. When given, its keys are the expected key set and every
        reply array must fit inside its shape; otherwise the global keys are expected.
    sent : SubModel, optional
        The sub-model sent to this node. Its shapes stand in for ``max_shapes`` when that is not
        given, and on every axis it holds an index set for, the reply's size must equal the
        number of indices sent.

    Raises
    ------
    InvalidReply
        If any rule in the module docstring fails; ``reason`` says which and where.
    ValueError
        If ``max_shapes`` disagrees with the global model or a global dtype is not a real or
        bool dtype: server-side bugs, not bad replies.
    """
    _check_num_examples(num_examples)
    if sent is not None:
        sent.check({k: np.shape(v) for k, v in global_arrays.items()})  # a server bug if not
        if max_shapes is None:
            max_shapes = sent.shapes

    expected = set(max_shapes) if max_shapes is not None else set(global_arrays)
    if max_shapes is not None and not expected <= set(global_arrays):
        raise ValueError(
            f"max_shapes keys not in the global model: {_names(expected - set(global_arrays))}"
        )
    missing, unknown = expected - set(reply_arrays), set(reply_arrays) - expected
    if missing:
        raise InvalidReply(f"missing keys: {_names(missing)}")
    if unknown:
        raise InvalidReply(f"unknown keys: {_names(unknown)}")

    for key in sorted(expected):
        budget = None if max_shapes is None else tuple(max_shapes[key])
        _check_array(key, reply_arrays[key], np.asarray(global_arrays[key]), budget)
        if sent is not None:
            _check_indexed_axes(key, reply_arrays[key], sent)


def filter_valid(
    global_arrays: Mapping[str, np.ndarray], replies: Sequence[Reply]
) -> tuple[list[Reply], list[tuple[Hashable, str]]]:
    """Split replies into accepted and rejected ones, logging each rejection.

    Parameters
    ----------
    global_arrays : mapping of str to ndarray
        The server's full global arrays.
    replies : sequence of Reply
        The round's replies, each with its node's budget shapes.

    Returns
    -------
    accepted : list of Reply
        The replies that passed :func:`validate_reply`, in their original order. Pass
        ``[(r.arrays, float(r.num_examples)) for r in accepted]`` to ``aggregate_nested``.
    rejected : list of (node_id, reason)
        The others, with the reason each was rejected.
    """
    accepted: list[Reply] = []
    rejected: list[tuple[Hashable, str]] = []
    for reply in replies:
        try:
            validate_reply(
                global_arrays, reply.arrays, reply.num_examples, reply.max_shapes, reply.sent
            )
        except InvalidReply as err:
            log(WARNING, "Rejected reply from node %s: %s", reply.node_id, err.reason)
            rejected.append((reply.node_id, err.reason))
        else:
            accepted.append(reply)
    return accepted, rejected


def bound_metrics(
    metrics: Mapping[str, float], keep: tuple[str, ...] = ("num-examples", "train-loss")
) -> tuple[dict[str, float], str]:
    """The metrics a reply may write into the run's records, and why any were dropped ("").

    The keys in ``keep`` always stay; of the others, names longer than :data:`MAX_METRIC_NAME`
    are dropped, then all but the first :data:`MAX_EXTRA_METRICS` by name. So one reply adds at
    most a few hundred bytes to a row, whatever it sends.
    """
    kept = {k: metrics[k] for k in keep if k in metrics}
    extra = sorted(k for k in metrics if k not in kept)
    named = [k for k in extra if len(k) <= MAX_METRIC_NAME]
    chosen = named[:MAX_EXTRA_METRICS]
    kept.update((k, metrics[k]) for k in chosen)
    dropped = len(extra) - len(chosen)
    if not dropped:
        return kept, ""
    return kept, (
        f"{dropped} of {len(extra)} extra metrics dropped (at most {MAX_EXTRA_METRICS}, names "
        f"of at most {MAX_METRIC_NAME} characters)"
    )


def _check_num_examples(num_examples: object) -> None:
    if isinstance(num_examples, bool | np.bool_) or not isinstance(
        num_examples, int | float | np.integer | np.floating
    ):
        raise InvalidReply(
            f"num-examples must be a number, got {type(num_examples).__name__}: {num_examples!r}"
        )
    value = float(num_examples)
    if not np.isfinite(value) or value < MIN_NUM_EXAMPLES or value > MAX_NUM_EXAMPLES:
        raise InvalidReply(
            f"num-examples must be finite, >= {MIN_NUM_EXAMPLES:g} and <= {MAX_NUM_EXAMPLES:.0e}, "
            f"got {num_examples!r}"
        )


def _check_array(key: str, arr: object, glob: np.ndarray, budget: tuple[int, ...] | None) -> None:
    if not isinstance(arr, np.ndarray):
        raise InvalidReply(f"{key!r}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != glob.ndim:
        raise InvalidReply(
            f"{key!r}: {arr.ndim} axes, global array has {glob.ndim} (shape {arr.shape} vs "
            f"{glob.shape})"
        )
    if budget is not None and len(budget) != glob.ndim:
        raise ValueError(f"{key!r}: budget shape {budget} does not match global {glob.shape}")
    for axis, (a, g) in enumerate(zip(arr.shape, glob.shape, strict=True)):
        if a > g:
            raise InvalidReply(
                f"{key!r}: axis {axis} has size {a}, larger than the global {g} "
                f"(shape {arr.shape} vs {glob.shape})"
            )
        if budget is not None and a > budget[axis]:
            raise InvalidReply(
                f"{key!r}: axis {axis} has size {a}, larger than the node's budget "
                f"{budget[axis]} (shape {arr.shape} vs budget {budget})"
            )
    _check_dtype_and_values(key, arr, glob.dtype)


def _check_indexed_axes(key: str, arr: np.ndarray, sent: SubModel) -> None:
    for axis, idx in sorted(sent.indices.get(key, {}).items()):
        if arr.shape[axis] != idx.size:
            raise InvalidReply(
                f"{key!r}: axis {axis} holds {arr.shape[axis]} entries, but the node was sent "
                f"{idx.size} indices on it (shape {arr.shape} vs sent {sent.shapes[key]})"
            )


def _check_dtype_and_values(key: str, arr: np.ndarray, dtype: np.dtype) -> None:
    if dtype.kind not in "fiub":
        raise ValueError(f"{key!r}: global dtype {dtype} is not supported")
    if arr.dtype.kind != dtype.kind:
        raise InvalidReply(f"{key!r}: dtype {arr.dtype} is not compatible with the global {dtype}")
    if arr.size == 0 or dtype.kind == "b":
        return
    if dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise InvalidReply(f"{key!r}: {bad} non-finite values (NaN/Inf)")
        info: np.finfo | np.iinfo = np.finfo(dtype)
    else:
        info = np.iinfo(dtype)
    lo, hi = arr.min(), arr.max()
    if lo < info.min or hi > info.max:
        raise InvalidReply(f"{key!r}: values in [{lo}, {hi}] do not fit the global {dtype}")


def _names(keys: set[str], limit: int = 5) -> str:
    """Sorted key names, cut after ``limit`` so a wholesale mismatch stays one readable line."""
    names = sorted(keys)
    shown = ", ".join(repr(k) for k in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"
