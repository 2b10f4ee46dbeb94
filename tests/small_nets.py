"""Small seeded torch nets on (1, 6, 6) inputs and a relative error, for the library's tests."""

from __future__ import annotations

import torch
from torch import nn

from maestro_common.lowrank.decompose import decompose


def two_conv_net() -> nn.Sequential:
    """A dense net: convs 1→8→16 (3x3, padding 1), linears 576→32→10; seeded with 0."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 6 * 6, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def three_conv_net(
    kind: str = "svd", channels: tuple[int, int, int] = (8, 16, 16), hidden: int = 32
) -> nn.Module:
    """Three 3x3 convs (padding 1) and two linears, factored with ``conv_factorization=kind``.

    Seeded with 0. The first conv and the classifier stay dense (``default_skip``).
    """
    c1, c2, c3 = channels
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c2, c3, 3, padding=1),
        nn.Flatten(),
        nn.Linear(c3 * 36, hidden),
        nn.Linear(hidden, 10),
    )
    return decompose(m, conv_factorization=kind)


def tiny_conv_net(last: int = 6) -> nn.Module:
    """A dense net on (1, 8, 8) inputs: convs 1→4→8→``last`` (3x3; the third with stride 2) and a
    linear to 10. Factored with ``default_skip``, conv 4→8 and 8→``last`` are factored."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, last, 3, stride=2),
        nn.Flatten(),
        nn.Linear(9 * last, 10),
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (‖b‖ at least 1e-12)."""
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
