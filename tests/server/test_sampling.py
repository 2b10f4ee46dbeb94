"""Tests for server.sampling: node sampling keyed by partition id, reproducible per seed."""

import numpy as np
import pytest

from server.sampling import sample_nodes


def _nodes(partition_ids, rng):
    """Map the partitions to fresh random node ids, as Flower does on every run."""
    node_ids = rng.choice(2**62, size=len(partition_ids), replace=False)
    return {int(n): p for n, p in zip(node_ids, partition_ids, strict=True)}


def _chosen_partitions(nodes, k, seed, rnd, purpose=0):
    picked = sample_nodes(nodes, k, seed, rnd, purpose)
    return sorted(nodes[n] for n in picked)


@pytest.mark.parametrize("seed", [0, 1, 17])
def test_same_seed_same_partitions_whatever_the_node_ids(seed):
    parts = list(range(50))
    run_a = _nodes(parts, np.random.default_rng(100))
    run_b = _nodes(parts[::-1], np.random.default_rng(200))  # other ids, other dict order
    assert set(run_a) != set(run_b)
    for rnd in range(1, 6):
        chosen = _chosen_partitions(run_a, 10, seed, rnd)
        assert chosen == _chosen_partitions(run_b, 10, seed, rnd)
        assert len(chosen) == 10 and len(set(chosen)) == 10


def test_returns_node_ids_of_the_mapping():
    nodes = _nodes(list(range(20)), np.random.default_rng(0))
    picked = sample_nodes(nodes, 5, seed=0, server_round=1)
    assert len(picked) == 5 and len(set(picked)) == 5
    assert set(picked) <= set(nodes)


def test_different_rounds_seeds_and_purposes_differ():
    nodes = _nodes(list(range(100)), np.random.default_rng(0))
    by_round = {tuple(_chosen_partitions(nodes, 10, 0, rnd)) for rnd in range(1, 11)}
    assert len(by_round) == 10
    assert _chosen_partitions(nodes, 10, 0, 1) != _chosen_partitions(nodes, 10, 1, 1)
    assert _chosen_partitions(nodes, 10, 0, 1, purpose=0) != _chosen_partitions(
        nodes, 10, 0, 1, purpose=1
    )


def test_repeated_call_is_deterministic():
    nodes = _nodes(list(range(30)), np.random.default_rng(5))
    assert sample_nodes(nodes, 7, 3, 4) == sample_nodes(nodes, 7, 3, 4)


@pytest.mark.parametrize("k", [5, 6, 100])
def test_all_nodes_when_k_at_least_n(k):
    nodes = {40: 3, 10: 0, 30: None, 20: 1, 50: 2}
    # Ordered by partition id, nodes without one last.
    assert sample_nodes(nodes, k, seed=0, server_round=1) == [10, 20, 50, 40, 30]


def test_nodes_without_partition_sampled_too():
    nodes = {n: None for n in range(100, 120)}
    picked = sample_nodes(nodes, 4, seed=0, server_round=1)
    assert len(set(picked)) == 4 and set(picked) <= set(nodes)
    assert picked == sample_nodes(dict(reversed(list(nodes.items()))), 4, 0, 1)


def test_every_partition_gets_sampled_over_many_rounds():
    nodes = _nodes(list(range(20)), np.random.default_rng(1))
    seen = set()
    for rnd in range(1, 60):
        seen.update(_chosen_partitions(nodes, 3, 0, rnd))
    assert seen == set(range(20))
