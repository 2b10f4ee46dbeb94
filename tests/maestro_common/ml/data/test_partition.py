"""Tests for client partitioning."""

import numpy as np
import pytest

from maestro_common.ml.data.partition import partition_indices, train_val_split

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def labels():
    # 200 samples per class, shuffled, like a tiny balanced dataset.
    lab = np.repeat(np.arange(NUM_CLASSES), 200)
    return np.random.default_rng(123).permutation(lab)


def _assert_disjoint_cover(parts, n):
    allidx = np.concatenate(parts)
    assert allidx.dtype == np.int64
    assert len(allidx) == len(np.unique(allidx)), "partitions overlap"
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))


def _mean_max_class_share(parts, labels):
    shares = [np.bincount(labels[p], minlength=NUM_CLASSES).max() / len(p) for p in parts]
    return float(np.mean(shares))


@pytest.mark.parametrize(
    ("scheme", "kwargs"),
    [("iid", {}), ("dirichlet", {"alpha": 0.3}), ("pathological", {"classes_per_partition": 2})],
)
def test_disjoint_cover_and_seeded(labels, scheme, kwargs):
    parts = partition_indices(labels, 10, scheme, seed=7, **kwargs)
    assert len(parts) == 10
    assert all(len(p) >= 1 for p in parts)
    _assert_disjoint_cover(parts, len(labels))

    again = partition_indices(labels, 10, scheme, seed=7, **kwargs)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)

    other = partition_indices(labels, 10, scheme, seed=8, **kwargs)
    assert any(
        not np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(parts, other, strict=True)
    ), "a different seed should assign different samples"


def test_iid_sizes_balanced_and_not_contiguous(labels):
    parts = partition_indices(labels, 8, "iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # Seeded shuffling: a shard is not simply a block of consecutive indices.
    assert not np.array_equal(np.sort(parts[0]), np.arange(sizes[0]))


def test_dirichlet_small_alpha_more_skewed_than_iid(labels):
    iid = partition_indices(labels, 10, "iid", seed=0)
    skewed = partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=0)
    mild = partition_indices(labels, 10, "dirichlet", alpha=100.0, seed=0)
    s_iid = _mean_max_class_share(iid, labels)
    s_skew = _mean_max_class_share(skewed, labels)
    s_mild = _mean_max_class_share(mild, labels)
    assert s_iid < 0.2  # ~0.1 plus sampling noise
    assert s_skew > s_iid + 0.2
    assert s_skew > s_mild


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_at_most_k_classes(labels, k):
    parts = partition_indices(labels, 10, "pathological", classes_per_partition=k, seed=0)
    for p in parts:
        assert len(np.unique(labels[p])) <= k
    _assert_disjoint_cover(parts, len(labels))


def test_single_partition_and_n_partitions():
    lab = np.array([0, 1, 0, 1, 2])
    (only,) = partition_indices(lab, 1)
    np.testing.assert_array_equal(np.sort(only), np.arange(5))
    parts = partition_indices(lab, 5)
    assert sorted(len(p) for p in parts) == [1] * 5


def test_accepts_list_labels():
    parts = partition_indices([0, 1, 1, 0], 2, "iid", seed=1)
    _assert_disjoint_cover(parts, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 2001}, "num_partitions"),
        ({"num_partitions": 2, "scheme": "shards"}, "iid, dirichlet, pathological"),
        ({"num_partitions": 2, "scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"num_partitions": 2, "scheme": "dirichlet", "alpha": -1.0}, "alpha"),
        ({"num_partitions": 2, "scheme": "pathological", "classes_per_partition": 11}, "classes"),
        ({"num_partitions": 2, "scheme": "pathological", "classes_per_partition": 0}, "classes"),
    ],
)
def test_invalid_arguments(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        partition_indices(labels, **kwargs)


def test_rejects_2d_labels():
    with pytest.raises(ValueError, match="1-D"):
        partition_indices(np.zeros((4, 2), dtype=int), 2)


def test_train_val_split():
    idx = np.arange(100, 150)
    train, val = train_val_split(idx, 0.2, seed=3)
    assert len(val) == 10
    assert len(train) == 40
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), idx)
    train2, val2 = train_val_split(idx, 0.2, seed=3)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(val, val2)
    _, val3 = train_val_split(idx, 0.2, seed=4)
    assert not np.array_equal(np.sort(val), np.sort(val3))


def test_train_val_split_edge_cases():
    train, val = train_val_split(np.arange(5), 0.0)
    assert len(train) == 5
    assert len(val) == 0
    train, val = train_val_split([42], 0.5)
    np.testing.assert_array_equal(train, [42])
    assert len(val) == 0
    train, val = train_val_split([], 0.5)
    assert len(train) == len(val) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(np.arange(5), 1.0)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(np.arange(5), -0.1)
