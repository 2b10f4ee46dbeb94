"""In-memory datasets: the tensors, and what model builders know of each dataset.

Image datasets (Fashion-MNIST, CIFAR-10) are small enough (at most 60k images) to hold entirely
in memory as normalised float32 tensors; the character task (Shakespeare) holds token windows
(int64 inputs and their next-character targets, :mod:`maestro_common.ml.data.shakespeare`),
so there is no per-sample ``__getitem__`` and no
``torch.utils.data.DataLoader``: local training slices the tensors directly
(:func:`maestro_common.lowrank.training.train`), which for in-memory data is one to two orders of
magnitude faster than a DataLoader (that one collates a Python list of per-sample tensors for
every batch). Where the data comes from is :mod:`maestro_common.ml.data.datasets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DATASET_INFO", "ArrayDataset", "DatasetInfo", "normalise"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that model builders need before loading it.

    An image dataset has ``context = 0``; a character dataset has ``context`` > 0 (the window
    length) and ``num_classes`` is its vocabulary (the model predicts the next character at
    every position); its image fields are unused.
    """

    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    context: int = 0

    @property
    def is_text(self) -> bool:
        """Token windows (B, T) rather than images (B, C, H, W)."""
        return self.context > 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape without the batch axis: (T,) or (C, H, W)."""
        if self.is_text:
            return (self.context,)
        return (self.in_channels, self.image_size, self.image_size)


DATASET_INFO: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        in_channels=1, image_size=28, num_classes=10, mean=(0.2860,), std=(0.3530,)
    ),
    "cifar10": DatasetInfo(
        in_channels=3,
        image_size=32,
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    # LEAF's 80 symbols plus an explicit unknown index; 80-character windows.
    "shakespeare": DatasetInfo(in_channels=1, image_size=0, num_classes=81, context=80),
}


@dataclass(frozen=True)
class ArrayDataset:
    """A labelled dataset held as two tensors: images and their classes, or token windows and
    their next-token targets.

    Attributes
    ----------
    images : torch.Tensor
        The inputs: float32, shape (N, C, H, W), already normalised; or int64 token ids (N, T).
    labels : torch.Tensor
        int64, shape (N,) for images; (N, T) for token windows (position t's next token).
    num_classes : int
        Number of classes of the full dataset (a subset keeps it even when some classes
        are absent, so model output sizes stay consistent across clients).
    name : str
        Human-readable name, e.g. ``"fashion-mnist/train"``.

    Notes
    -----
    Loaders cache datasets in-process, so several callers may share the same tensors;
    treat them as read-only (``subset`` and ``to`` return new tensors).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim == 2 and self.images.dtype == torch.int64:
            # Token windows: each input position has its next-character target.
            if self.labels.shape != self.images.shape or self.labels.dtype != torch.int64:
                raise ValueError(
                    "token windows need int64 targets shaped like their inputs "
                    f"{tuple(self.images.shape)}, got shape {tuple(self.labels.shape)} and "
                    f"dtype {self.labels.dtype}"
                )
            if self.num_classes < 1:
                raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
            return
        if self.images.ndim != 4:
            raise ValueError(
                "images must be (N, C, H, W) float32 or token windows (N, T) int64, got shape "
                f"{tuple(self.images.shape)}"
            )
        if self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32, got {self.images.dtype}")
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be 1-D int64, got shape {tuple(self.labels.shape)} "
                f"and dtype {self.labels.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        """Return a new dataset with the samples at ``indices`` (copied), in that order."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64, device=self.labels.device)
        return ArrayDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            num_classes=self.num_classes,
            name=self.name,
        )

    def to(self, device: torch.device | str) -> ArrayDataset:
        """Return the dataset on ``device`` (e.g. to keep a client's whole shard on GPU)."""
        return ArrayDataset(
            images=self.images.to(device),
            labels=self.labels.to(device),
            num_classes=self.num_classes,
            name=self.name,
        )


def normalise(images_u8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32 tensor scaled to [0, 1] then standardised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32).div_(255.0)
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    if m.shape[0] not in (1, c) or s.shape[0] not in (1, c):
        raise ValueError(f"mean/std need 1 or {c} entries, got {len(mean)} and {len(std)}")
    return x.sub_(m).div_(s)
