"""The plain app's settings: the maestro-fl run config's keys it shares, and its dense model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from maestro_common.app.config import RunConfig
from maestro_common.ml.data import DATASET_INFO
from maestro_common.ml.models import build_model

OWN_KEYS = ("output-file",)  # keys of this app alone


def run_config(values: Mapping[str, Any]) -> RunConfig:
    """The maestro-fl RunConfig of the shared keys (same partition, data and training settings)."""
    shared = {k: v for k, v in values.items() if k not in OWN_KEYS}
    return RunConfig.from_run_config({**shared, "method": "fedavg-all"})


def model_for(cfg: RunConfig) -> nn.Module:
    """The dense model, initialised from the run's seed."""
    info = DATASET_INFO[cfg.dataset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model, info.num_classes, info.in_channels, info.image_size)
