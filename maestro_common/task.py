"""The model and device of a run, built the same way on the server and on every client."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from torch import nn

from maestro_common.config import RunConfig
from maestro_common.data import DATASET_INFO
from maestro_common.decompose import decompose
from maestro_common.layers import set_rank_quantum
from maestro_common.models import build_model
from maestro_common.width import make_width_sliceable


def build_run_model(cfg: RunConfig) -> nn.Module:
    """The run's global model, seeded so every party builds the same one.

    maestro: factored at the initial ranks; fjord, heterofl, fedavg-fit: width-sliceable;
    fedavg-all: the plain dense model. A fresh copy of a per-process template: a client builds
    one per message, and the SVD of decomposition would otherwise run every time.
    """
    return copy.deepcopy(
        _template(
            cfg.method,
            cfg.model,
            cfg.dataset,
            cfg.rank_fraction,
            cfg.seed,
            cfg.conv_factorization,
            cfg.rank_quantum,
        )
    )


@lru_cache(maxsize=8)
def _template(
    method: str,
    model_name: str,
    dataset: str,
    rank_fraction: float,
    seed: int,
    conv_factorization: str,
    rank_quantum: int,
):
    cfg = RunConfig(
        method=method,
        model=model_name,
        dataset=dataset,
        rank_fraction=rank_fraction,
        seed=seed,
        conv_factorization=conv_factorization,
        rank_quantum=rank_quantum,
    )
    info = DATASET_INFO[cfg.dataset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, info.num_classes, info.in_channels, info.image_size)
        if cfg.factored:
            decompose(
                model,
                rank_fraction=cfg.rank_fraction,
                conv_factorization=cfg.conv_factorization,
            )
            set_rank_quantum(model, cfg.rank_quantum)
        elif cfg.width_sliced:
            make_width_sliceable(model, input_shape(cfg))
    return model


def input_shape(cfg: RunConfig) -> tuple[int, int, int]:
    info = DATASET_INFO[cfg.dataset]
    return (info.in_channels, info.image_size, info.image_size)


def resolve_device(cfg: RunConfig) -> torch.device:
    """``auto``: CUDA when present, else CPU. ``cuda`` without a GPU is an error."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available; use device=auto or cpu")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)
