"""Learning-rate schedules shared by the centralized trainer (per step) and the server (per round).

A schedule maps training progress t ∈ [0, 1] (step / total steps, or (round − 1) / rounds) to a
factor of the base learning rate:

- ``constant``: 1.
- ``cosine``: ½(1 + cos πt), from 1 down towards 0 (Loshchilov & Hutter, ICLR 2017, one cycle).
- ``step``: 1, then 0.1 from t = ½ and 0.01 from t = ¾ (the authors' ResNet schedule).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "step")


def lr_factor(schedule: str, progress: float) -> float:
    """The factor of the base lr at training progress ``progress`` in [0, 1].

    Raises
    ------
    ValueError
        If the schedule is unknown or the progress lies outside [0, 1].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 1.0 if progress < 0.5 else 0.1 if progress < 0.75 else 0.01
    return 1.0


def round_lr(base_lr: float, schedule: str, server_round: int, num_rounds: int) -> float:
    """The lr the server sends for round ``server_round`` (1-based) of ``num_rounds``."""
    if not 1 <= server_round <= max(num_rounds, 1):
        raise ValueError(f"server_round must be in 1..{num_rounds}, got {server_round}")
    return base_lr * lr_factor(schedule, (server_round - 1) / max(num_rounds, 1))
