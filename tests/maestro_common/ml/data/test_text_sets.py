"""The character task as the federation sees it: roles per client, windows for the server."""

from __future__ import annotations

import pytest
import torch

from maestro_common.ml.data.shakespeare import load_shakespeare
from maestro_common.ml.data.shakespeare_text import window_count
from maestro_common.ml.data.text_sets import client_roles, role_splits, server_split


def test_a_partition_holds_every_pth_role():
    assert client_roles(7, 0, 3) == [0, 3, 6]
    assert client_roles(7, 2, 3) == [2, 5]
    assert client_roles(4, 3, 4) == [3]  # the natural partition: one role each
    assert sorted(r for i in range(3) for r in client_roles(7, i, 3)) == list(range(7))


@pytest.mark.parametrize(("pid", "parts", "match"), [(3, 3, "partition-id"), (0, 5, "at most 4")])
def test_impossible_partitions_are_refused(pid, parts, match):
    with pytest.raises(ValueError, match=match):
        client_roles(4, pid, parts)


def test_a_client_trains_on_its_roles_training_windows_and_validates_on_their_val(small_corpus):
    corpus = load_shakespeare()
    train, val = role_splits("shakespeare", "", 1, 3)
    roles = client_roles(len(corpus.roles), 1, 3)
    assert roles == [1, 4]
    assert len(train) == sum(len(corpus.train[r]) - 80 for r in roles)
    assert len(val) == sum(len(corpus.val[r]) - 80 for r in roles)
    first = torch.as_tensor(corpus.train[1][:81].astype("int64"))
    assert torch.equal(train.images[0], first[:80]) and torch.equal(train.labels[0], first[1:])
    assert train.images.dtype == torch.int64 and train.num_classes == 81


def test_the_server_evaluates_a_fixed_sample_of_non_overlapping_windows(small_corpus):
    a = server_split("shakespeare", "test", "", 5)
    b = server_split("shakespeare", "test", "", 5)
    assert len(a) == 5 and torch.equal(a.images, b.images)
    whole = server_split("shakespeare", "test", "", 0)
    corpus = load_shakespeare()
    assert len(whole) == sum(window_count(len(t), 80, stride=80) for t in corpus.test)
    assert len(whole) > 5


def test_the_server_never_takes_the_clients_training_windows(small_corpus):
    with pytest.raises(ValueError, match="training windows are the clients'"):
        server_split("shakespeare", "train", "", 0)


def test_an_unknown_character_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown character dataset"):
        role_splits("war-and-peace", "", 0, 1)
