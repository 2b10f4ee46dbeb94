"""Checkpoint IO over checkpoint.pt (the contract export/evaluate read through)."""

from __future__ import annotations

import numpy as np
import pytest

from maestro_common.checkpoint import CheckpointError, read_checkpoint, write_checkpoint


def test_round_trip(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    write_checkpoint(path, 4, {"w": np.arange(6.0).reshape(2, 3)}, {"model": "cnn"})
    ckpt = read_checkpoint(path)
    assert ckpt.round == 4 and ckpt.config == {"model": "cnn"}
    np.testing.assert_array_equal(ckpt.arrays["w"], np.arange(6.0).reshape(2, 3))
    assert not (path.parent / "checkpoint.pt.tmp").exists()


@pytest.mark.parametrize("content", [b"garbage", None])
def test_failures_name_the_file(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        read_checkpoint(path)


def test_a_file_without_the_keys_is_refused(tmp_path):
    import torch

    path = tmp_path / "checkpoint.pt"
    torch.save({"arrays": {}}, path)
    with pytest.raises(CheckpointError, match="round, arrays and config"):
        read_checkpoint(path)
