"""What a client of a run spends on local training per round, from the run's config and the
examples its clients trained on: the same functions the clients and the virtual clock use
(:mod:`maestro_common.app.cost`), so a report's compute column is the one the run ran.

A client's round: its method's step (forward MACs per example, every pass of the objective) ×
the examples its steps pass through × :data:`server.clock.BACKWARD_FACTOR` (forward + backward).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maestro_common.app.config import ConfigError, RunConfig, as_current
from maestro_common.app.cost import (
    base_steps,
    match_step_macs,
    round_steps,
    tier_pass_macs,
    tier_step_macs,
    trained_examples,
)
from server.clock import BACKWARD_FACTOR


@dataclass(frozen=True)
class TierCompute:
    """One tier's local training per client and round, means over its clients' rounds."""

    step_macs: float  # forward MACs per example of one step, every pass
    steps: float  # optimiser steps
    train_macs: float  # forward + backward MACs (BACKWARD_FACTOR × forward)
    match_train_macs: float | None  # the same for the run's compute-match method (None: unset)


def run_config(config: Mapping[str, Any]) -> RunConfig | None:
    """The run's parsed config as it ran (:func:`~maestro_common.app.config.as_current`: an older
    run's removed keys at their defaults dropped, keys added since at what it ran with); None
    when this code cannot read it (an older run's keys)."""
    try:
        return RunConfig.from_run_config(as_current(config))
    except ConfigError:
        return None


def _step_and_pass(cfg: RunConfig, beta: float) -> tuple[float, int] | None:
    # A report must not fail on an auxiliary column: a model this code cannot price gets none.
    try:
        return tier_step_macs(cfg, beta), tier_pass_macs(cfg, beta)
    except (ValueError, KeyError, RuntimeError):
        return None


def tier_compute(
    config: Mapping[str, Any], tier: str, examples: Sequence[int]
) -> TierCompute | None:
    """Local training of a client of ``tier`` (a label, e.g. "0.5") per round, averaged over the
    clients' ``examples`` (each client round's num-examples); None without any."""
    cfg = run_config(config)
    if cfg is None or not examples:
        return None
    beta = float(tier)
    priced = _step_and_pass(cfg, beta)
    if priced is None:
        return None
    own, match = priced[0], match_step_macs(cfg, beta)
    steps = [round_steps(cfg, n, own, match) for n in examples]
    seen = [trained_examples(n, cfg.batch_size, s) for n, s in zip(examples, steps, strict=True)]
    matched = None
    if match is not None:
        base = [trained_examples(n, cfg.batch_size, base_steps(cfg, n)) for n in examples]
        matched = float(BACKWARD_FACTOR * match * np.mean(base))
    return TierCompute(
        step_macs=own,
        steps=float(np.mean(steps)),
        train_macs=float(BACKWARD_FACTOR * own * np.mean(seen)),
        match_train_macs=matched,
    )


def passes_per_step(config: Mapping[str, Any], tier: str) -> float | None:
    """A local step's forward MACs over one pass of the tier's own model (Maestro's nested
    sandwich: about 2; one sampled pass: 1 or, for FjORD's mean width, below); None when this
    code cannot read the run's config."""
    cfg = run_config(config)
    if cfg is None:
        return None
    priced = _step_and_pass(cfg, float(tier))
    return None if priced is None else priced[0] / priced[1]
