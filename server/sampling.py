"""Reproducible client sampling keyed by partition id, never by Flower's random node ids."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def sample_nodes(
    partitions: Mapping[int, int | None], k: int, seed: int, server_round: int, purpose: int = 0
) -> list[int]:
    """Pick ``k`` node ids (all if fewer) for one round.

    Nodes are ordered by partition id (nodes without one after, by node id), and the choice is a
    seeded function of (seed, round, purpose), so the same seed samples the same partitions in
    every run although Flower draws new node ids each time.
    """
    order = sorted(partitions, key=lambda n: (partitions[n] is None, partitions[n] or 0, n))
    if k >= len(order):
        return order
    rng = np.random.default_rng([seed, server_round, purpose])
    picked = rng.choice(len(order), size=k, replace=False)
    return [order[i] for i in sorted(picked)]
