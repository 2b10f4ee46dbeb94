"""The federated dense warm-up of a factored method (Pufferfish's warm-up, across tiers).

With ``dense-warmup = F`` the first ``RunConfig.warmup_rounds`` = round(F · num-rounds) rounds
train the *dense* model, and only on the tiers whose budget covers it (the factored model's MACs
at their β are at least the dense model's: on the CNN at full rank, the top tier). After them the
server
factors the trained dense weights by SVD (:func:`factor_arrays`), so the nested objective starts
from the dense model's ordered spectrum, and every tier trains its prefix as without warm-up.

Server and clients decide the phase of a round the same way, from the run config and the round
number (:func:`phase_config`): in the warm-up the run behaves as the dense method
:data:`WARMUP_METHOD` (no lasso, no sampler, no freezing), after it as the run's own method.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from maestro_common.app.codec import load_arrays, model_arrays
from maestro_common.app.config import RunConfig
from maestro_common.app.methods import FedAvgAll, get_method
from maestro_common.app.task import build_run_model, input_shape

WARMUP_METHOD = FedAvgAll.name  # the dense model, trained whole by the tiers that can afford it


def in_warmup(cfg: RunConfig, server_round: int) -> bool:
    """Whether ``server_round`` trains the dense model. Round 0 (the initial model, and the
    checkpoint before any round) belongs to the warm-up when there is one."""
    return server_round <= cfg.warmup_rounds


def dense_config(cfg: RunConfig) -> RunConfig:
    """The run config of the warm-up phase: the dense method, same model, data and seed."""
    return cfg.replace(method=WARMUP_METHOD, dense_warmup=0.0)


def phase_config(cfg: RunConfig, server_round: int) -> RunConfig:
    """The run config that ``server_round`` trains and evaluates with."""
    return dense_config(cfg) if in_warmup(cfg, server_round) else cfg


def factor_arrays(cfg: RunConfig, dense: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The run's factored global arrays from trained dense ones: SVD of every factored layer.

    The factors take the ranks a fresh factored model of ``cfg`` has (``rank-fraction``,
    ``initial-ranks``, ``conv-factorization``), so the arrays fit every party's model.
    """
    model = load_arrays(build_run_model(dense_config(cfg)), dense)
    get_method(cfg.method).prepare(model, input_shape(cfg), cfg)
    return model_arrays(model)
