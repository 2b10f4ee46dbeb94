"""FedRolex's rolling window over the channels of a width-sliceable model.

Reference: Alam et al., "FedRolex: Model-Heterogeneous Federated Learning with Rolling Sub-Model
Extraction", NeurIPS 2022. A tier of width p trains, in round r, the window of ⌈p·C⌉ channels of
every hidden layer that starts at channel r mod C and wraps around, so over C rounds every channel
is trained by every tier (HeteroFL's and FjORD's prefix leaves the last channels to the strongest
tier alone).

The window is an index set (:mod:`maestro_common.ml.index_sets`): the server gathers the
window's channels into a compact array shaped like the width-p leading block, so the node trains
an ordinary width-p model (HeteroFL's static width) and never sees the indices.

**Groups.** A cut axis is a run of ``n`` equal groups: a layer's output axis groups ``unit`` rows
(one attention head of a width plan; 1 otherwise), and the input axis of the layer reading it
groups that layer's units times the positions a flatten spreads each channel over (the CNN's
``fc1`` reads 49 features per channel of ``conv2``). The group size of an axis is its size in the
narrowest sub-model (every layer at one unit), read off :func:`width_shapes`, so no producer /
consumer graph is needed: the axis that feeds a layer and the axis that reads it have the same
number of groups, and the window rolls in group units, starting at group ``(r - 1) mod n``, on
both. Round 1 is therefore the leading block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from maestro_common.ml.index_sets import Arrays, SubModel
from maestro_common.width.sliceable import width_shapes

# The narrowest width: every width layer keeps one unit (budget_dim never goes below 1).
_NARROWEST = 1e-9


def rolling_groups(model: nn.Module, input_shape: Sequence[int]) -> dict[str, dict[int, int]]:
    """For every array axis a width cuts, the size of its groups (see the module docstring).

    Raises
    ------
    ValueError
        If an axis's size is not a whole number of its groups (the window would split one).
    """
    full = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    narrow = width_shapes(model, _NARROWEST, input_shape)
    groups: dict[str, dict[int, int]] = {}
    for key, shape in narrow.items():
        for axis, (g, size) in enumerate(zip(shape, full[key], strict=True)):
            if g == size:
                continue
            if size % g:
                raise ValueError(f"{key} axis {axis}: {size} entries are not groups of {g}")
            groups.setdefault(key, {})[axis] = g
    return groups


def window(n: int, k: int, start: int) -> np.ndarray:
    """The ``k`` of ``n`` groups from ``start`` on, wrapping around: ``(start + j) mod n``."""
    if not 1 <= k <= n:
        raise ValueError(f"a window keeps 1..{n} groups, got {k}")
    return (start + np.arange(k, dtype=np.int64)) % n


@dataclass(frozen=True)
class RollingPlan:
    """The index plan of FedRolex (:class:`~maestro_common.ml.index_sets.IndexPlan`).

    Attributes
    ----------
    groups : dict of str to dict of int to int
        :func:`rolling_groups` of the global model.
    """

    groups: Mapping[str, Mapping[int, int]]

    def refresh(self, arrays: Arrays, server_round: int) -> Arrays:
        return arrays

    def select(
        self,
        arrays: Mapping[str, np.ndarray],
        prefix: SubModel,
        server_round: int,
        draw: int,
        clients: int,
    ) -> SubModel:
        indices: dict[str, dict[int, np.ndarray]] = {}
        for key, axes in self.groups.items():
            if key not in prefix.shapes:
                continue
            for axis, g in axes.items():
                size, full = prefix.shapes[key][axis], np.shape(arrays[key])[axis]
                if size == full:
                    continue  # the whole axis: nothing rolls
                if size % g:
                    raise ValueError(f"{key} axis {axis}: a block of {size} splits groups of {g}")
                n = full // g
                start = (server_round - 1) % n
                if start == 0:
                    continue  # the window is the leading block: its fast path
                chosen = window(n, size // g, start)
                idx = (chosen[:, None] * g + np.arange(g, dtype=np.int64)[None, :]).reshape(-1)
                indices.setdefault(key, {})[axis] = idx
        return SubModel(dict(prefix.shapes), indices)
