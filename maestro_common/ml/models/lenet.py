"""LeNet-5 as used in Maestro's MNIST experiments.

Reference: LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE
1998; the variant with ReLU and max pooling and a padded first conv (so 28×28 MNIST maps onto the
original 32×32 geometry) follows Horváth et al., "Maestro: Uncovering Low-Rank Structures via
Trainable Decomposition", ICML 2024.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.ml.models.init import torch_default_init


def lenet_feature_size(image_size: int) -> int:
    """Side of the last feature map: conv5 (pad 2) → pool 2 → conv5 → pool 2."""
    return (image_size // 2 - 4) // 2


class LeNet5(nn.Module):
    """conv(in→6, 5, pad 2) → pool → conv(6→16, 5) → pool → fc 120 → fc 84 → fc classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        side = lenet_feature_size(image_size)
        if side < 1:
            raise ValueError(f"lenet5 needs image_size ≥ 12, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default init (:func:`~maestro_common.ml.models.init.torch_default_init`)."""
        torch_default_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 6, S/2, S/2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 16, s, s)
        x = x.flatten(1)  # (B, 16·s·s)
        x = F.relu(self.fc1(x))  # (B, 120)
        x = F.relu(self.fc2(x))  # (B, 84)
        return self.fc3(x)  # (B, classes)
