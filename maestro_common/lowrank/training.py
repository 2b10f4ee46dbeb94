"""Local training with ordered dropout and the group lasso, and evaluation at a budget.

Shared by the centralized trainer and the federated client, so both train the same way. Two
objectives:

- *sampled* (a :class:`RankSampler` or :class:`WidthSampler`): one sampled sub-model per step,
  trained on the labels (the paper's per-layer sampler, FjORD's ordered dropout);
- *nested* (a :class:`NestedSampler`): the whole prefix on the labels, plus smaller sub-models
  cut from it (all layers together), also on the labels, as the Maestro authors' training step
  does by default (full pass + sub-model, summed).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.freezing import FreezeSchedule, frozen_parameters, without_grad
from maestro_common.lowrank.layers import low_rank_layers, use_ranks
from maestro_common.lowrank.regularizers import group_lasso
from maestro_common.lowrank.samplers import NestedSampler, RankSampler, WidthSampler
from maestro_common.ml.schedules import SCHEDULES, lr_factor
from maestro_common.width.sliceable import use_width


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of local training.

    The defaults equal the run config's (:func:`maestro_common.app.task.train_settings` builds
    these from a run); the app floor is above this one, so the values are repeated here and a
    test checks that the two agree.
    """

    epochs: int = 1  # passes over the local data
    batch_size: int = 32
    lr: float = 0.02  # the local optimiser's learning rate
    optimizer: str = "sgd"  # sgd (with momentum) or adam, fresh each call
    momentum: float = 0.9
    weight_decay: float = 0.0
    lasso: float = 0.0  # λ of the hierarchical group lasso (0: off)
    max_grad_norm: float = 5.0  # 0: no clipping
    lr_schedule: str = "constant"  # per step over this call's steps (see schedules)
    # optimiser steps of one call (0: ``epochs`` passes over the data); when set it alone decides
    # the call's length: batches are drawn epoch after epoch, a fresh order each, until it is met
    steps: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.epochs < 0 or self.batch_size < 1 or self.steps < 0:
            raise ValueError(
                f"epochs and steps must be ≥ 0 and batch_size ≥ 1, got {self.epochs}, "
                f"{self.steps}, {self.batch_size}"
            )
        if self.lr <= 0 or min(self.lasso, self.weight_decay, self.max_grad_norm) < 0:
            raise ValueError("lr must be > 0; lasso, weight_decay and max_grad_norm must be ≥ 0")


@dataclass(frozen=True)
class TrainResult:
    num_examples: int
    loss: float  # mean task loss over the steps (without the lasso term)
    seconds: float
    steps: int
    # Forward-backward passes per sub-model (its budget fraction), for the cost of a step.
    passes: dict[float, int] = field(default_factory=dict)

    def cost_per_step(self, macs_at: Callable[[float], float], reference_macs: float) -> float:
        """Mean MACs of one step's passes relative to one pass of ``reference_macs``."""
        total = sum(n * macs_at(p) for p, n in self.passes.items())
        return total / max(self.steps, 1) / reference_macs


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """A fresh local optimiser: SGD with momentum, or Adam (β = 0.9, 0.999; L2 weight decay).

    Fresh for every call, so in a federation its state (momentum, Adam's moments) lives for one
    round of one client: local Adam with its state reset each round, as in FedAvg with Adam
    clients. ``momentum`` applies to SGD only.
    """
    if settings.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, gen: torch.Generator):
    # Index slicing of in-memory tensors: far cheaper than a DataLoader for small images.
    order = torch.randperm(len(labels), generator=gen)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield images[idx], labels[idx]


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    sampler: RankSampler | WidthSampler | NestedSampler | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    freezing: FreezeSchedule | None = None,
    period_offset: int = 0,
    step_offset: int = 0,
    total_steps: int = 0,
) -> TrainResult:
    """Train ``model`` in place, one optimiser step per batch, for ``settings.epochs`` passes
    over the data or, when ``settings.steps`` is set, exactly that many steps.

    ``sampler`` gives each step's sub-model(s): per-layer ranks or a width (one sampled
    sub-model), a :class:`NestedSampler` (the prefix plus smaller sub-models, see the module
    docstring), or None (the whole model). The group lasso is added with weight
    ``settings.lasso`` when the model has factored layers (on all of their kept components,
    whatever the step's sub-models). The lr follows ``settings.lr_schedule`` over steps
    ``step_offset`` … of ``total_steps`` (0: this call's). ``freezing`` freezes stages in turn,
    ``freezing.per_epoch`` periods per epoch, epochs counted from ``period_offset`` (the epochs
    trained before this call).
    """
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, settings)
    use_lasso = settings.lasso > 0 and bool(low_rank_layers(model))
    batches = math.ceil(len(labels) / settings.batch_size)
    epochs, limit = settings.epochs, batches * settings.epochs
    if settings.steps > 0:  # a fixed number of steps: as many (partial last) epochs as it takes
        epochs, limit = (math.ceil(settings.steps / batches) if batches else 0), settings.steps
    if total_steps <= 0:
        total_steps = step_offset + limit
    total, steps, start = 0.0, 0, time.perf_counter()
    passes: Counter[float] = Counter()
    frozen: tuple[int, list[torch.nn.Parameter]] | None = None  # (period, its frozen parameters)
    for epoch in range(epochs):
        for batch, (x, y) in enumerate(_batches(images, labels, settings.batch_size, gen)):
            if steps >= limit:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            progress = min((step_offset + steps) / max(total_steps, 1), 1.0)
            for group in opt.param_groups:
                group["lr"] = settings.lr * lr_factor(settings.lr_schedule, progress)
            # The graph is built with this period's factors frozen: backward skips their gradients.
            period = freezing.period(period_offset + epoch, batch, batches) if freezing else 0
            if frozen is None or frozen[0] != period:  # looked up once a period, not a step
                frozen = (period, frozen_parameters(model, freezing, period))
            with without_grad(frozen[1]):
                loss, objective = step_loss(model, x, y, sampler, passes)
                if use_lasso:
                    objective = objective + settings.lasso * group_lasso(model)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            if settings.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            opt.step()
            total += loss.item()
            steps += 1
    return TrainResult(
        num_examples=len(labels),
        loss=total / max(steps, 1),
        seconds=time.perf_counter() - start,
        steps=steps,
        passes=dict(passes),
    )


def step_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sampler: RankSampler | WidthSampler | NestedSampler | None,
    passes: Counter[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(task loss, objective) of one training step's forward passes under ``sampler``: every
    forward pass the step runs (what :meth:`~maestro_common.app.methods.Method.step_macs`
    prices), without the regularizers. ``passes`` counts them by budget fraction."""
    if isinstance(sampler, NestedSampler):
        return nested_loss(model, x, y, sampler, passes)
    if isinstance(sampler, WidthSampler):
        width = sampler.sample()
        with use_width(model, width):
            loss = F.cross_entropy(model(x), y)
        passes[width] += 1
        return loss, loss
    with sampler.step(model) if sampler is not None else nullcontext():
        loss = F.cross_entropy(model(x), y)
    # A per-layer sampler cuts one layer below its cap: counted as one cap pass.
    passes[sampler.beta if sampler is not None else 1.0] += 1
    return loss, loss


def nested_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sampler: NestedSampler,
    passes: Counter[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(task loss of the largest model run, summed objective) of one nested step.

    The prefix and each smaller sub-model learn the labels. The losses are summed, as in the
    authors' code: a sub-model's components are shared with the prefix, so each pass adds its
    own gradient to them. Under the ``split`` rule each pass sees its own part of the batch.
    """
    full, fractions = sampler.plan()
    objective = x.new_zeros(())
    task_loss = None
    # Each pass's examples, the prefix's first. ``split``: each on its own part of the
    # (shuffled) batch (a batch too small to share, an epoch's last, runs every pass on all of
    # it, as the sandwich does). Otherwise the smaller sub-models may see the batch's first
    # ⌈share·B⌉ examples only (its order is already shuffled).
    n = len(fractions)
    if sampler.rule == "split" and fractions and len(y) > n:
        sizes = sampler.split_sizes(len(y), 1 + n)
        xparts, yparts = torch.split(x, sizes), torch.split(y, sizes)
    else:
        k = sampler.sub_batch(len(y))
        xparts, yparts = (x, *(x[:k],) * n), (y, *(y[:k],) * n)
    if full:
        with use_ranks(model, sampler.caps):
            logits = model(xparts[0])
        task_loss = F.cross_entropy(logits, yparts[0])
        objective = objective + task_loss
        passes[sampler.beta] += 1
    for p, xs, ys in zip(fractions, xparts[1:], yparts[1:], strict=True):
        ranks = sampler.ranks_at(p)
        with use_ranks(model, ranks):
            out = model(xs)
        sub = F.cross_entropy(out, ys)
        task_loss = sub if task_loss is None else task_loss
        objective = objective + sub
        passes[p] += 1
    # plan() always runs something.
    assert task_loss is not None
    return task_loss, objective


@torch.no_grad()
def evaluate_metrics(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 1.0,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    ranks: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Mean cross-entropy (``loss``) and ``accuracy`` of the nested sub-model of budget β.

    For token windows (labels (N, T), logits (N, V, T)) both are over every predicted position,
    and ``accuracy-last`` is the accuracy at the last position alone: the next character after
    a full window, the one label per sample that LEAF's Shakespeare task scores.
    ``ranks`` (per factored layer) runs the sub-model of those ranks instead of β's uniform ones.
    """
    model.to(device).eval()
    loss_sum, correct, correct_last = 0.0, 0, 0
    with use_budget(model, beta) if ranks is None else use_ranks(model, dict(ranks)):
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            out = model(x)  # (B, classes) or (B, V, T)
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            hits = out.argmax(1) == y  # (B,) or (B, T)
            correct += hits.sum().item()
            if hits.ndim == 2:
                correct_last += hits[:, -1].sum().item()
    n = max(labels.numel(), 1)
    metrics = {"loss": loss_sum / n, "accuracy": correct / n}
    if labels.ndim == 2:
        metrics["accuracy-last"] = correct_last / max(len(labels), 1)
    return metrics


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 1.0,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    ranks: Mapping[str, int] | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the nested sub-model of budget β
    (:func:`evaluate_metrics`)."""
    m = evaluate_metrics(model, images, labels, beta, batch_size, device, ranks)
    return m["loss"], m["accuracy"]
