"""The small CNN of the FedAvg paper ("CNN" for MNIST / FEMNIST).

Reference: McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017: two 5×5 convs (32 and 64 channels, each followed by 2×2 max pooling), a
fully connected layer of 512 units with ReLU, and a linear classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.ml.models.init import torch_default_init


class FedAvgCNN(nn.Module):
    """conv(in→32, 5, pad 2) → pool → conv(32→64, 5, pad 2) → pool → fc 512 → fc classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        side = image_size // 4
        if side < 1:
            raise ValueError(f"cnn needs image_size ≥ 4, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(64 * side * side, 512)
        self.fc2 = nn.Linear(512, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default init (:func:`~maestro_common.ml.models.init.torch_default_init`)."""
        torch_default_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, S/2, S/2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, S/4, S/4)
        x = x.flatten(1)  # (B, 64·(S/4)²)
        x = F.relu(self.fc1(x))  # (B, 512)
        return self.fc2(x)  # (B, classes)
