"""Sequential freezing of factored layers (Hajimolahoseini et al., arXiv 2309.03824).

A factored layer has two or three factors where the dense layer had one weight, so its backward
pass computes two or three weight gradients. Freezing part of the factors for a period skips their
weight gradients (and, where nothing earlier needs one, the input gradients below them) while the
rest keeps learning; rotating what is frozen from one period to the next trains every factor.

Freezing factors alone saves little while the dense layers below them train: backward must still
carry the input gradient through every factored layer down to the first conv. On this project's
CPU, freezing *every* factor of the CNN and ResNet-18 (the dense layers training) cut a train
step by only 12–33 % (``docs/performance.md``), so a rotation that freezes half of them cannot
reach much. Freezing an input-side stage of the whole model instead (``stage``) stops backward
at the stage's end. A period is one epoch (or a share of it, ``per_epoch``); the caller offsets
epochs by those already done (the federated client by its round), so the rotation continues
across rounds.

Modes:

- ``none``: nothing is frozen.
- ``factor``: in period t every factored layer freezes one factor, the (t mod F)-th of its factors
  in forward order (``v`` then ``u``; ``v``, ``core`` then ``u`` for Tucker), so each period one
  of the two or three weight gradients of every layer is skipped.
- ``layer``: the factored layers are split into ``groups`` contiguous groups in module order, and
  in period t the whole of group (t mod groups) is frozen.
- ``stage``: every module that holds parameters, dense ones included (first conv, norms,
  classifier), is split into ``groups`` contiguous stages in module order, and in period t every
  parameter of stage (t mod groups) is frozen. A frozen input-side stage needs no gradient at
  all, so backward stops above it; a frozen later stage skips its weight gradients.

``per_epoch`` > 1 splits every epoch into that many periods of (almost) equal batch counts, so the
frozen part changes inside an epoch: with one local epoch per round, every round then trains every
part. (Rotated per round instead, ``stage`` collapsed in the federation: `docs/fast-tiers.md`.)

The rotation order (which factor or group comes first) is a permutation drawn from ``seed``, so a
run is reproducible by its seed. Except in ``stage`` mode, dense layers (the first conv, the
classifier, norms) always train.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from torch import nn

from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers

FREEZE_MODES = ("none", "factor", "layer", "stage")


def _factor_names(layer: LowRankLayer) -> list[str]:
    # Forward order: the factor applied to the input first comes first.
    return [name for name in ("v", "core", "u") if name in layer.factor_axes()]


@dataclass(frozen=True)
class FreezeSchedule:
    """Which factors of a factored model are frozen in each training period."""

    mode: str = "none"  # one of FREEZE_MODES
    groups: int = 2  # layer groups of mode "layer", stages of mode "stage"
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
        layers = low_rank_layers(model)
        if self.mode == "none" or not layers:
            return 1
        if self.mode == "factor":
            return math.lcm(*(len(_factor_names(layer)) for layer in layers.values()))
        parts = len(_stage_units(model)) if self.mode == "stage" else len(layers)
        return min(self.groups, parts)

    def _order(self, n: int) -> list[int]:
        return [int(i) for i in np.random.default_rng(self.seed).permutation(n)]

    def frozen(self, model: nn.Module, period: int) -> dict[str, list[str]]:
        """Per module (qualified name), the names of its parameters frozen in ``period``: factors
        of factored layers, and in ``stage`` mode every parameter of the stage's modules."""
        if period < 0:
            raise ValueError(f"period must be ≥ 0, got {period}")
        layers = low_rank_layers(model)
        if self.mode == "none" or not layers:
            return {}
        if self.mode == "stage":
            return self._stage(model, period)
        if self.mode == "factor":
            out = {}
            for name, layer in layers.items():
                factors = _factor_names(layer)
                out[name] = [factors[self._order(len(factors))[period % len(factors)]]]
            return out
        names = list(layers)
        groups = min(self.groups, len(names))
        group = self._order(groups)[period % groups]
        chunks = np.array_split(np.arange(len(names)), groups)
        return {names[i]: _factor_names(layers[names[i]]) for i in chunks[group]}

    def _stage(self, model: nn.Module, period: int) -> dict[str, list[str]]:
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
