"""What a training method means, in one object per method, and the registry of methods.

The server and every client call the same :class:`Method` object, so they cannot disagree on
what a tier receives, how received arrays are loaded or at which budget a sub-model runs. A new
method is one subclass and one entry in :data:`METHODS`.

Budgets. A tier is named by its label β (a rank fraction). :meth:`Method.budget` turns the label
into what the method trains: a rank fraction (Maestro) or a width (the FjORD / HeteroFL
baselines, matched to Maestro's MACs at β). The tier's sub-model is the global model run at that
budget. A model loaded from the arrays a tier *received* runs the same sub-model at
:meth:`Method.loaded_budget`: 1.0 for Maestro, whose received factors are already cut to the
budget, and the budget itself for width and dense models, which keep their full shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import numpy as np
from torch import nn

from maestro_common.app.codec import load_arrays, load_leading_blocks, prefix_axes
from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.lowrank.accounting import step_macs
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.freezing import FreezeSchedule
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.samplers import NestedSampler, RankSampler, WidthSampler, make_sampler
from maestro_common.lowrank.spectral import Pair, SpectralPlan
from maestro_common.ml.index_sets import IndexPlan
from maestro_common.ml.prefix import budget_shapes, state_key
from maestro_common.width.rolling import RollingPlan, rolling_groups
from maestro_common.width.sliceable import make_width_sliceable, width_shapes

Shapes = dict[str, tuple[int, ...]]
Shape = Sequence[int]
Grid = Sequence[float]
Sampler = RankSampler | WidthSampler | NestedSampler | None
# The widest width of the run's model whose MACs fit the MAC-reference method's MACs at a
# tier label β.
MatchedWidth = Callable[[float], float]


class Method:
    """One training method: the base behaviour is a dense model trained whole by every tier."""

    name: ClassVar[str]
    # Whether the group lasso term of local training, and server-side progressive shrinking,
    # apply (both act on factored layers only).
    uses_lasso: ClassVar[bool] = False
    shrinks: ClassVar[bool] = False
    # What a tier's sub-model is: leading rank components of factored layers, or leading
    # channels/units of a width-sliceable dense model (neither: the whole dense model).
    factored: ClassVar[bool] = False
    width_sliced: ClassVar[bool] = False
    # Ordered factors trained by the nested objective: the method may be sent its components
    # by a sampled rule (``transmission``) instead of as prefixes.
    ordered: ClassVar[bool] = False

    def prepare(self, model: nn.Module, input_shape: Shape, cfg: RunConfig) -> nn.Module:
        """Turn a freshly built dense model into this method's global model, in place."""
        return model

    def budget(self, beta: float, tiers: Grid, matched_width: MatchedWidth) -> float:
        """What this method trains for tier label β: a rank fraction or a width in (0, 1].

        ``matched_width`` gives the largest budget of the run's model whose MACs fit the MAC
        reference's at a label (:data:`MAC_REFERENCE`, as the run configures it).
        """
        return 1.0

    def shapes(self, model: nn.Module, shapes: Shapes, budget: float, input_shape: Shape) -> Shapes:
        """The shapes of the arrays a tier of this budget receives (leading blocks)."""
        return dict(shapes)

    def load(self, model: nn.Module, arrays: Mapping[str, np.ndarray]) -> nn.Module:
        """Load global or received arrays into a model built by :meth:`prepare`."""
        return load_leading_blocks(model, arrays)

    def index_plan(self, model: nn.Module, input_shape: Shape, cfg: RunConfig) -> IndexPlan | None:
        """How the server picks a training node's sub-model as index sets, for the global
        ``model`` built by :meth:`prepare` (:mod:`maestro_common.ml.index_sets`).

        None (the default): the leading blocks of :meth:`shapes`. A node receives the chosen
        slices gathered into arrays of those shapes either way, so :meth:`load` and
        :meth:`sampler` do not change.
        """
        return None

    def samples_components(self, cfg: RunConfig) -> bool:
        """Whether a training node is sent sampled components of U Vᵀ factors (which needs
        ``conv-factorization = "svd"``: a Tucker core has two rank axes)."""
        return False

    def loaded_budget(self, budget: float) -> float:
        """The budget at which a model loaded from a tier's received arrays runs its sub-model."""
        return budget

    def freezing(self, cfg: RunConfig) -> FreezeSchedule | None:
        """Which stages local training freezes in turn (sequential freezing); None: none."""
        return None

    def sampler(
        self,
        model: nn.Module,
        cfg: RunConfig,
        budget: float,
        grid: Grid,
        seed: int,
        beta: float = 1.0,
        global_ranks: Mapping[str, int] | None = None,
    ) -> Sampler:
        """Which sub-model(s) each local step trains (None: the whole received model).

        ``grid`` holds the budgets of all tiers (the server's ``budget-grid``), ``budget`` and
        ``beta`` this client's budget and tier label, ``global_ranks`` the global model's ranks
        before the received prefix cut them (see :meth:`ranks`).
        """
        return None

    def ranks(self, model: nn.Module) -> dict[str, int]:
        """The kept rank of every factored layer of ``model`` (none for dense models)."""
        return {}

    def step_macs(
        self,
        model: nn.Module,
        cfg: RunConfig,
        budget: float,
        grid: Grid,
        input_shape: Shape,
        beta: float = 1.0,
        global_ranks: Mapping[str, int] | None = None,
    ) -> float:
        """Forward MACs per example of one local training step of a tier of ``budget``.

        ``model`` is loaded from the arrays the tier received, as a client loads it; the step is
        the one :meth:`sampler` gives it (same arguments), every forward pass counted: a nested
        step's prefix and sub-models, a sampled step's one pass in expectation over its draws
        (:func:`~maestro_common.lowrank.accounting.step_macs`). Backward passes are not counted.
        """
        sampler = self.sampler(model, cfg, budget, grid, 0, beta, global_ranks)
        return step_macs(model, input_shape, sampler)


class Maestro(Method):
    """Nested low-rank factors W = U Vᵀ; a tier trains the first ⌈β·r⌉ components of each."""

    name = "maestro"
    uses_lasso = True
    shrinks = True
    factored = True
    ordered = True

    def prepare(self, model: nn.Module, input_shape: Shape, cfg: RunConfig) -> nn.Module:
        decompose(
            model,
            rank_fraction=cfg.rank_fraction,
            conv_factorization=cfg.conv_factorization,
        )
        return model

    def budget(self, beta: float, tiers: Grid, matched_width: MatchedWidth) -> float:
        return beta

    def shapes(self, model: nn.Module, shapes: Shapes, budget: float, input_shape: Shape) -> Shapes:
        return budget_shapes(shapes, prefix_axes(model), budget)

    def load(self, model: nn.Module, arrays: Mapping[str, np.ndarray]) -> nn.Module:
        return load_arrays(model, arrays)  # the factors take the ranks the arrays carry

    def samples_components(self, cfg: RunConfig) -> bool:
        return cfg.transmission_rule != "prefix"

    def index_plan(self, model: nn.Module, input_shape: Shape, cfg: RunConfig) -> IndexPlan | None:
        if not self.samples_components(cfg):
            return None
        # Kept in balanced SVD form, as for the sampled spectral methods (so σ is known and the
        # components are ordered by it); a node's draw is sent in that order, so its nested
        # sub-models are the largest components of what it got (docs/index-sets.md).
        return spectral_plan(self.name, model, cfg.transmission_rule, cfg.seed)

    def loaded_budget(self, budget: float) -> float:
        return 1.0  # the received prefix *is* the budget

    def freezing(self, cfg: RunConfig) -> FreezeSchedule | None:
        return FreezeSchedule(cfg.freeze, cfg.freeze_groups, cfg.seed, cfg.freeze_per_epoch)

    def sampler(
        self,
        model: nn.Module,
        cfg: RunConfig,
        budget: float,
        grid: Grid,
        seed: int,
        beta: float = 1.0,
        global_ranks: Mapping[str, int] | None = None,
    ) -> Sampler:
        received = self.ranks(model)
        if cfg.objective == "nested":
            # The whole received prefix, plus sub-models at the tiers' budgets (``grid``: the
            # rank fractions) of the global ranks R_l, all layers cut together. The prefix
            # holds ⌈b·R_l⌉ at this client's budget b, so ⌊r/b⌋ ≈ R_l (capped by R_l; exact
            # without server-side shrinking).
            glob = dict(global_ranks or {})
            full = {}
            for n, r in received.items():
                whole = int(r / budget + 1e-9)
                full[n] = max(1, min(glob[n], whole) if n in glob else whole)
            return NestedSampler(
                full,
                beta=budget,
                grid=grid,
                rule=cfg.sub_model_rule,
                full_pass_share=cfg.full_pass_share,
                seed=seed,
                caps=received,
                sub_batch_share=cfg.sub_batch_share,
            )
        # Ordered dropout over ranks (the paper's sampler), within all of the received prefix.
        return make_sampler(cfg.sampler, received, beta=1.0, seed=seed)

    def ranks(self, model: nn.Module) -> dict[str, int]:
        return {n: m.rank for n, m in low_rank_layers(model).items()}


class HeteroFL(Method):
    """Width baseline: a static width per tier, matched to Maestro's MACs at β."""

    name = "heterofl"
    width_sliced = True

    def prepare(self, model: nn.Module, input_shape: Shape, cfg: RunConfig) -> nn.Module:
        return make_width_sliceable(model, input_shape)

    def budget(self, beta: float, tiers: Grid, matched_width: MatchedWidth) -> float:
        return matched_width(beta)

    def shapes(self, model: nn.Module, shapes: Shapes, budget: float, input_shape: Shape) -> Shapes:
        return width_shapes(model, budget, input_shape)

    def sampler(
        self,
        model: nn.Module,
        cfg: RunConfig,
        budget: float,
        grid: Grid,
        seed: int,
        beta: float = 1.0,
        global_ranks: Mapping[str, int] | None = None,
    ) -> Sampler:
        return WidthSampler([budget], max_width=budget, seed=seed)  # static width


class FjORD(HeteroFL):
    """Width ordered dropout: each batch's width p is drawn from the tiers' widths up to its own."""

    name = "fjord"

    def sampler(
        self,
        model: nn.Module,
        cfg: RunConfig,
        budget: float,
        grid: Grid,
        seed: int,
        beta: float = 1.0,
        global_ranks: Mapping[str, int] | None = None,
    ) -> Sampler:
        return WidthSampler(list(grid), max_width=budget, seed=seed)


class FedRolex(HeteroFL):
    """HeteroFL's static width per tier, its window of channels rolling by one group a round
    (:mod:`maestro_common.width.rolling`)."""

    name = "fedrolex"

    def index_plan(self, model: nn.Module, input_shape: Shape, cfg: RunConfig) -> IndexPlan | None:
        return RollingPlan(rolling_groups(model, input_shape))


class FedAvgFit(HeteroFL):
    """A dense model narrow enough for the weakest tier, trained by every client."""

    name = "fedavg-fit"

    def budget(self, beta: float, tiers: Grid, matched_width: MatchedWidth) -> float:
        return matched_width(min(tiers))


class FedAvgAll(Method):
    """The dense model trained by every client whatever its budget (the unconstrained reference)."""

    name = "fedavg-all"


class SpectralSampled(Maestro):
    """Factored layers in SVD form; each training node gets a sampled subset of every layer's
    singular components (:mod:`maestro_common.lowrank.spectral`), as many as Maestro's prefix
    at its β, and trains all of them (no ordered dropout, no lasso, no shrinking). Tiers are
    evaluated on their leading (largest) components."""

    uses_lasso = False
    shrinks = False
    ordered = False
    rule: ClassVar[str]

    def samples_components(self, cfg: RunConfig) -> bool:
        return True

    def budget(self, beta: float, tiers: Grid, matched_width: MatchedWidth) -> float:
        return beta

    def freezing(self, cfg: RunConfig) -> FreezeSchedule | None:
        return None

    def sampler(
        self,
        model: nn.Module,
        cfg: RunConfig,
        budget: float,
        grid: Grid,
        seed: int,
        beta: float = 1.0,
        global_ranks: Mapping[str, int] | None = None,
    ) -> Sampler:
        return None  # every received component, every step

    def index_plan(self, model: nn.Module, input_shape: Shape, cfg: RunConfig) -> IndexPlan | None:
        return spectral_plan(self.name, model, self.rule, cfg.seed)


class SpectralUnbiased(SpectralSampled):
    """Korzhenkov & Louizos's Unbiased rule: p_i ∝ σ_i (capped at 1), multipliers 1/p_i."""

    name = "spectral-unbiased"
    rule = "unbiased"


class SpectralCollective(SpectralSampled):
    """Korzhenkov & Louizos's Collective rule: p and m minimising the error of the round's
    mean estimate over the nodes sampled."""

    name = "spectral-collective"
    rule = "collective"


class PriSM(SpectralSampled):
    """Niu et al.'s PriSM: components drawn with probability ∝ σ_i, no multipliers."""

    name = "prism"
    rule = "prism"


def spectral_plan(method: str, model: nn.Module, rule: str, seed: int) -> SpectralPlan:
    """The sampled-components plan of ``rule`` over every factored layer of ``model``."""
    pairs = []
    for name, layer in low_rank_layers(model).items():
        axes = layer.factor_axes()
        if set(axes) != {"u", "v"}:
            raise ConfigError(f"method {method}: layer {name} is not a U Vᵀ pair")
        u_key, v_key = state_key(name, "u"), state_key(name, "v")
        pairs.append(Pair(u_key, axes["u"][0], v_key, axes["v"][0]))
    return SpectralPlan(tuple(pairs), rule, seed)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Maestro(),
        FjORD(),
        HeteroFL(),
        FedAvgAll(),
        FedAvgFit(),
        FedRolex(),
        SpectralUnbiased(),
        SpectralCollective(),
        PriSM(),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
# The width baselines are compared with this method at matched MACs.
MAC_REFERENCE = Maestro.name


def get_method(name: str) -> Method:
    """The registered method called ``name``; ConfigError names the allowed ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method must be one of {METHOD_NAMES}, got {name!r}") from None
