"""Ordered-dropout rank samplers: which rank prefix each layer uses in one training step.

A sampler returns a plain ``{layer name: rank}`` dict that the caller hands to
:func:`maestro_common.lowrank.layers.use_ranks`; nothing is threaded through ``forward``. Every
sampler honours a budget β: layer l never uses more than ⌈β·r_l⌉ components.

- ``maestro`` (Maestro, Alg. 1): one pair (layer i, rank b) per step, P(i) ∝ cap_i, b uniform in
  1..cap_i; layer i runs at b and all other layers at their cap.
- ``uniform`` (FjORD's ordered dropout): one fraction p drawn uniformly from a grid (values ≤ β),
  every layer at ⌈p·r_l⌉.
- ``none``: every layer at its cap (plain training of the budget's sub-model).

Width baselines (FjORD, HeteroFL) use :class:`WidthSampler`: one width p per step from a grid up
to the client's width. Every sampler's :meth:`step` is the context a training step runs in.

Every sampler also states what one step costs: :meth:`pass_mix` lists the forward passes a step
runs, each as (expected passes per step per example, the context that runs it), derived from the
same rules that draw the steps, so that a cost counted from it cannot drift from training
(:func:`maestro_common.lowrank.accounting.step_macs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from maestro_common.lowrank.layers import budget_rank, use_ranks
from maestro_common.width.sliceable import use_width

SAMPLER_NAMES = ("maestro", "uniform", "none")
DEFAULT_GRID = (0.2, 0.4, 0.6, 0.8, 1.0)
# One kind of forward pass of a training step: (expected passes per step and per example of the
# batch, the context the model runs that pass in).
PassMix = list[tuple[float, Callable[[nn.Module], AbstractContextManager[None]]]]


def _at_ranks(ranks: Mapping[str, int]) -> Callable[[nn.Module], AbstractContextManager[None]]:
    return lambda model: use_ranks(model, dict(ranks))


@dataclass
class RankSampler:
    """Base sampler over layers of kept ranks ``ranks`` (name -> r_l) at budget ``beta``."""

    ranks: Mapping[str, int]
    beta: float = 1.0
    seed: int = 0
    caps: dict[str, int] = field(init=False)
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name, r in self.ranks.items():
            if r < 1:
                raise ValueError(f"layer {name!r} has rank {r}; ranks must be ≥ 1")
        self.caps = {n: budget_rank(r, self.beta) for n, r in self.ranks.items()}
        self.rng = np.random.default_rng(self.seed)

    def sample(self) -> dict[str, int]:
        """The per-layer ranks of the next step."""
        return dict(self.caps)

    def step(self, model: nn.Module) -> AbstractContextManager[None]:
        """The context of the next training step: ``model`` at freshly sampled ranks."""
        return use_ranks(model, self.sample())

    def pass_mix(self) -> PassMix:
        """The forward passes of one step (module docstring): one pass at the caps."""
        return [(1.0, _at_ranks(self.caps))]


@dataclass
class NoSampler(RankSampler):
    """Every layer at its budget cap."""


@dataclass
class MaestroSampler(RankSampler):
    """One (layer, rank) pair per step, P(layer) ∝ its cap, rank uniform in 1..cap.

    Its :meth:`pass_mix` is the base one, a pass at the caps: an upper bound, since one layer of
    the step runs below its cap (the same convention as :class:`TrainResult`'s pass counts).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._names = list(self.caps)
        caps = np.array([self.caps[n] for n in self._names], dtype=np.float64)
        self._p = caps / caps.sum() if len(caps) else caps

    def sample(self) -> dict[str, int]:
        ranks = dict(self.caps)
        if not self._names:
            return ranks
        i = int(self.rng.choice(len(self._names), p=self._p))
        name = self._names[i]
        ranks[name] = int(self.rng.integers(1, self.caps[name] + 1))
        return ranks


@dataclass
class UniformSampler(RankSampler):
    """One fraction p per step from ``grid`` (values ≤ β), every layer at min(⌈p·r_l⌉, cap)."""

    grid: Sequence[float] = DEFAULT_GRID

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [p for p in self.grid if not 0.0 < p <= 1.0]
        if bad or not self.grid:
            raise ValueError(f"grid values must be in (0, 1] and non-empty, got {list(self.grid)}")
        allowed = sorted({p for p in self.grid if p <= self.beta + 1e-9})
        # A budget below the whole grid still trains: its one option is β itself.
        self._grid = allowed or [self.beta]

    def sample(self) -> dict[str, int]:
        return self._at(float(self._grid[int(self.rng.integers(len(self._grid)))]))

    def _at(self, p: float) -> dict[str, int]:
        return {n: min(budget_rank(self.ranks[n], p), cap) for n, cap in self.caps.items()}

    def pass_mix(self) -> PassMix:
        """One pass per step at a fraction drawn uniformly from the allowed grid."""
        share = 1.0 / len(self._grid)
        return [(share, _at_ranks(self._at(p))) for p in self._grid]


@dataclass
class WidthSampler:
    """One width p per step, uniform over ``grid`` values ≤ ``max_width`` (FjORD's OD).

    A grid of one value trains a static width (HeteroFL).
    """

    grid: Sequence[float]
    max_width: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.grid or any(not 0 < p <= 1 for p in self.grid):
            raise ValueError(f"grid values must be in (0, 1] and non-empty, got {list(self.grid)}")
        self._grid = sorted({p for p in self.grid if p <= self.max_width + 1e-9}) or [
            self.max_width
        ]
        self.rng = np.random.default_rng(self.seed)

    def sample(self) -> float:
        return float(self._grid[int(self.rng.integers(len(self._grid)))])

    def step(self, model: nn.Module) -> AbstractContextManager[None]:
        return use_width(model, self.sample())

    def pass_mix(self) -> PassMix:
        """One pass per step at a width drawn uniformly from the allowed grid."""
        share = 1.0 / len(self._grid)
        return [(share, lambda model, p=p: use_width(model, p)) for p in self._grid]


def make_sampler(
    name: str,
    ranks: Mapping[str, int],
    beta: float = 1.0,
    seed: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
) -> RankSampler:
    """Build a sampler by name: ``maestro``, ``uniform`` or ``none``."""
    if name == "maestro":
        return MaestroSampler(ranks, beta, seed)
    if name == "uniform":
        return UniformSampler(ranks, beta, seed, grid=grid)
    if name == "none":
        return NoSampler(ranks, beta, seed)
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLER_NAMES)}")


SUBMODEL_RULES = ("sandwich", "random", "smallest", "alternate", "split", "none")


@dataclass
class NestedSampler:
    """The sub-models of one nested training step (the default objective of ``maestro``).

    Every step trains the whole received prefix (budget ``beta``) on the labels with probability
    ``full_pass_share``, plus smaller sub-models cut from it, *all layers together* at fractions
    of the tier grid below β (a sub-model at fraction p keeps min(⌈p·R_l⌉, ⌈β·R_l⌉) components of
    layer l, R_l its full kept rank). So every deployed tier model is trained as it is deployed.
    ``rule`` picks the smaller sub-models (the "sandwich" rule of slimmable networks, Yu & Huang,
    ICCV 2019: the largest is the prefix itself):

    - ``sandwich``: the smallest grid fraction and one drawn uniformly from those in between;
    - ``random``: one fraction drawn uniformly from the grid values below β;
    - ``smallest``: the smallest only;
    - ``alternate``: one pass per step: the prefix on even steps (the first, the third, …), one
      fraction drawn uniformly from those below β on odd steps (``full_pass_share`` does not
      apply); about one pass of the prefix per step, every deployed sub-model still trained as
      deployed;
    - ``split``: the sandwich's passes on disjoint, near-equal parts of each batch (the prefix
      on one part, the smallest and the drawn middle sub-model on the others): about one pass of
      data per step, every pass still run every step (``full_pass_share`` and
      ``sub_batch_share`` do not apply and are refused);
    - ``none``: no sub-model (the prefix alone: plain training of the tier's model).

    ``sub_batch_share`` runs the smaller sub-models on the first ⌈share·B⌉ examples of a batch of
    B only (the prefix always sees the whole batch): their cost shrinks by the share.

    Parameters
    ----------
    ranks:
        Full kept rank R_l of every factored layer (the global model's, not the prefix's).
    beta:
        The client's budget: the prefix it trains and the largest sub-model.
    grid:
        The run's tier fractions.
    caps:
        The prefix's ranks when known (a federated client's received ranks); default ⌈β·R_l⌉.
    """

    ranks: Mapping[str, int]
    beta: float = 1.0
    grid: Sequence[float] = DEFAULT_GRID
    rule: str = "sandwich"
    full_pass_share: float = 1.0
    seed: int = 0
    caps: Mapping[str, int] | None = None
    sub_batch_share: float = 1.0
    rng: np.random.Generator = field(init=False, repr=False)
    _steps: int = field(init=False, default=0, repr=False)
    _splits: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if self.rule not in SUBMODEL_RULES:
            raise ValueError(
                f"unknown sub-model rule {self.rule!r}; allowed: {', '.join(SUBMODEL_RULES)}"
            )
        if not 0.0 <= self.full_pass_share <= 1.0:
            raise ValueError(f"full_pass_share must be in [0, 1], got {self.full_pass_share}")
        if not 0.0 < self.sub_batch_share <= 1.0:
            raise ValueError(f"sub_batch_share must be in (0, 1], got {self.sub_batch_share}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")
        if self.rule == "split" and (self.full_pass_share < 1.0 or self.sub_batch_share < 1.0):
            raise ValueError(
                "sub-model rule 'split' shares each batch between its passes itself: "
                f"full_pass_share and sub_batch_share must stay 1, got {self.full_pass_share} "
                f"and {self.sub_batch_share}"
            )
        bad = [p for p in self.grid if not 0.0 < p <= 1.0]
        if bad or not self.grid:
            raise ValueError(f"grid values must be in (0, 1] and non-empty, got {list(self.grid)}")
        for name, r in self.ranks.items():
            if r < 1:
                raise ValueError(f"layer {name!r} has rank {r}; ranks must be ≥ 1")
        if self.caps is None:
            self.caps = {n: budget_rank(r, self.beta) for n, r in self.ranks.items()}
        elif set(self.caps) != set(self.ranks):
            raise ValueError(f"caps name layers {sorted(self.caps)}, ranks {sorted(self.ranks)}")
        self.caps = dict(self.caps)
        # Fractions strictly below β whose sub-model differs from the prefix.
        self.below = sorted(
            {p for p in self.grid if p < self.beta - 1e-9 and self.ranks_at(p) != self.caps}
        )
        self.rng = np.random.default_rng(self.seed)

    def ranks_at(self, fraction: float) -> dict[str, int]:
        """Per-layer ranks of the sub-model at grid fraction p (all layers cut together)."""
        return {n: min(budget_rank(r, fraction), self.caps[n]) for n, r in self.ranks.items()}

    def sub_batch(self, batch: int) -> int:
        """How many examples of a batch of ``batch`` the smaller sub-models run on."""
        return max(1, min(batch, math.ceil(self.sub_batch_share * batch - 1e-9)))

    def split_sizes(self, batch: int, passes: int) -> list[int]:
        """``split``: how many examples of a batch of ``batch`` each of a step's ``passes``
        passes gets (the prefix's first): near-equal contiguous parts, the larger ones rotating
        between the passes step by step, so each pass sees batch/passes examples on average."""
        if passes < 1 or batch < passes:
            raise ValueError(f"cannot split a batch of {batch} between {passes} passes")
        base, extra = divmod(batch, passes)
        sizes = [base + (i < extra) for i in range(passes)]
        shift, self._splits = self._splits % passes, self._splits + 1
        return sizes[shift:] + sizes[:shift]

    def plan(self) -> tuple[bool, list[float]]:
        """The next step: (whether the prefix runs, fractions of the smaller sub-models)."""
        if self.rule == "alternate":
            step, self._steps = self._steps, self._steps + 1
            if step % 2 == 0 or not self.below:
                return True, []
            return False, [float(self.below[int(self.rng.integers(len(self.below)))])]
        full = self.full_pass_share >= 1.0 or bool(self.rng.random() < self.full_pass_share)
        subs: list[float] = []
        if self.below and self.rule != "none":
            if self.rule in ("sandwich", "split", "smallest"):
                subs.append(self.below[0])
            if self.rule == "random":
                subs.append(float(self.below[int(self.rng.integers(len(self.below)))]))
            elif self.rule in ("sandwich", "split") and len(self.below) > 1:
                middle = self.below[1:]
                subs.append(float(middle[int(self.rng.integers(len(middle)))]))
        if not full and not subs:
            full = True  # a step always trains something
        return full, subs

    def expected_plan(self) -> tuple[float, dict[float, float]]:
        """What :meth:`plan` runs per step in expectation, by the same rules: (the prefix's
        passes, {fraction: passes of its sub-model}); an ``alternate`` schedule's long-run mean."""
        below = self.below
        if self.rule == "alternate":
            if not below:
                return 1.0, {}
            return 0.5, {p: 0.5 / len(below) for p in below}
        if not below or self.rule == "none":
            return 1.0, {}  # no sub-model: the prefix runs every step, whatever the share
        subs: dict[float, float] = {}
        if self.rule == "random":
            subs = {p: 1.0 / len(below) for p in below}
        else:
            subs[below[0]] = 1.0
            if self.rule in ("sandwich", "split") and len(below) > 1:
                subs.update({p: 1.0 / (len(below) - 1) for p in below[1:]})
        return min(self.full_pass_share, 1.0), subs

    def pass_mix(self) -> PassMix:
        """The forward passes of one step per example of the batch: the prefix's, then each
        sub-model's scaled by ``sub_batch_share`` (a batch's ⌈share·B⌉ rounds it up); under
        ``split`` each pass on its share of the batch, 1 / (passes a step)."""
        full, subs = self.expected_plan()
        sub_share = self.sub_batch_share
        if self.rule == "split":
            parts = full + sum(subs.values())  # the passes of a step, each on its part
            full, sub_share = full / parts, 1.0 / parts
        mix: PassMix = []
        if full > 0:
            mix.append((full, _at_ranks(self.caps or {})))
        for p, n in subs.items():
            mix.append((n * sub_share, _at_ranks(self.ranks_at(p))))
        return mix
