"""Reading and writing a run's checkpoint (``checkpoint.pt``): arrays, the round, the run config.

A checkpoint is a ``torch.save`` of ``{"round": int, "arrays": {name: ndarray}, "config": dict}``
written by write-then-rename, so a reader never sees half a file. Every failure raises
:class:`CheckpointError`, whose message names the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or written, or does not hold what a checkpoint holds."""


@dataclass
class Checkpoint:
    """What a checkpoint holds: the round it finished, the model's arrays and the run config."""

    round: int
    arrays: dict[str, np.ndarray]
    config: dict[str, Any]


def write_checkpoint(
    path: Path, server_round: int, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any]
) -> None:
    """Write a checkpoint to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    state = {"round": int(server_round), "arrays": dict(arrays), "config": dict(config)}
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write the checkpoint: {err}") from err


def read_checkpoint(path: Path) -> Checkpoint:
    """Read the checkpoint at ``path``.

    Raises
    ------
    CheckpointError
        When the file is missing, unreadable, or lacks ``round``, ``arrays`` or ``config``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # weights_only=False: the file holds numpy arrays and plain dicts this project wrote.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint: {err}") from err
    if not isinstance(state, dict) or not {"round", "arrays", "config"} <= set(state):
        raise CheckpointError(f"{path}: a checkpoint needs the keys round, arrays and config")
    arrays, config = state["arrays"], state["config"]
    if not isinstance(arrays, dict) or not all(isinstance(a, np.ndarray) for a in arrays.values()):
        raise CheckpointError(f"{path}: arrays must be a dict of numpy arrays")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: config must be a dict")
    return Checkpoint(round=int(state["round"]), arrays=dict(arrays), config=dict(config))
