"""The virtual-clock round policy: availability, deadlines and per-client virtual time.

Plugged into the strategy (:class:`server.strategy.RoundPolicy`). A client's time is a formula
on its tier's profile (compute = training MACs / speed, transfer = bytes / bandwidth), never a
``sleep``; a round lasts until its last admitted client. Training MACs are priced from the
method's *step*: the forward MACs per example of every pass its objective runs in one step
(:meth:`maestro_common.app.methods.Method.step_macs`; a nested step's sub-models included), times
the examples the round's steps pass through, times :data:`server.clock.BACKWARD_FACTOR`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from maestro_common.app.config import RunConfig
from maestro_common.app.cost import trained_examples
from server.clock import (
    apply_deadline,
    client_time,
    fit_budget,
    is_available,
    round_duration,
    training_macs,
)
from server.profiles import TierProfile, default_profile, profiles_from_strings
from server.rounds import NodeInfo, RoundPolicy

# (forward MACs per example of one local step, every pass of it; bytes down; bytes up) of a tier
# budget β
CostFn = Callable[[float], tuple[float, int, int]]
# Optimiser steps of a client's round from (tier budget β, its examples, its step's forward MACs
# per example): maestro_common.app.cost.round_steps (local-steps, compute-match)
StepsFn = Callable[[float, int, float], int]


def run_profiles(cfg: RunConfig) -> tuple[TierProfile, ...]:
    """The tiers' profiles of a run. Availability is 1 unless ``tier-availability`` says
    otherwise, so a deployment with default settings never skips a real device."""
    return profiles_from_strings(
        cfg.tier_fractions,
        cfg.tier_speeds,
        cfg.tier_down,
        cfg.tier_up,
        cfg.tier_availability or "1.0",
    )


class VirtualClockPolicy(RoundPolicy):
    """Availability by a seeded draw, optional deadline (drop stragglers or fit their budget)."""

    def __init__(
        self,
        profiles: Sequence[TierProfile],
        cost: CostFn,
        local_epochs: int,
        seed: int,
        deadline: float = 0.0,
        deadline_policy: str = "drop",
        steps: StepsFn | None = None,
        batch_size: int = 1,
    ) -> None:
        """``steps`` and ``batch_size``: a round of ``steps(β, n, step MACs)`` optimiser steps on
        batches of ``batch_size`` (without ``steps``: ``local_epochs`` passes over the n
        examples)."""
        if deadline_policy not in ("drop", "fit"):
            raise ValueError(f"deadline_policy must be drop or fit, got {deadline_policy!r}")
        self.profiles = {p.beta: p for p in profiles}
        self.cost = cost
        self.local_epochs = local_epochs
        self.seed = seed
        self.deadline = deadline or None
        self.deadline_policy = deadline_policy
        self.steps = steps
        self.batch_size = batch_size
        # Local examples of each node, learnt from its train replies (unknown: 0, transfers only).
        self.examples: dict[int, int] = {}

    def profile(self, beta: float) -> TierProfile:
        # A deployment node may state a budget that is not one of the run's tiers.
        return self.profiles.get(beta) or default_profile(beta)

    def train_macs(self, beta: float, step_macs: float, num_examples: int) -> int:
        """MACs of a round's local training at budget β: forward and backward of every step."""
        if self.steps is None:
            return training_macs(step_macs, num_examples, self.local_epochs)
        steps = self.steps(beta, num_examples, step_macs)
        return training_macs(step_macs, trained_examples(num_examples, self.batch_size, steps), 1)

    def available(self, server_round: int, node_id: int, info: NodeInfo) -> bool:
        key = info.partition if info.partition is not None else node_id
        return is_available(self.seed, server_round, key, self.profile(info.beta).availability)

    def budget(self, server_round: int, node_id: int, info: NodeInfo) -> float:
        if self.deadline is None or self.deadline_policy != "fit":
            return info.beta
        n = self.examples.get(node_id, 0)

        def cost_at(beta: float) -> tuple[int, int, int]:
            fwd, down, up = self.cost(beta)
            return self.train_macs(beta, fwd, n), down, up

        grid = sorted(b for b in self.profiles if b <= info.beta)
        fitted = fit_budget(self.deadline, self.profile(info.beta), cost_at, grid or [info.beta])
        # Nothing fits: train at the smallest budget and let the deadline drop it if late.
        return fitted if fitted is not None else min(grid or [info.beta])

    def admit(self, server_round: int, clients: list[dict[str, Any]]) -> tuple[set[int], float]:
        times = {}
        for row in clients:
            node, beta = row["node-id"], float(row["rank-fraction"])
            self.examples[node] = int(row["num-examples"])
            fwd, _, _ = self.cost(beta)
            t = client_time(
                self.train_macs(beta, fwd, int(row["num-examples"])),
                int(row["bytes-down"]),
                int(row["bytes-up"]),
                self.profile(float(row["tier-beta"])),
            )
            row["virtual-seconds"] = t.total
            times[node] = t
        kept, dropped = apply_deadline(times, self.deadline)
        for row in clients:
            row["dropped"] = row["node-id"] in dropped
        return set(kept), round_duration(times, kept)
