"""A run loaded from its checkpoint, for export and evaluation after training.

:func:`load_run` builds the model the checkpoint's own run config describes (covered by its
checksum) and loads the arrays into it; a ``config.json`` beside the checkpoint, or one given,
is only compared with that config (:func:`check_config_file`). :func:`load_test_set` and
:func:`tier_beta` give the test set and the budget a command names. Used by
:mod:`server.export`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maestro_common.app.checkpoint import Checkpoint, read_checkpoint
from maestro_common.app.config import RunConfig, as_current
from maestro_common.ml.data import ArrayDataset, load_dataset
from maestro_common.ml.data.local import load_local_dataset
from server.model_ops import ModelOps  # the tier budgets, shapes and counts of metrics.jsonl


@dataclass
class LoadedRun:
    """A checkpoint loaded into its run's model (kept in the server's model operations)."""

    cfg: RunConfig
    checkpoint: Checkpoint
    ops: Any  # server.model_ops.ModelOps: the same per-method budgets, shapes and counts

    @property
    def model(self) -> nn.Module:
        return self.ops.model


def load_run(checkpoint: Path, config: Path | None = None) -> LoadedRun:
    """Load ``checkpoint`` into the model its run config describes, on the CPU.

    The run config is the one stored in the checkpoint, covered by its checksum. ``config`` if
    given, else ``config.json`` beside the checkpoint if there is one, is only compared with it.

    Raises
    ------
    ValueError
        When that file cannot be read, or differs from the checkpoint's config (the differing
        keys are named): an unchecked file never chooses the model.
    """
    ckpt = read_checkpoint(Path(checkpoint))
    if config is None and (Path(checkpoint).parent / "config.json").is_file():
        config = Path(checkpoint).parent / "config.json"
    if config is not None:
        check_config_file(Path(config), ckpt.config, Path(checkpoint))
    # An older run's config holds removed keys at their defaults (maestro_common.app.removed)
    # and lacks keys added since: read as it ran (as_current).
    cfg = RunConfig.from_run_config(as_current(ckpt.config)).replace(device="cpu")
    ops = ModelOps(cfg)
    try:
        ops.load(ckpt.arrays)
    except ValueError as err:
        raise ValueError(f"{checkpoint} does not fit the model of its run config: {err}") from err
    return LoadedRun(cfg, ckpt, ops)


def check_config_file(path: Path, checked: dict[str, Any], checkpoint: Path) -> None:
    """A run config file must equal the checksummed config inside ``checkpoint``.

    Raises
    ------
    ValueError
        Naming the file and each key whose value differs (with both values).
    """
    try:
        given = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the run config: {err}") from err
    if not isinstance(given, dict):
        raise ValueError(f"{path}: the run config is not a JSON object")
    keys = sorted(k for k in set(given) | set(checked) if given.get(k) != checked.get(k))
    if keys:
        detail = "; ".join(f"{k}: {given.get(k)!r} there, {checked.get(k)!r} checked" for k in keys)
        raise ValueError(
            f"{path} differs from the checksummed run config inside {checkpoint} in "
            f"{len(keys)} key(s) ({detail}); the model is built only from the checked config: "
            "restore or remove the file (or leave out --config)"
        )


def tier_beta(cfg: RunConfig, beta: float | None = None, tier: int | None = None) -> float:
    """The budget β named by ``beta`` (any β in (0, 1]) or ``tier`` (an index into the tiers)."""
    if (beta is None) == (tier is None):
        raise ValueError("give exactly one of a budget β or a tier index")
    if tier is not None:
        if not 0 <= tier < len(cfg.tiers):
            raise ValueError(
                f"tier must be an index in 0..{len(cfg.tiers) - 1} into the run's "
                f"tier-fractions {list(cfg.tiers)}, got {tier}"
            )
        return cfg.tiers[tier]
    if not 0 < beta <= 1:
        raise ValueError(f"β must be in (0, 1], got {beta}")
    return float(beta)


def load_test_set(
    cfg: RunConfig, test_data: Path | None = None, data_dir: str | None = None, limit: int = 0
) -> ArrayDataset:
    """The test set: ``test_data`` (IDX folder or ``.npz``), else the run's dataset's test split."""
    if test_data is not None:
        test = load_local_dataset(test_data, cfg.dataset, "test")
    else:
        test = load_dataset(cfg.dataset, "test", data_dir or cfg.data_dir or None)
    if limit:
        test = test.subset(torch.arange(min(limit, len(test))))
    return test
