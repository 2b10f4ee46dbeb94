"""What one client's round of local training costs, the same on the server and every client.

A step's cost is its forward MACs per example, every pass of the method's objective counted
(:meth:`~maestro_common.app.methods.Method.step_macs`). A round runs ``local-steps`` optimiser
steps, or ``local-epochs`` passes over the client's data when that is 0. With ``compute-match``
naming a method, a client runs as many steps as spend the forward MACs that method's round spends
at the same tier (equal client compute): the client (:func:`round_steps`) and the server's
virtual clock compute that number with the same functions, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

from maestro_common.app.codec import model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.methods import MAC_REFERENCE, Method
from maestro_common.app.task import build_run_model, input_shape, run_method
from maestro_common.lowrank.accounting import count_macs
from maestro_common.lowrank.width_match import width_for_macs
from maestro_common.ml.prefix import array_shapes


def base_steps(cfg: RunConfig, num_examples: int) -> int:
    """Optimiser steps of a round without compute matching: ``local-steps``, or the batches of
    ``local-epochs`` passes over ``num_examples`` when that is 0."""
    if cfg.local_steps > 0:
        return cfg.local_steps
    return cfg.local_epochs * math.ceil(num_examples / cfg.batch_size)


def matched_steps(steps: int, own_step_macs: float, match_step_macs: float) -> int:
    """The steps at ``own_step_macs`` per step that spend what ``steps`` steps at
    ``match_step_macs`` spend, rounded to the nearest, at least 1 (0 when ``steps`` is 0)."""
    if own_step_macs <= 0 or match_step_macs <= 0:
        raise ValueError(f"step MACs must be > 0, got own={own_step_macs}, match={match_step_macs}")
    if steps <= 0:
        return 0
    return max(1, round(steps * match_step_macs / own_step_macs))


def round_steps(
    cfg: RunConfig, num_examples: int, own_step_macs: float, match_step_macs: float | None
) -> int:
    """Optimiser steps of one client's round: :func:`base_steps`, scaled to the forward MACs of
    ``compute-match``'s step (``match_step_macs``) when the run sets it."""
    steps = base_steps(cfg, num_examples)
    if not cfg.compute_match or match_step_macs is None:
        return steps
    return matched_steps(steps, own_step_macs, match_step_macs)


def trained_examples(num_examples: int, batch_size: int, steps: int) -> int:
    """Examples ``steps`` steps pass through: batches of ``batch_size`` drawn epoch after epoch
    over ``num_examples`` (each epoch's last batch may be short), as local training draws them."""
    if num_examples <= 0 or steps <= 0:
        return 0
    batches = math.ceil(num_examples / batch_size)
    epochs, rest = divmod(steps, batches)
    return epochs * num_examples + rest * batch_size  # rest < batches: the partial one is not hit


def matched_width_fn(cfg: RunConfig, model, shape) -> Callable[[float], float]:
    """The widest budget of ``model`` within the MAC reference's MACs at a tier label β (the run's
    model configured as :data:`MAC_REFERENCE`): what the methods compare at."""
    reference = build_run_model(cfg.replace(method=MAC_REFERENCE))
    return lambda beta: width_for_macs(model, shape, count_macs(reference, shape, beta))


def received_model(method: Method, cfg: RunConfig, shapes: Mapping[str, tuple[int, ...]]):
    """A model of the run loaded, as a client loads it, from arrays of ``shapes`` (zeros: MACs
    depend on shapes only)."""
    model = build_run_model(cfg)
    dtypes = {k: v.dtype for k, v in model_arrays(model).items()}
    arrays = {k: np.zeros(s, dtype=dtypes.get(k, np.float32)) for k, s in shapes.items()}
    return method.load(model, arrays)


@lru_cache(maxsize=64)
def _tier(cfg: RunConfig, beta: float):
    """(method, the tier's received model, its budget, the budget grid, input shape, the global
    model's ranks) of tier label β on the run's initial model (as round 1 sends it)."""
    method = run_method(cfg)
    model = build_run_model(cfg)
    shape = input_shape(cfg)
    matched = matched_width_fn(cfg, model, shape)
    budget = method.budget(beta, cfg.tiers, matched)
    grid = [method.budget(b, cfg.tiers, matched) for b in cfg.tiers]
    shapes = method.shapes(model, array_shapes(model_arrays(model)), budget, shape)
    loaded = received_model(method, cfg, shapes)
    return method, loaded, budget, grid, shape, method.ranks(model)


@lru_cache(maxsize=64)
def tier_step_macs(cfg: RunConfig, beta: float) -> float:
    """Forward MACs per example of one local step of ``cfg``'s method at tier label β, on the
    run's initial model (as round 1 sends it)."""
    method, loaded, budget, grid, shape, global_ranks = _tier(cfg, beta)
    return method.step_macs(loaded, cfg, budget, grid, shape, beta, global_ranks)


def tier_pass_macs(cfg: RunConfig, beta: float) -> int:
    """Forward MACs per example of one pass of tier β's own model (what it deploys), on the run's
    initial model: the unit :func:`tier_step_macs` is a multiple of."""
    method, loaded, budget, _, shape, _ = _tier(cfg, beta)
    return count_macs(loaded, shape, method.loaded_budget(budget))


def match_step_macs(cfg: RunConfig, beta: float) -> float | None:
    """Forward MACs per example of one step of the ``compute-match`` method at tier label β
    (None when the run does not match compute)."""
    if not cfg.compute_match:
        return None
    return tier_step_macs(cfg.replace(compute_match="", method=cfg.compute_match), beta)
