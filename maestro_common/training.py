"""Local training with ordered dropout and the group lasso, and evaluation at a budget.

Shared by the centralized trainer and the federated client, so both train the same way.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.budget import use_budget
from maestro_common.config import RunConfig
from maestro_common.freezing import FreezeSchedule, freeze
from maestro_common.layers import low_rank_layers
from maestro_common.regularizers import group_lasso
from maestro_common.samplers import RankSampler, WidthSampler

# The one source of hyper-parameter defaults: the run config's (the centralized CLI takes these).
_RUN = RunConfig()


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of local training; defaults are the run config's."""

    epochs: int = _RUN.local_epochs  # passes over the local data
    batch_size: int = _RUN.batch_size
    lr: float = _RUN.lr  # SGD learning rate
    momentum: float = _RUN.momentum
    weight_decay: float = _RUN.weight_decay
    lasso: float = _RUN.lasso  # λ of the hierarchical group lasso (0: off)
    max_grad_norm: float = _RUN.max_grad_norm  # 0: no clipping

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(
                f"epochs must be ≥ 0 and batch_size ≥ 1, got {self.epochs}, {self.batch_size}"
            )
        if self.lr <= 0 or self.lasso < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("lr must be > 0; lasso, weight_decay and max_grad_norm must be ≥ 0")


@dataclass(frozen=True)
class TrainResult:
    num_examples: int
    loss: float  # mean task loss over the steps (without the lasso term)
    seconds: float
    steps: int


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
    sampler: RankSampler | WidthSampler | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    freezing: FreezeSchedule | None = None,
    period_offset: int = 0,
) -> TrainResult:
    """Train ``model`` in place with one sampled sub-model per step.

    ``sampler`` gives each step's sub-model: per-layer ranks or a width (None: the whole model).
    The group lasso is added with weight ``settings.lasso`` when the model has factored layers.
    ``freezing`` freezes factors in sequence, one period per epoch, counted from
    ``period_offset`` (the epochs trained before this call).
    """
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    use_lasso = settings.lasso > 0 and bool(low_rank_layers(model))
    total, steps, start = 0.0, 0, time.perf_counter()
    for epoch in range(settings.epochs):
        for x, y in _batches(images, labels, settings.batch_size, gen):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # The graph is built with this period's factors frozen: backward skips their gradients.
            with (
                freeze(model, freezing, period_offset + epoch),
                sampler.step(model) if sampler is not None else nullcontext(),
            ):
                loss = F.cross_entropy(model(x), y)
                objective = loss + settings.lasso * group_lasso(model) if use_lasso else loss
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
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 1.0,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the nested sub-model of budget β."""
    model.to(device).eval()
    loss_sum, correct = 0.0, 0
    with use_budget(model, beta):
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            out = model(x)
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    n = max(len(labels), 1)
    return loss_sum / n, correct / n
