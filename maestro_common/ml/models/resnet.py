"""ResNet-18, CIFAR variant, with a choice of GroupNorm or BatchNorm.

Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. The CIFAR variant
(3×3 stride-1 stem, no max pooling, four stages of two BasicBlocks with 64-128-256-512 channels)
is the one Maestro and most federated-learning papers use for CIFAR-10.

Normalisation: ``norm="group"`` (default) uses GroupNorm with 2 groups in every layer, following
Hsieh et al., "The Non-IID Data Quagmire of Decentralized Machine Learning", ICML 2020, who
showed that BatchNorm's running statistics break under non-IID client data and that GroupNorm
with 2 groups recovers accuracy. Two groups (rather than e.g. 32) also keeps narrow width
multipliers valid: every channel count only needs to be even. ``norm="batch"`` gives the
centralised BatchNorm baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_GROUPS = 2
NORMS = ("group", "batch")
STAGE_CHANNELS = (64, 128, 256, 512)

NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str) -> NormFactory:
    """Constructor of the normalisation layer for ``norm`` in :data:`NORMS`."""
    if norm == "group":
        return lambda c: nn.GroupNorm(GROUP_NORM_GROUPS, c)
    if norm == "batch":
        return nn.BatchNorm2d
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual; a 1×1 projection shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, make_norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), make_norm(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        h = self.norm2(self.conv2(h))  # (B, C_out, H/s, W/s)
        return F.relu(h + self.shortcut(x))  # (B, C_out, H/s, W/s)


class ResNet18(nn.Module):
    """CIFAR ResNet-18; ``width`` scales every channel count (64·width, …, 512·width)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        norm: str = "group",
        width: float = 1.0,
    ) -> None:
        super().__init__()
        make_norm = norm_factory(norm)
        if isinstance(width, bool) or not isinstance(width, int | float) or width <= 0:
            raise ValueError(f"width must be a positive number, got {width!r}")
        channels = [max(1, round(c * width)) for c in STAGE_CHANNELS]
        if norm == "group" and any(c % GROUP_NORM_GROUPS for c in channels):
            raise ValueError(
                f"width={width} gives channels {channels}; GroupNorm with "
                f"{GROUP_NORM_GROUPS} groups needs multiples of {GROUP_NORM_GROUPS}"
            )
        if image_size < 1:
            raise ValueError(f"image_size must be ≥ 1, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.norm1 = make_norm(channels[0])
        stages = []
        in_ch = channels[0]
        for i, out_ch in enumerate(channels):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(in_ch, out_ch, stride, make_norm),
                    BasicBlock(out_ch, out_ch, 1, make_norm),
                )
            )
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Registered last so that decompose.default_skip finds it as the classifier.
        self.fc = nn.Linear(channels[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan-out) convs, unit/zero norms, PyTorch's default for the classifier.

        This is torchvision's ResNet initialisation, the reference point for CIFAR results.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm | nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.fc.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))  # (B, C0, H, W)
        x = self.layer1(x)  # (B, C0, H, W)
        x = self.layer2(x)  # (B, C1, H/2, W/2)
        x = self.layer3(x)  # (B, C2, H/4, W/4)
        x = self.layer4(x)  # (B, C3, H/8, W/8)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C3)
        return self.fc(x)  # (B, classes)
