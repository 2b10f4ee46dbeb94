"""Tests for IDX reading and writing."""

import gzip

import numpy as np
import pytest

from maestro_common.ml.data.idx import read_idx, write_idx


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path, name, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(5, 3, 4)) * 50).astype(dtype)
    path = tmp_path / name
    write_idx(path, arr)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[0] = 0  # must be writable


def test_gzip_detected_from_content_and_is_actually_compressed(tmp_path):
    arr = np.arange(100, dtype=np.uint8)
    write_idx(tmp_path / "x.gz", arr)
    raw = (tmp_path / "x.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    # A misnamed (no .gz suffix) gzip file still loads.
    (tmp_path / "misnamed").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "misnamed"), arr)


def test_plain_header_layout(tmp_path):
    write_idx(tmp_path / "lab", np.array([1, 2, 3], dtype=np.uint8))
    assert (tmp_path / "lab").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


def test_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="magic"):
        read_idx(path)


def test_unknown_dtype_code(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="dtype code"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    path = tmp_path / "imgs"
    write_idx(path, np.zeros((4, 28, 28), dtype=np.uint8))
    raw = path.read_bytes()[:-10]
    if gz:
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="truncated IDX data"):
        read_idx(path)


def test_truncated_header_and_tiny_file(tmp_path):
    path = tmp_path / "h"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "t"
    write_idx(path, np.arange(3, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="trailing"):
        read_idx(path)


def test_write_rejects_unsupported(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "x", np.array(3, dtype=np.uint8))
