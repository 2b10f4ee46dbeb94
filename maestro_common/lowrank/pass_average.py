"""Pass-averaged gradients of a nested step: each parameter's gradient is the mean over the
passes that used it, not their sum.

A nested step runs several sub-models that share their leading components (the prefix, the
smallest tier, a random one in between) and sums their losses, as the Maestro authors' code does.
A leading component then receives one gradient per pass and moves up to three times as far as a
trailing one that only the prefix uses; the lr that suits the leading components starves the
trailing ones, which only the larger tiers use. Dividing each parameter's gradient by the number
of passes that used it gives every component the step size of one pass: the mean over the
sub-models that hold it, the rule by which the server's nested aggregation averages a leading
block over the clients that trained it.

Counts: component j of a factored layer is used by the passes whose rank in that layer exceeds j;
an entry of a Tucker core at (i, j) by the passes that use both i and j; every other parameter
(dense layers, biases) by every pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from maestro_common.lowrank.layers import low_rank_layers

__all__ = ["average_over_passes", "component_counts"]


def component_counts(rank: int, pass_ranks: Sequence[int]) -> torch.Tensor:
    """c_j = the number of passes whose rank is above j, for j < ``rank``; shape (rank,)."""
    ranks = torch.tensor(list(pass_ranks), dtype=torch.long).reshape(1, -1)
    return (torch.arange(rank).reshape(-1, 1) < ranks).sum(dim=1).to(torch.float32)


def _count_tensor(counts: torch.Tensor, ndim: int, axes: Sequence[int]) -> torch.Tensor:
    # min over the named axes of the per-component counts, broadcast along the others: an entry
    # cut on several axes (a Tucker core) is used only by passes that use all of its components.
    out = None
    for axis in axes:
        shape = [1] * ndim
        shape[axis] = counts.numel()
        c = counts.reshape(shape)
        out = c if out is None else torch.minimum(out, c)
    assert out is not None
    return out


@torch.no_grad()
def average_over_passes(model: nn.Module, pass_ranks: Sequence[Mapping[str, int]]) -> None:
    """Divide every gradient of ``model`` by the number of the step's passes that used it.

    Parameters
    ----------
    model:
        The model after ``backward`` of the summed objective.
    pass_ranks:
        One mapping per pass: factored layer name -> the rank that pass used (a layer not named
        used all its kept components).
    """
    n = len(pass_ranks)
    if n <= 1:
        return
    factors: set[int] = set()
    for name, layer in low_rank_layers(model).items():
        counts = component_counts(layer.rank, [r.get(name, layer.rank) for r in pass_ranks])
        for param, axes in layer.factor_axes().items():
            p = getattr(layer, param)
            factors.add(id(p))
            if p.grad is not None:
                c = _count_tensor(counts.to(p.grad), p.grad.ndim, axes)
                p.grad.div_(c.clamp_min(1.0))
    for p in model.parameters():
        if id(p) not in factors and p.grad is not None:
            p.grad.div_(n)
