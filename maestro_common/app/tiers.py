"""Device tiers as data, and the pure function that assigns a tier to a partition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def tier_counts(num_partitions: int, shares: Sequence[float]) -> list[int]:
    """How many of ``num_partitions`` clients each tier gets (largest remainder rounding)."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be ≥ 1, got {num_partitions}")
    total = float(sum(shares))
    if not np.isfinite(total) or total <= 0 or any(not np.isfinite(s) or s < 0 for s in shares):
        raise ValueError(
            f"shares must be finite, non-negative, with a positive sum, got {list(shares)}"
        )
    exact = np.array(shares, dtype=np.float64) / total * num_partitions
    counts = np.floor(exact).astype(int)
    # Hand the remaining clients to the largest remainders; ties go to the earlier tier.
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: num_partitions - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def assign_tiers(num_partitions: int, shares: Sequence[float], seed: int) -> np.ndarray:
    """Tier index of every partition: exact shares, placed by a seeded permutation."""
    counts = tier_counts(num_partitions, shares)
    tiers = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(tiers)


def tier_of(partition_id: int, num_partitions: int, shares: Sequence[float], seed: int) -> int:
    """Tier index of one partition; a pure function of its arguments."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id must be in 0..{num_partitions - 1}, got {partition_id}")
    return int(assign_tiers(num_partitions, shares, seed)[partition_id])


def resolve_budget(
    node_config: Mapping[str, Any],
    tiers: Sequence[float],
    shares: Sequence[float],
    seed: int,
) -> tuple[float, int | None]:
    """A node's budget β and tier index from its node config.

    Deployment: ``rank-fraction=0.5`` (any β in (0, 1]) or ``tier=N`` (an index into the run's
    tier fractions). Simulation: the tier is a pure function of ``partition-id``,
    ``num-partitions``, the shares and the seed. The tier index is None for a rank fraction that
    is not one of the run's tiers.
    """
    if "rank-fraction" in node_config:
        beta = node_config["rank-fraction"]
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta <= 1:
            raise ValueError(
                f'node config rank-fraction must be a number in (0, 1] or "auto" (the '
                f"client then measures itself: maestro_common.app.autotier), got {beta!r}"
            )
        beta = float(beta)
        return beta, (tiers.index(beta) if beta in tiers else None)
    if "tier" in node_config:
        tier = node_config["tier"]
        if isinstance(tier, bool) or not isinstance(tier, int) or not 0 <= tier < len(tiers):
            raise ValueError(
                f"node config tier must be an index in 0..{len(tiers) - 1} into tier-fractions "
                f"{list(tiers)}, got {tier!r}"
            )
        return float(tiers[tier]), tier
    if "partition-id" in node_config and "num-partitions" in node_config:
        tier = tier_of(
            int(node_config["partition-id"]), int(node_config["num-partitions"]), shares, seed
        )
        return float(tiers[tier]), tier
    raise ValueError(
        "cannot tell this node's tier: give the SuperNode --node-config 'rank-fraction=<β>' or "
        "'tier=<index>' (or partition-id and num-partitions in simulation)"
    )
