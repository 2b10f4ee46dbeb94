"""Sub-models as index sets: per array, the global indices kept on each nested axis.

A leading block ``a[:d0, :d1, ...]`` (:mod:`maestro_common.ml.prefix`) is the special case
where every axis keeps its first ``d`` indices; a :class:`SubModel` with no index sets *is* that
block, and every function here takes the prefix path for it unchanged (the same arrays, the same
wire format). An index set on an axis keeps the listed global indices, in the listed order, so
the array a node receives is compact: ``global[np.ix_(i0, i1, ...)]``, with the shape of a leading
block. A node therefore trains what it received as if it were a prefix and never learns which
global indices it holds; the server keeps that record and scatters the reply back.

An axis may also carry a **multiplier** per kept index (the Horvitz–Thompson weights of the
sampled spectral methods): the node receives ``global · m`` on that axis and the server divides
the reply by ``m`` before it averages, so a coordinate's average is over the holders' own
estimates of the global coordinate.

A reply smaller than what was sent on an axis holds the first entries of that axis's index list
(the prefix rule, read in the sent order). Pure numpy: no torch, no architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from maestro_common.ml.prefix import leading_block

Shapes = dict[str, tuple[int, ...]]
Arrays = dict[str, np.ndarray]
Index = tuple[slice | np.ndarray, ...]


@dataclass(frozen=True)
class SubModel:
    """What one node is sent: the compact shape of every array, and its non-prefix axes.

    Attributes
    ----------
    shapes : dict of str to tuple of int
        The shape of every array sent (its keys are the keys sent).
    indices : dict of str to dict of int to ndarray
        ``indices[key][axis]``: the global indices kept on that axis, in the order sent; as many
        as ``shapes[key][axis]``, distinct. An axis not listed keeps its leading block.
    scales : dict of str to dict of int to ndarray
        ``scales[key][axis]``: the multiplier of each kept index of an indexed axis (finite,
        > 0); none listed: 1.
    """

    shapes: Shapes
    indices: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    scales: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    @property
    def is_prefix(self) -> bool:
        """Whether every array is a plain leading block (the fast path)."""
        return not self.indices

    def check(self, global_shapes: Mapping[str, tuple[int, ...]]) -> SubModel:
        """Itself when it fits the global model; ValueError saying what does not otherwise."""
        unknown = sorted(set(self.shapes) - set(global_shapes))
        if unknown:
            raise ValueError(f"sub-model keys not in the global model: {unknown}")
        for key, shape in self.shapes.items():
            glob = tuple(global_shapes[key])
            if len(shape) != len(glob) or any(a > g for a, g in zip(shape, glob, strict=True)):
                raise ValueError(f"{key}: sub-model shape {shape} does not fit the global {glob}")
        for key, axes in self.indices.items():
            if key not in self.shapes:
                raise ValueError(f"{key}: index set for a key that is not sent")
            for axis, idx in axes.items():
                size, glob = self.shapes[key][axis], global_shapes[key][axis]
                if idx.ndim != 1 or idx.size != size:
                    raise ValueError(f"{key} axis {axis}: {idx.size} indices for {size} entries")
                if idx.size and (idx.min() < 0 or idx.max() >= glob):
                    raise ValueError(f"{key} axis {axis}: indices outside 0..{glob - 1}")
                if np.unique(idx).size != idx.size:
                    raise ValueError(f"{key} axis {axis}: repeated indices")
        for key, axes in self.scales.items():
            for axis, scale in axes.items():
                if axis not in self.indices.get(key, {}):
                    raise ValueError(f"{key} axis {axis}: multipliers on an axis with no indices")
                if scale.shape != self.indices[key][axis].shape:
                    raise ValueError(f"{key} axis {axis}: one multiplier per index is needed")
                if not (np.isfinite(scale).all() and (scale > 0).all()):
                    raise ValueError(f"{key} axis {axis}: multipliers must be finite and > 0")
        return self

    def placement(self, key: str, shape: tuple[int, ...]) -> Index:
        """Where an array of ``shape`` (at most the sent shape) sits in the global array.

        Indexed axes take the first ``shape[axis]`` indices of their list, other axes their
        leading ``shape[axis]`` entries. The result indexes a numpy array (``np.ix_`` style when
        any axis is indexed; a tuple of slices otherwise).
        """
        axes = self.indices.get(key)
        if not axes:
            return leading_block(shape)
        parts = [
            axes[a][:n] if a in axes else np.arange(n, dtype=np.int64) for a, n in enumerate(shape)
        ]
        return np.ix_(*parts)

    def multiplier(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The multipliers of an array of ``shape`` broadcast over its axes (None: all 1)."""
        axes = self.scales.get(key)
        if not axes:
            return None
        out = np.ones((1,) * len(shape))
        for axis, scale in axes.items():
            view = [1] * len(shape)
            view[axis] = shape[axis]
            out = out * scale[: shape[axis]].reshape(view)
        return out


def prefix_sub_model(shapes: Mapping[str, tuple[int, ...]]) -> SubModel:
    """The leading blocks of the given shapes, as a :class:`SubModel`."""
    return SubModel({k: tuple(v) for k, v in shapes.items()})


def take_sub_model(arrays: Mapping[str, np.ndarray], sub: SubModel) -> Arrays:
    """What a node of sub-model ``sub`` is sent: each array's selected slices (scaled).

    For a prefix sub-model this is :func:`~maestro_common.ml.prefix.take_prefix` (views
    where numpy allows); an indexed array is gathered into a new compact array of the global
    dtype.
    """
    missing = set(sub.shapes) - set(arrays)
    if missing:
        raise KeyError(f"no arrays for {sorted(missing)}")
    out: Arrays = {}
    for key, shape in sub.shapes.items():
        arr = arrays[key]
        values = arr[sub.placement(key, shape)]
        scale = sub.multiplier(key, shape)
        if scale is not None:
            values = (values * scale).astype(arr.dtype)
        out[key] = values
    return out


def read_reply(key: str, arr: np.ndarray, sub: SubModel) -> tuple[np.ndarray, Index]:
    """A reply's array with its multipliers divided out, and where it sits in the global one."""
    shape = tuple(arr.shape)
    scale = sub.multiplier(key, shape)
    if scale is not None:
        arr = arr.astype(np.float64) / scale
    return arr, sub.placement(key, shape)


class IndexPlan(Protocol):
    """How a method picks each node's index sets (the server calls it, with numpy arrays only).

    ``refresh`` may re-express the global arrays once per round before any node is served (a
    spectral method re-factors its weights into ordered singular components); it must leave
    the function the arrays compute unchanged. ``select`` gives the sub-model of one node:
    ``prefix`` is the leading-block sub-model of the node's budget (what a prefix method would
    send); ``draw`` seeds any sampling (a pure function of the run's seed, the round and the
    node); ``clients`` is the number of nodes sampled this round.
    """

    def refresh(self, arrays: Arrays, server_round: int) -> Arrays: ...

    def select(
        self,
        arrays: Mapping[str, np.ndarray],
        prefix: SubModel,
        server_round: int,
        draw: int,
        clients: int,
    ) -> SubModel: ...
