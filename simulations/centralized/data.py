"""The centralized trainer's data: the whole training set in one place, and the server's splits.

Images: the training set (optionally its first ``--limit-train`` images), with run-config
``val-size`` images held out as the validation split exactly as the federation holds them out of
every client partition (:func:`~maestro_common.ml.data.partition.holdout_split`); the test set,
cut to ``max-test-examples``.

Characters (``shakespeare``): every role's training segment pooled (:class:`WindowPool`); each
epoch trains on ``local-steps`` × ``batch-size`` windows drawn from the pool. Validation and test
are the server's fixed samples of non-overlapping windows
(:func:`~maestro_common.ml.data.text_sets.server_split`, ``val-size`` and ``max-test-examples``
of them), the same windows a federated run is scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.ml.data import DATASET_INFO, ArrayDataset, load_dataset
from maestro_common.ml.data.partition import holdout_split
from maestro_common.ml.data.shakespeare import load_shakespeare
from maestro_common.ml.data.text_sets import server_split


class WindowPool:
    """Every stride-1 window of a set of text segments, drawn at random without cutting them all.

    The segments are concatenated once; a window never crosses a segment's end. Drawing ``n``
    windows is uniform over all windows of all segments (with replacement), so a role weighs
    in proportion to its text, as in the union of the clients' training windows.
    """

    def __init__(self, segments: Sequence[np.ndarray], context: int, name: str) -> None:
        if context < 1:
            raise ValueError(f"context must be ≥ 1, got {context}")
        keep = [np.asarray(s) for s in segments if len(s) > context]
        if not keep:
            raise ValueError(f"{name}: no segment is longer than a window ({context} symbols)")
        lengths = np.array([len(s) for s in keep], dtype=np.int64)
        self.context = context
        self.name = name
        self._text = torch.from_numpy(np.concatenate(keep))
        self._offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        counts = torch.from_numpy(lengths - context)  # windows of each segment
        self._ends = torch.cumsum(counts, 0)  # windows before the end of each segment
        self._starts = self._ends - counts

    def __len__(self) -> int:
        return int(self._ends[-1])

    def window(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the windows numbered ``index`` (0 .. len - 1), int64 (n, T)."""
        segment = torch.searchsorted(self._ends, index, right=True)
        start = self._offsets[segment] + (index - self._starts[segment])
        both = self._text[start[:, None] + torch.arange(self.context + 1)].long()
        return both[:, :-1].contiguous(), both[:, 1:].contiguous()

    def sample(self, n: int, generator: torch.Generator, num_classes: int) -> ArrayDataset:
        """``n`` windows drawn uniformly at random (with replacement)."""
        index = torch.randint(len(self), (n,), generator=generator)
        x, y = self.window(index)
        return ArrayDataset(images=x, labels=y, num_classes=num_classes, name=self.name)


@dataclass(frozen=True)
class Data:
    """What one centralized run trains and scores on.

    ``train`` holds the training images, or ``pool`` the character task's training windows
    (exactly one of the two is set); ``val`` is None without ``val-size``.
    """

    test: ArrayDataset
    train: ArrayDataset | None = None
    pool: WindowPool | None = None
    val: ArrayDataset | None = None

    def training_subset(self, limit: int) -> Data:
        """The same data with the first ``limit`` training images only (0: all; text: as is)."""
        if not limit or self.train is None:
            return self
        keep = torch.arange(min(limit, len(self.train)))
        return Data(self.test, self.train.subset(keep), self.pool, self.val)


def split_validation(train_ds: ArrayDataset, val_size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """(training, validation): ``val_size`` images held out as the federation holds them out.

    The held-out indices depend only on the set's size and ``val_size``
    (:func:`~maestro_common.ml.data.partition.holdout_split`), so every run and any later
    evaluation of a saved model hold out the same images whatever their seed.

    Raises
    ------
    ConfigError
        When ``val_size`` is not below the training set's size.
    """
    try:
        kept, held = holdout_split(len(train_ds), val_size)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return train_ds.subset(torch.from_numpy(kept)), train_ds.subset(torch.from_numpy(held))


def load_data(cfg: RunConfig, limit_train: int = 0) -> Data:
    """The training, validation and test data of ``cfg``'s dataset, as described above.

    Raises
    ------
    ConfigError
        When ``--limit-train`` is given for the character task (its training data is drawn
        per epoch, ``local-steps`` sets how much), or ``val-size`` is too large.
    """
    info = DATASET_INFO[cfg.dataset]
    data_dir = cfg.data_dir or None
    if info.is_text:
        if limit_train:
            raise ConfigError(
                "--limit-train cuts an image training set; the character task draws "
                "local-steps × batch-size windows per epoch: lower local-steps instead"
            )
        corpus = load_shakespeare(data_dir)
        pool = WindowPool(corpus.segments("train"), info.context, f"{cfg.dataset}/train")
        test = server_split(cfg.dataset, "test", cfg.data_dir, cfg.max_test_examples)
        val = server_split(cfg.dataset, "val", cfg.data_dir, cfg.val_size) if cfg.val_size else None
        return Data(test=test, pool=pool, val=val)
    train = load_dataset(cfg.dataset, "train", data_dir)
    if limit_train:
        train = train.subset(torch.arange(min(limit_train, len(train))))
    test = load_dataset(cfg.dataset, "test", data_dir)
    if cfg.max_test_examples:
        test = test.subset(torch.arange(min(cfg.max_test_examples, len(test))))
    val = None
    if cfg.val_size:
        train, val = split_validation(train, cfg.val_size)
    return Data(test=test, train=train, val=val)
