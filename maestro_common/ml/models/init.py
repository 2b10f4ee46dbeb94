"""Weight initialisation shared by the small reference models."""

from __future__ import annotations

from torch import nn


def torch_default_init(model: nn.Module) -> None:
    """PyTorch's default init (uniform, bound 1/√fan_in) for every Conv2d and Linear of ``model``.

    The reference implementations use it. A factored layer's effective step size grows with its
    singular values (the gradient of U Vᵀ scales with ‖U‖² + ‖V‖²); Kaiming-normal init put fc1's
    top singular value near 2, and SGD at lr 0.05 then diverged on the factored model while the
    dense one trained.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.reset_parameters()
