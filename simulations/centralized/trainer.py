"""One centralized training run: a method of the registry on all the data, scored at every tier.

The model is the one a federated run of the same run config starts from
(:func:`~maestro_common.app.task.build_run_model`, seeded by ``seed``). Every step is the step
the method's *whole-model* client takes (tier label 1.0: the top tier's budget): its
:meth:`~maestro_common.app.methods.Method.sampler` over the tiers' budgets decides the step's
sub-model(s), so

- ``maestro`` trains its objective (``nested``: the whole model plus the tiers' sub-models;
  ``sampled``: one sub-model per step from ``sampler``);
- ``fjord`` draws one of the tiers' MAC-matched widths per step (FjORD's ordered dropout);
- ``heterofl`` trains the whole width model (no tier trains alone here: its tiers are the
  trained model's width slices);
- ``fedavg-fit`` trains the narrow model of the weakest tier's width;
- ``fedavg-all`` trains the dense model; its rows come with ``svd`` rows, the trained model
  factored by SVD and cut to each tier's rank fraction (the naive alternative to Maestro).

Each epoch calls the shared trainer (:func:`~maestro_common.lowrank.training.train`) once, with a
fresh optimiser, as a federated round does; the run config's ``lr-schedule`` decays the lr per
step over all epochs. A factored method with ``dense-warmup`` > 0 trains the dense model for that
share of the epochs, then factors its trained weights by SVD (the method's ``prepare``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from maestro_common.app.checkpoint import write_checkpoint
from maestro_common.app.codec import model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.cost import matched_width_fn
from maestro_common.app.methods import get_method
from maestro_common.app.task import build_run_model, input_shape, train_settings
from maestro_common.lowrank.accounting import count_macs
from maestro_common.lowrank.shrinking import shrink
from maestro_common.lowrank.training import train
from maestro_common.ml.data import DATASET_INFO, ArrayDataset
from simulations.centralized.data import Data
from simulations.labels import method_label

log = logging.getLogger("maestro.centralized")
DENSE = "fedavg-all"  # the method whose model a dense warm-up trains, and which gets svd rows
TOP = 1.0  # the tier label of the whole-model client whose step centralized training takes


def dense_config(cfg: RunConfig) -> RunConfig:
    """The run config of the dense model ``cfg``'s model starts from (same model and seed)."""
    return RunConfig(
        method=DENSE,
        model=cfg.model,
        model_options=cfg.model_options,
        dataset=cfg.dataset,
        seed=cfg.seed,
    )


def budgets(cfg: RunConfig) -> dict[float, float]:
    """The method's budget at every tier label of ``tier-fractions`` and at label 1.0 (what the
    server evaluates each tier at: a rank fraction or a MAC-matched width)."""
    method = get_method(cfg.method)
    model = build_run_model(cfg)
    matched = matched_width_fn(cfg, model, input_shape(cfg))
    return {b: method.budget(b, cfg.tiers, matched) for b in (*cfg.tiers, TOP)}


def steps_per_epoch(cfg: RunConfig, data: Data) -> int:
    """``local-steps`` when set, else one pass over the training images."""
    if cfg.local_steps:
        return cfg.local_steps
    assert data.train is not None  # the character task needs local-steps (checked by the CLI)
    return -(-len(data.train) // cfg.batch_size)


def epoch_data(cfg: RunConfig, data: Data, seed: int) -> ArrayDataset:
    """One epoch's training data: the images, or ``local-steps`` batches of drawn windows."""
    if data.pool is None:
        assert data.train is not None
        return data.train
    generator = torch.Generator().manual_seed(seed)
    n = cfg.local_steps * cfg.batch_size
    return data.pool.sample(n, generator, DATASET_INFO[cfg.dataset].num_classes)


def save_model(model: nn.Module, cfg: RunConfig, epochs: int, out: Path) -> Path:
    """Save a trained model as a run folder ``out/<run-name>`` (checkpoint.npz, config.json),
    which ``python -m server.export`` evaluates and exports as it does a federated run."""
    folder = out / cfg.name
    path = folder / "checkpoint.npz"
    write_checkpoint(path, epochs, model_arrays(model), cfg.to_run_config())
    (folder / "config.json").write_text(_json(cfg.to_run_config()))
    return path


def _json(values: Mapping) -> str:
    return json.dumps(values, indent=1) + "\n"


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained model and what its training cost."""

    model: nn.Module
    seconds: float
    step_cost: float  # mean over epochs of a step's MACs / one dense pass


def train_model(cfg: RunConfig, epochs: int, data: Data, device: str) -> Trained:
    """Train ``cfg``'s method (its lr, seed and keys) for ``epochs`` epochs on ``data``."""
    method = get_method(cfg.method)
    shape = input_shape(cfg)
    cfg = cfg.replace(num_rounds=epochs)
    torch.manual_seed(cfg.seed)  # anything drawn from torch's global generator (dropout)
    warmup = cfg.warmup_rounds if method.factored else 0
    model = build_run_model(dense_config(cfg) if warmup else cfg)
    dense_macs = count_macs(build_run_model(dense_config(cfg)), shape)
    at = budgets(cfg)
    grid = [at[b] for b in cfg.tiers]
    settings = dataclasses.replace(train_settings(cfg), epochs=1, lr_schedule=cfg.lr_schedule)
    per_epoch = steps_per_epoch(cfg, data)
    seconds, cost = 0.0, 0.0
    for epoch in range(epochs):
        if warmup and epoch == warmup:
            method.prepare(model, shape, cfg)  # SVD of the trained weights: exact at full rank
            log.info("%s seed=%d: factored after %d dense epoch(s)", cfg.method, cfg.seed, epoch)
        dense_phase = epoch < warmup
        seed = cfg.seed * 1000 + epoch
        sampler = None
        if not dense_phase:
            ranks = method.ranks(model)
            sampler = method.sampler(model, cfg, at[TOP], grid, seed, TOP, ranks)
        result = train(
            model,
            *_xy(epoch_data(cfg, data, seed)),
            settings,
            sampler,
            seed=seed,
            device=device,
            freezing=None if dense_phase else method.freezing(cfg),
            period_offset=epoch,
            step_offset=epoch * per_epoch,
            total_steps=epochs * per_epoch,
        )
        seconds += result.seconds
        cost += result.cost_per_step(lambda p: count_macs(model, shape, p), dense_macs)
        shrinking = method.shrinks and cfg.shrink_every and not dense_phase
        if shrinking and (epoch + 1) % cfg.shrink_every == 0:
            kept = shrink(model, cfg.shrink_eps)
            log.info("epoch %d: ranks after shrinking %s", epoch + 1, kept)
        log.info(
            "%s seed=%d epoch %d/%d loss=%.4f (%.1fs)",
            method_label(cfg.to_run_config()),
            cfg.seed,
            epoch + 1,
            epochs,
            result.loss,
            result.seconds,
        )
    return Trained(model, seconds, cost / epochs)


def _xy(ds: ArrayDataset) -> tuple[torch.Tensor, torch.Tensor]:
    return ds.images, ds.labels
