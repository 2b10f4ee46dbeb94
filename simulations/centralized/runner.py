"""Train one (method, seed), score it at every tier; choose a method's lr on validation."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from maestro_common.app.config import RunConfig
from maestro_common.app.task import input_shape
from maestro_common.lowrank.accounting import count_macs, count_params
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.training import evaluate_metrics
from maestro_common.ml.data import ArrayDataset
from simulations.centralized.data import Data
from simulations.centralized.rows import Row
from simulations.centralized.trainer import DENSE, Trained, budgets, save_model, train_model
from simulations.labels import method_label

log = logging.getLogger("maestro.centralized")
SVD = "svd"  # the label of a dense model's SVD truncations


def run_name(cfg: RunConfig) -> str:
    """The folder of a saved model: the method's label and the seed."""
    return f"{method_label(cfg.to_run_config())}-seed{cfg.seed}"


def _score(model: nn.Module, data: ArrayDataset | None, budget: float, device: str) -> dict:
    if data is None:
        return {}
    return evaluate_metrics(model, data.images, data.labels, budget, device=device)


def tier_rows(
    cfg: RunConfig,
    trained: Trained,
    data: Data,
    device: str,
    epochs: int,
    label: str,
    at: dict[float, float],
) -> list[Row]:
    """One row per tier label, the model evaluated at ``at[β]`` (the method's budget)."""
    shape = input_shape(cfg)
    model = trained.model
    rows = []
    for beta in cfg.tiers:
        budget = at[beta]
        test = _score(model, data.test, budget, device)
        val = _score(model, data.val, budget, device)
        rows.append(
            Row(
                model=cfg.model,
                method=label,
                seed=cfg.seed,
                beta=beta,
                accuracy=test["accuracy"],
                loss=test["loss"],
                params=count_params(model, budget),
                macs=count_macs(model, shape, budget),
                train_seconds=trained.seconds,
                lr=cfg.lr,
                step_cost=trained.step_cost,
                width=budget,
                val_accuracy=val.get("accuracy"),
                accuracy_last=test.get("accuracy-last"),
                epochs=epochs,
                run=run_name(cfg),
            )
        )
        log.info("%s seed=%d β=%g acc=%.4f", label, cfg.seed, beta, rows[-1].accuracy)
    return rows


def run_one(
    cfg: RunConfig, epochs: int, data: Data, device: str, out: Path | None = None
) -> list[Row]:
    """Train ``cfg`` (method, seed, lr and every other key) and score it at each tier.

    ``fedavg-all`` also gets ``svd`` rows: its trained model factored by SVD (exact at full
    rank) and cut to each tier's rank fraction. With ``out`` the model is saved as
    ``out/<label>-seed<seed>/`` (before any SVD).
    """
    trained = train_model(cfg, epochs, data, device)
    saved = cfg.replace(run_name=run_name(cfg), num_rounds=epochs)
    if out is not None:
        save_model(trained.model, saved, epochs, out)
    label = method_label(cfg.to_run_config())
    rows = tier_rows(saved, trained, data, device, epochs, label, budgets(cfg))
    if cfg.method == DENSE:
        decompose(trained.model)
        at = {b: b for b in cfg.tiers}
        rows += tier_rows(saved, trained, data, device, epochs, SVD, at)
    return rows


def choose_lr(
    cfg: RunConfig,
    lrs: Sequence[float],
    epochs: int,
    data: Data,
    device: str,
    select_seed: int = 0,
    select_train: int = 0,
) -> tuple[float, dict[float, float]]:
    """The lr of ``lrs`` whose model scores best on the validation split, and every lr's score.

    Each trial trains ``epochs`` epochs on seed ``select_seed`` (whatever seeds this process
    trains, so seeds split over processes share one trial), on the first ``select_train``
    training images (0: all); its score is the mean validation accuracy over the tiers. Dense
    (``fedavg-all``) is judged on its own model, not its SVD truncations.
    """
    if data.val is None:
        raise ValueError("choosing the lr needs a validation split: set val-size > 0")
    trial = Data(test=data.val, train=data.train, pool=data.pool).training_subset(select_train)
    label = method_label(cfg.to_run_config())
    scores = {}
    for lr in lrs:
        rows = run_one(cfg.replace(lr=lr, seed=select_seed), epochs, trial, device)
        scores[lr] = statistics.mean(r.accuracy for r in rows if r.method == label)
        log.info("lr selection %s lr=%g: mean validation accuracy %.4f", label, lr, scores[lr])
    return max(scores, key=lambda lr: scores[lr]), scores
