"""Regularizers of factored layers: the hierarchical group lasso over rank prefixes (Maestro,
eq. for the ordered group penalty)."""

from __future__ import annotations

import torch
from torch import nn

from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers


def tail_norms(mat: torch.Tensor) -> torch.Tensor:
    """t_b = √(Σ_{j≥b} ‖m_j‖²) for the columns m_j of ``mat`` (shape (d, R)) -> (R,)."""
    sq = mat.pow(2).sum(dim=0)  # (R,)
    tails = sq.flip(0).cumsum(0).flip(0)  # (R,) Σ_{j≥b}
    # The clamp keeps the gradient of √ finite when a whole tail is exactly zero.
    return tails.clamp_min(1e-24).sqrt()


def layer_group_lasso(layer: LowRankLayer) -> torch.Tensor:
    """Σ_b [ √(Σ_{j≥b}‖v_j‖²) + √(Σ_{j≥b}‖u_j‖²) ] for one factored layer."""
    return tail_norms(layer.v_matrix()).sum() + tail_norms(layer.u_matrix()).sum()


def group_lasso(model: nn.Module) -> torch.Tensor:
    """The hierarchical group lasso summed over every factored layer of ``model``.

    Each component is penalised once for every prefix it trails, so trailing components are
    pushed to zero first and information moves to the leading ones.
    """
    terms = [layer_group_lasso(m) for m in low_rank_layers(model).values()]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()
