"""Component importance and progressive shrinking of factored layers."""

from __future__ import annotations

import torch
from torch import nn

from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers
from maestro_common.lowrank.regularizers import tail_norms


@torch.no_grad()
def importance(layer: LowRankLayer) -> torch.Tensor:
    """importance_b = √(Σ_{j≥b}‖v_j‖²)·√(Σ_{j≥b}‖u_j‖²), shape (R,), non-increasing in b."""
    return tail_norms(layer.v_matrix()) * tail_norms(layer.u_matrix())


def ranks_to_keep(imp: torch.Tensor, eps: float) -> int:
    """Number of leading components with importance ≥ eps, never below 1.

    Importance is non-increasing, so this is the length of the prefix above the threshold.
    """
    return max(1, int((imp >= eps).sum().item()))


@torch.no_grad()
def shrink(model: nn.Module, eps: float) -> dict[str, int]:
    """Truncate every factored layer to its components of importance ≥ ``eps`` (at least 1).

    Returns
    -------
    The kept rank of every factored layer by qualified name, after shrinking.
    """
    if eps < 0:
        raise ValueError(f"eps must be ≥ 0, got {eps}")
    new_ranks: dict[str, int] = {}
    for name, layer in low_rank_layers(model).items():
        keep = ranks_to_keep(importance(layer), eps)
        if keep < layer.rank:
            layer.truncate(keep)
        new_ranks[name] = layer.rank
    return new_ranks
