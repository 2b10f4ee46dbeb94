"""Optional TensorBoard event logging of the per-tier metrics (run-config key ``tensorboard``).

Off by default. When on, every evaluated round's per-tier test (and validation) accuracy, in
percent, and loss go to ``<run folder>/tensorboard/`` through
:class:`torch.utils.tensorboard.SummaryWriter`, one scalar per tier and metric with the round as
step. ``metrics.jsonl`` stays the run's record; the events only let a run be watched in
TensorBoard (``tensorboard --logdir runs``). TensorBoard is not a dependency of the project: asked
for without it installed, the run stops before round 1 saying ``pip install tensorboard``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

FOLDER = "tensorboard"
# metrics.jsonl key of a row's per-tier metrics -> the split named in the tags
SPLITS = (("tiers", "test"), ("val-tiers", "validation"))


class TensorBoardMissingError(ImportError):
    """``tensorboard = true`` where the tensorboard package is not installed."""


def summary_writer() -> Callable[..., Any]:
    """torch's ``SummaryWriter`` class.

    Raises
    ------
    TensorBoardMissingError
        Naming ``pip install tensorboard`` when torch cannot load it.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise TensorBoardMissingError(
            "the run config sets tensorboard = true, but the tensorboard package is not "
            f"installed ({err}): pip install tensorboard, or set tensorboard = false"
        ) from err
    return SummaryWriter


def tier_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` row: ``<split>-accuracy-pct/beta-<β>`` and
    ``<split>-loss/beta-<β>`` for every tier the row evaluated (none for a round without)."""
    scalars = {}
    for key, split in SPLITS:
        for beta, metrics in (row.get(key) or {}).items():
            scalars[f"{split}-accuracy-pct/beta-{beta}"] = 100 * float(metrics["accuracy"])
            scalars[f"{split}-loss/beta-{beta}"] = float(metrics["loss"])
    return scalars


class TierBoard:
    """Writes the rows' per-tier scalars as TensorBoard events; does nothing when disabled.

    The writer is made at the first row that has scalars, so a run that stops before any
    evaluated round leaves no ``tensorboard/`` folder. Use as a context manager (closes it).

    Parameters
    ----------
    folder:
        The run folder; events go to ``folder / "tensorboard"``.
    enabled:
        The run config's ``tensorboard``.
    make_writer:
        ``make_writer(log_dir)``, a ``SummaryWriter`` by default (tests pass a fake). Looked up
        here when enabled, so a missing tensorboard fails at once.
    """

    def __init__(
        self, folder: Path, enabled: bool, make_writer: Callable[[str], Any] | None = None
    ) -> None:
        self.folder = Path(folder) / FOLDER
        self.enabled = enabled
        self.make_writer = (make_writer or summary_writer()) if enabled else None
        self.writer: Any = None

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Write the row's per-tier scalars at step ``row["round"]`` and flush them."""
        scalars = tier_scalars(row) if self.enabled else {}
        if not scalars:
            return
        if self.writer is None:
            self.writer = self.make_writer(str(self.folder))
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, row["round"])
        self.writer.flush()  # a watcher sees each round as it ends

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> TierBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
