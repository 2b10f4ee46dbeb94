"""Sequential freezing of a factored model by stages (after Hajimolahoseini et al., arXiv
2309.03824, who freeze factors).

Freezing part of a model for a period skips its weight gradients (and, where nothing earlier
needs one, the input gradients below it) while the rest keeps learning; rotating what is frozen
from one period to the next trains every part. Freezing an input-side stage of the whole model
stops backward at the stage's end. A period is one epoch (or a share of it, ``per_epoch``); the
caller offsets epochs by those already done (the federated client by its round), so the rotation
continues across rounds.

Modes:

- ``none``: nothing is frozen.
- ``stage``: every module that holds parameters, dense ones included (first conv, norms,
  classifier), is split into ``groups`` contiguous stages in module order, and in period t every
  parameter of stage (t mod groups) is frozen. A frozen input-side stage needs no gradient at
  all, so backward stops above it; a frozen later stage skips its weight gradients. A model
  without factored layers is never frozen.

``per_epoch`` > 1 splits every epoch into that many periods of (almost) equal batch counts, so the
frozen part changes inside an epoch: with one local epoch per round, every round then trains every
part. (Rotated per round instead, ``stage`` collapsed in the federation: `docs/fast-tiers.md`.)

The rotation order (which stage comes first) is a permutation drawn from ``seed``, so a run is
reproducible by its seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from torch import nn

from maestro_common.lowrank.layers import low_rank_layers

FREEZE_MODES = ("none", "stage")


@dataclass(frozen=True)
class FreezeSchedule:
    """Which stage of a factored model is frozen in each training period."""

    mode: str = "none"  # one of FREEZE_MODES
    groups: int = 2  # stages of mode "stage"
    seed: int = 0  # draws the rotation order
    per_epoch: int = 1  # periods per epoch

    def __post_init__(self) -> None:
        if self.mode not in FREEZE_MODES:
            raise ValueError(f"freeze mode must be one of {FREEZE_MODES}, got {self.mode!r}")
        for name in ("groups", "per_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"freeze {name.replace('_', ' ')} must be an int ≥ 1, got {value!r}"
                )

    def period(self, epoch: int, batch: int, batches: int) -> int:
        """The period of batch ``batch`` (of ``batches``) in epoch ``epoch`` (counted over the
        whole training, rounds before included). An epoch of fewer batches than ``per_epoch``
        has one period a batch, numbered consecutively, so its batches still rotate."""
        if not 0 <= batch < batches:
            raise ValueError(f"batch must be in [0, {batches}), got {batch}")
        parts = min(self.per_epoch, batches)
        return epoch * self.per_epoch + batch * parts // batches

    def cycle(self, model: nn.Module) -> int:
        """Periods after which the frozen parts of ``model`` repeat (1 without freezing)."""
        if self.mode == "none" or not low_rank_layers(model):
            return 1
        return min(self.groups, len(_stage_units(model)))

    def _order(self, n: int) -> list[int]:
        return [int(i) for i in np.random.default_rng(self.seed).permutation(n)]

    def frozen(self, model: nn.Module, period: int) -> dict[str, list[str]]:
        """Per module (qualified name), the names of its parameters frozen in ``period``: every
        parameter of the stage's modules."""
        if period < 0:
            raise ValueError(f"period must be ≥ 0, got {period}")
        if self.mode == "none" or not low_rank_layers(model):
            return {}
        units = _stage_units(model)
        stages = min(self.groups, len(units))
        stage = self._order(stages)[period % stages]
        chunks = np.array_split(np.arange(len(units)), stages)
        return {name: params for i in chunks[stage] for name, params in units[i]}


NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _stage_units(model: nn.Module) -> list[list[tuple[str, list[str]]]]:
    """The modules holding parameters, in registration order (forward order for this project's
    models), as units that a stage boundary never splits: a norm stays with the layer before it.

    So no stage starts with a norm whose input needs no gradient. Besides being the natural cut,
    this avoids a crash: torch 2.13's CPU GroupNorm backward segfaults when its input is
    channels-last and needs no gradient while its weight does (the Tucker ResNet-18's convs
    give channels-last outputs)."""
    units: list[list[tuple[str, list[str]]]] = []
    for name, module in model.named_modules():
        params = [p for p, _ in module.named_parameters(recurse=False)]
        if not params:
            continue
        if isinstance(module, NORMS) and units:
            units[-1].append((name, params))
        else:
            units.append([(name, params)])
    return units


def frozen_parameters(
    model: nn.Module, schedule: FreezeSchedule | None, period: int
) -> list[nn.Parameter]:
    """The parameters of ``model`` that ``schedule`` freezes in ``period`` (none without one)."""
    if schedule is None:
        return []
    return [
        getattr(model.get_submodule(name), param)
        for name, names in schedule.frozen(model, period).items()
        for param in names
    ]


@contextmanager
def without_grad(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """``params`` frozen for the duration: ``requires_grad = False``, so autograd computes no
    gradient for them and the optimizer (which skips parameters whose ``grad`` is None) leaves them
    bit-identical; their previous ``requires_grad`` flags are restored on exit."""
    previous = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        yield
    finally:
        for p, flag in zip(params, previous, strict=True):
            p.requires_grad_(flag)


@contextmanager
def freeze(model: nn.Module, schedule: FreezeSchedule | None, period: int) -> Iterator[None]:
    """Train ``model`` with the parameters ``schedule`` picks for ``period`` frozen
    (:func:`without_grad`)."""
    with without_grad(frozen_parameters(model, schedule, period)):
        yield
