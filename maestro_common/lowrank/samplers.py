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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from maestro_common.lowrank.layers import budget_rank, use_ranks
from maestro_common.width.sliceable import use_width

SAMPLER_NAMES = ("maestro", "uniform", "none")
DEFAULT_GRID = (0.2, 0.4, 0.6, 0.8, 1.0)


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


@dataclass
class NoSampler(RankSampler):
    """Every layer at its budget cap."""


@dataclass
class MaestroSampler(RankSampler):
    """One (layer, rank) pair per step, P(layer) ∝ its cap, rank uniform in 1..cap."""

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
        p = float(self._grid[int(self.rng.integers(len(self._grid)))])
        return {n: min(budget_rank(self.ranks[n], p), cap) for n, cap in self.caps.items()}


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


SUBMODEL_RULES = ("sandwich", "random", "smallest", "none")


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
    - ``none``: no sub-model (the prefix alone: plain training of the tier's model).

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
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rule not in SUBMODEL_RULES:
            raise ValueError(
                f"unknown sub-model rule {self.rule!r}; allowed: {', '.join(SUBMODEL_RULES)}"
            )
        if not 0.0 <= self.full_pass_share <= 1.0:
            raise ValueError(f"full_pass_share must be in [0, 1], got {self.full_pass_share}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")
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

    def plan(self) -> tuple[bool, list[float]]:
        """The next step: (whether the prefix runs, fractions of the smaller sub-models)."""
        full = self.full_pass_share >= 1.0 or bool(self.rng.random() < self.full_pass_share)
        subs: list[float] = []
        if self.below and self.rule != "none":
            if self.rule in ("sandwich", "smallest"):
                subs.append(self.below[0])
            if self.rule == "random":
                subs.append(float(self.below[int(self.rng.integers(len(self.below)))]))
            elif self.rule == "sandwich" and len(self.below) > 1:
                middle = self.below[1:]
                subs.append(float(middle[int(self.rng.integers(len(middle)))]))
        if not full and not subs:
            full = True  # a step always trains something
        return full, subs
