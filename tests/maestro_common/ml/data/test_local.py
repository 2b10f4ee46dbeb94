"""A device's own data from a data path: IDX folder or .npz."""

from __future__ import annotations

import numpy as np
import pytest

from maestro_common.ml.data import load_dataset
from maestro_common.ml.data.local import load_local_dataset


def test_idx_folder_matches_the_dataset_loader(fmnist_sample):
    local = load_local_dataset(fmnist_sample, "fashion-mnist", "train")
    reference = load_dataset("fashion-mnist", "train", fmnist_sample)
    assert len(local) == 2400
    assert (local.images == reference.images).all() and (local.labels == reference.labels).all()
    assert len(load_local_dataset(fmnist_sample, "fashion-mnist", "test")) == 400


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    stored = {"nhw": images, "nhwc": images[..., None], "nchw": images[:, None]}[layout]
    np.savez(tmp_path / "mine.npz", images=stored, labels=np.arange(5))
    ds = load_local_dataset(tmp_path / "mine.npz", "fashion-mnist")
    assert ds.images.shape == (5, 1, 28, 28) and ds.labels.tolist() == [0, 1, 2, 3, 4]
    first = load_local_dataset(tmp_path / "mine.npz", "fashion-mnist").images[0, 0]
    assert np.allclose((first * 0.3530 + 0.2860).numpy() * 255, images[0], atol=1e-3)


def test_bad_paths_and_contents_are_refused(tmp_path):
    with pytest.raises(ValueError, match="neither a folder of IDX files nor"):
        load_local_dataset(tmp_path / "missing.npz", "fashion-mnist")
    with pytest.raises(ValueError, match="holds no train-images"):
        load_local_dataset(tmp_path, "fashion-mnist")
    np.savez(tmp_path / "x.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="lacks"):
        load_local_dataset(tmp_path / "x.npz", "fashion-mnist")
    np.savez(tmp_path / "y.npz", images=np.zeros((2, 32, 32), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(ValueError, match="shape"):
        load_local_dataset(tmp_path / "y.npz", "fashion-mnist")
    np.savez(tmp_path / "z.npz", images=np.zeros((2, 28, 28), np.uint8), labels=[0, 10])
    with pytest.raises(ValueError, match=r"0\.\.9"):
        load_local_dataset(tmp_path / "z.npz", "fashion-mnist")
