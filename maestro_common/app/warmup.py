"""The federated dense warm-up of a factored method (Pufferfish's warm-up, across tiers).

With ``dense-warmup = F`` the first ``RunConfig.warmup_rounds`` = round(F · num-rounds) rounds
train the dense model with ``warmup-method``, after which the server factors the trained dense
weights by SVD (:func:`factor_arrays`), so the nested objective starts from the dense model's
ordered spectrum and every tier trains its prefix as without a warm-up.

- ``fedavg-all``: the whole dense model, trained only by the tiers whose budget covers it
  (:func:`whole_model`; the server lets the others sit out: on the CNN at full rank, only β = 1).
- ``fjord``: width prefixes of the dense model at every tier, MAC-matched to its budget, as the
  FjORD baseline trains; every tier's data takes part.

Server and clients decide the phase of a round the same way, from the run config and the round
number (:func:`phase_config`): in the warm-up the run behaves as ``warmup-method`` (no lasso, no
rank sampler, no freezing), after it as the run's own method.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from maestro_common.app.codec import load_arrays, model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.methods import FedAvgAll, get_method
from maestro_common.app.task import build_run_model, input_shape


def in_warmup(cfg: RunConfig, server_round: int) -> bool:
    """Whether ``server_round`` trains the dense model. Round 0 (the initial model, and the
    checkpoint before any round) belongs to the warm-up when there is one."""
    return server_round <= cfg.warmup_rounds


def warmup_config(cfg: RunConfig) -> RunConfig:
    """The run config of the warm-up phase: ``warmup-method``, same model, data and seed (the
    dense model has no factored layers: no Frobenius decay either)."""
    return cfg.replace(method=cfg.warmup_method, dense_warmup=0.0, frobenius_decay=0.0)


def phase_config(cfg: RunConfig, server_round: int) -> RunConfig:
    """The run config that ``server_round`` trains and evaluates with."""
    return warmup_config(cfg) if in_warmup(cfg, server_round) else cfg


def whole_model(cfg: RunConfig) -> bool:
    """Whether the warm-up trains the whole dense model on every client it picks (so only
    tiers whose budget covers the dense model may take part)."""
    return not get_method(cfg.warmup_method).width_sliced


def factor_arrays(cfg: RunConfig, dense: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The run's factored global arrays from trained dense ones: SVD of every factored layer.

    ``dense`` are the arrays of any warm-up method (the width models keep the dense model's
    names and shapes). The factors take the ranks a fresh factored model of ``cfg`` has
    (``rank-fraction``, ``initial-ranks``, ``conv-factorization``), so the arrays fit every
    party's model.
    """
    model = load_arrays(
        build_run_model(cfg.replace(method=FedAvgAll.name, dense_warmup=0.0)),
        dense,
    )
    get_method(cfg.method).prepare(model, input_shape(cfg), cfg)
    return model_arrays(model)
