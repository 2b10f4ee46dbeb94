"""Regularizers of factored layers.

- The hierarchical group lasso over rank prefixes (Maestro, eq. for the ordered group penalty).
- Frobenius decay (Khodak et al., ICLR 2021): ½‖U Vᵀ‖²_F, the weight decay of the product a
  factored layer computes, instead of ½(‖U‖² + ‖V‖²), which plain weight decay on the factors is
  and which acts as a nuclear-norm penalty on the product.
"""

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


def layer_frobenius_sq(layer: LowRankLayer) -> torch.Tensor:
    """‖W‖²_F of the dense weight ``layer`` computes with all of its kept components.

    For W = U Vᵀ it is Σ (UᵀU) ⊙ (VᵀV): two R×R Gram matrices, without forming W. A layer with
    its own product (Tucker-2: U, core, V) forms its dense weight, which for a conv is small.
    """
    if type(layer).dense_weight is LowRankLayer.dense_weight:
        u, v = layer.u_matrix(), layer.v_matrix()
        return ((u.T @ u) * (v.T @ v)).sum()
    return layer.dense_weight().pow(2).sum()


def frobenius_decay(model: nn.Module) -> torch.Tensor:
    """½ Σ ‖W_l‖²_F over every factored layer of ``model`` (its gradient is the decay)."""
    terms = [layer_frobenius_sq(m) for m in low_rank_layers(model).values()]
    if not terms:
        return torch.zeros(())
    return 0.5 * torch.stack(terms).sum()
