"""How a figure is taken: the clocks, the timer (median after warm-up, interleaved calls), one
train step or inference call to time, and :class:`Row`, one measured configuration."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.merging import time_calls
from simulations.bench.variants import IMAGE, Geometry

CLOCKS: dict[str, Callable[[], float]] = {
    # CPU time of the calling thread: with one torch thread all compute runs on it, so this is
    # the step's own cost, barely moved by other processes sharing the cores (on an idle machine
    # it equals wall time).
    "cpu": time.thread_time,
    "wall": time.perf_counter,
}


@dataclass
class Timer:
    """Median of ``repeats`` timed calls after ``warmup`` untimed ones, in ms."""

    warmup: int = 2
    repeats: int = 5
    clock: str = "cpu"  # a key of CLOCKS

    def __call__(self, fn: Callable[[], Any]) -> float:
        return self.interleaved([fn])[0]

    def interleaved(self, fns: Sequence[Callable[[], Any]]) -> list[float]:
        """The median ms of each of ``fns``, their calls interleaved round-robin, so that a load
        change on the machine hits all of them alike (their ratios are the fairest we take)."""
        seconds = time_calls(
            fns, torch.device("cpu"), self.repeats, self.warmup, clock=CLOCKS[self.clock]
        )
        return [s * 1e3 for s in seconds]

    def paired(self, batch: int) -> Timer:
        """The timer for a comparison at inference ``batch``: 5× the repeats at batch 1, whose
        sub-millisecond calls are the noisiest."""
        return replace(self, repeats=self.repeats * (5 if batch == 1 else 1))


def train_step_fn(
    model: nn.Module,
    batch: int,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    geo: Geometry = IMAGE,
) -> Callable[[], None]:
    """One SGD step (forward, backward, update) on a fixed random batch of ``geo``'s inputs,
    inside ``context()``."""
    x, y = geo.batch(batch, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = objective or (lambda m, xb, yb: F.cross_entropy(m(xb), yb))
    model.train()

    def step() -> None:
        with context():
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_fn(
    model: nn.Module,
    batch: int,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    geo: Geometry = IMAGE,
) -> Callable[[], None]:
    x = geo.inputs(batch, torch.Generator().manual_seed(1))
    model.eval()

    def run() -> None:
        with torch.no_grad(), context():
            model(x)

    return run


@dataclass
class Row:
    """One measured configuration; times in ms, ratios against the dense row of its group."""

    group: str  # model or layer name
    variant: str  # dense, svd, tucker, width, ...
    beta: float
    macs: int
    train_ms: float | None = None
    infer1_ms: float | None = None
    infer64_ms: float | None = None
    merged1_ms: float | None = None
    merged64_ms: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
