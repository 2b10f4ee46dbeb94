"""The centralized trainer's data: the character task's pooled windows, the held-out images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.ml.data import load_dataset
from maestro_common.ml.data.partition import holdout_split
from maestro_common.ml.data.shakespeare import load_shakespeare
from maestro_common.ml.data.text_sets import server_split
from simulations.centralized.data import WindowPool, load_data, split_validation


def test_pool_windows_are_every_window_of_every_segment_and_never_cross_one():
    segments = [np.arange(0, 6, dtype=np.uint8), np.arange(100, 103, dtype=np.uint8),
                np.arange(50, 55, dtype=np.uint8)]  # fmt: skip
    pool = WindowPool(segments, context=2, name="t")
    assert len(pool) == 4 + 1 + 3
    x, y = pool.window(torch.arange(len(pool)))
    starts = [0, 1, 2, 3, 100, 50, 51, 52]
    assert x.tolist() == [[s, s + 1] for s in starts]
    assert torch.equal(y, x + 1)  # the next symbol at every position, within the segment
    assert x.dtype == torch.int64 and y.dtype == torch.int64


def test_pool_draws_cover_every_segment_in_proportion_to_its_windows():
    segments = [np.zeros(1010, np.uint8), np.ones(110, np.uint8)]  # 1,000 and 100 windows
    pool = WindowPool(segments, context=10, name="t")
    drawn = pool.sample(5000, torch.Generator().manual_seed(0), num_classes=81)
    assert drawn.images.shape == (5000, 10) and drawn.labels.shape == (5000, 10)
    share = drawn.images[:, 0].float().mean().item()  # windows drawn from the second segment
    assert 0.06 < share < 0.12  # 100 / 1,100 = 0.091
    again = pool.sample(5000, torch.Generator().manual_seed(0), num_classes=81)
    assert torch.equal(drawn.images, again.images)  # seeded


def test_pool_refuses_segments_without_a_window():
    with pytest.raises(ValueError, match="no segment"):
        WindowPool([np.zeros(3, np.uint8)], context=3, name="t")


def test_held_out_images_are_the_federations(fmnist_sample):
    train = load_dataset("fashion-mnist", "train", str(fmnist_sample))
    fit, val = split_validation(train, 300)
    kept, held = holdout_split(len(train), 300)
    assert torch.equal(val.images, train.images[torch.from_numpy(held)])
    assert torch.equal(fit.labels, train.labels[torch.from_numpy(kept)])
    with pytest.raises(ConfigError, match="val-size"):
        split_validation(train, len(train))


def test_image_data_takes_the_keys(fmnist_sample):
    cfg = RunConfig(model="lenet5", data_dir=str(fmnist_sample), val_size=100, max_test_examples=50)
    data = load_data(cfg, limit_train=600)
    assert len(data.train) == 500 and len(data.val) == 100 and len(data.test) == 50
    assert data.pool is None


def test_text_data_pools_every_roles_training_text_and_scores_the_servers_windows(small_corpus):
    cfg = RunConfig(
        dataset="shakespeare", model="char-lstm", local_steps=2, val_size=5, max_test_examples=7
    )
    data = load_data(cfg)
    corpus = load_shakespeare()
    assert len(data.pool) == sum(len(s) - 80 for s in corpus.train if len(s) > 80)
    assert len(corpus.roles) > 1
    assert torch.equal(data.test.images, server_split("shakespeare", "test", "", 7).images)
    assert len(data.val) == 5 and data.train is None
    with pytest.raises(ConfigError, match="local-steps"):
        load_data(cfg, limit_train=10)
