"""Tests for maestro_common.app.checkpoint: no pickle, checksum, checks against the model."""

import json
import zipfile

import numpy as np
import pytest

from maestro_common.app.checkpoint import (
    META,
    CheckpointError,
    check_arrays,
    read_checkpoint,
    write_checkpoint,
)

CONFIG = {"model": "lenet5", "num-rounds": 3, "tier-fractions": "0.5,1.0"}


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc.u": rng.standard_normal((8, 4)).astype(np.float32),
        "fc.v": rng.standard_normal((6, 4)).astype(np.float32),
        "fc.bias": rng.standard_normal(8).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, 4, _arrays(), CONFIG)
    return path


def test_round_trip_keeps_values_dtypes_round_and_config(saved):
    ckpt = read_checkpoint(saved)
    assert ckpt.round == 4 and ckpt.config == CONFIG
    assert set(ckpt.arrays) == set(_arrays())
    for key, arr in _arrays().items():
        assert ckpt.arrays[key].dtype == arr.dtype and ckpt.arrays[key].shape == arr.shape
        np.testing.assert_array_equal(ckpt.arrays[key], arr)
    assert not list(saved.parent.glob("*.tmp"))


def test_a_pickle_inside_is_never_executed(tmp_path):
    """A crafted file whose array is a pickle that would create a file when unpickled."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "checkpoint.npz"
    # Build the archive by hand: a valid meta.json plus an object array (pickled).
    meta = json.dumps({"format": "maestro-fl-checkpoint", "version": 1}).encode()
    np.savez(
        path,
        **{META: np.frombuffer(meta, np.uint8), "arrays/x": np.array([Payload()], dtype=object)},
    )
    with pytest.raises(CheckpointError, match=str(path)):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_truncated_file_names_the_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{saved}: unreadable checkpoint"):
        read_checkpoint(saved)


def test_a_missing_file_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        read_checkpoint(tmp_path / "nope.npz")


def test_every_single_bit_flip_in_the_array_data_is_caught(saved):
    """60 flips spread over the stored bytes of the arrays: none loads silently."""
    data = bytearray(saved.read_bytes())
    # Where the float data sits: each member's payload, as the zip directory says.
    with zipfile.ZipFile(saved) as zf:
        spans = []
        for info in zf.infolist():
            if info.filename.startswith("arrays/"):
                # The local header: 30 bytes, then the name and its own extra field.
                head = data[info.header_offset : info.header_offset + 30]
                name_len, extra_len = (int.from_bytes(head[i : i + 2], "little") for i in (26, 28))
                start = info.header_offset + 30 + name_len + extra_len
                spans.append((start, start + info.compress_size))
    positions = np.concatenate([np.arange(a, b) for a, b in spans])
    rng = np.random.default_rng(1)
    for pos in rng.choice(positions, 60, replace=False):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(8))
        saved.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match=str(saved)):
            read_checkpoint(saved)


def test_a_consistent_file_with_changed_values_fails_the_checksum(saved):
    """Rewritten with a correct zip but altered array bytes and the old meta: digest catches it."""
    with np.load(saved) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["arrays/fc.bias"] = entries["arrays/fc.bias"] + 1
    np.savez(saved, **entries)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(saved)


def test_a_well_formed_nan_checkpoint_is_refused(tmp_path):
    arrays = _arrays()
    arrays["fc.u"][0, 0] = np.nan
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, 2, arrays, CONFIG)
    with pytest.raises(CheckpointError, match=r"'fc\.u' holds NaN or Inf"):
        read_checkpoint(path)


def test_check_arrays_against_the_model():
    model = _arrays()
    axes = {"fc.u": (1,), "fc.v": (1,)}
    check_arrays("ck", _arrays(), model, axes)  # identical: fine
    shrunk = _arrays()
    shrunk["fc.u"], shrunk["fc.v"] = shrunk["fc.u"][:, :2], shrunk["fc.v"][:, :2]
    check_arrays("ck", shrunk, model, axes)  # a rank prefix: fine
    wrong_shape = _arrays()
    wrong_shape["fc.bias"] = np.zeros(9, np.float32)
    with pytest.raises(CheckpointError, match=r"ck: 'fc.bias' has shape \(9,\)"):
        check_arrays("ck", wrong_shape, model, axes)
    wider = _arrays()
    wider["fc.u"] = np.zeros((8, 5), np.float32)
    with pytest.raises(CheckpointError, match=r"'fc\.u' has shape"):
        check_arrays("ck", wider, model, axes)
    wrong_dtype = _arrays()
    wrong_dtype["fc.v"] = wrong_dtype["fc.v"].astype(np.float64)
    with pytest.raises(CheckpointError, match=r"'fc\.v' has dtype float64"):
        check_arrays("ck", wrong_dtype, model, axes)
    missing = _arrays()
    del missing["fc.v"]
    with pytest.raises(CheckpointError, match=r"missing \['fc.v'\]"):
        check_arrays("ck", missing, model, axes)


def test_non_numeric_or_non_json_input_is_refused_on_write(tmp_path):
    with pytest.raises(CheckpointError, match="not numeric"):
        write_checkpoint(tmp_path / "a.npz", 1, {"x": np.array(["a"])}, CONFIG)
    with pytest.raises(CheckpointError, match="not JSON"):
        write_checkpoint(tmp_path / "a.npz", 1, _arrays(), {"x": object()})


# ----- what reading may inflate --------------------------------------------------------------


def _rewrite(src, dst, compress=zipfile.ZIP_STORED, replace=None):
    """Copy a checkpoint's entries into ``dst``, compressed as asked, ``replace`` name -> bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compress) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, (replace or {}).get(info.filename, zin.read(info)))


def test_a_row_is_stored_and_checksummed(tmp_path):
    path = tmp_path / "c.npz"
    write_checkpoint(path, 4, _arrays(), CONFIG, row={"round": 4, "loss": 0.5})
    assert read_checkpoint(path).row == {"round": 4, "loss": 0.5}
    with zipfile.ZipFile(path) as z:
        meta = json.loads(np.load(z.open(META + ".npy")).tobytes())
    meta["row"]["loss"] = 0.1  # an edited row fails the digest
    edited = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = __import__("io").BytesIO()
    np.save(buf, edited)
    _rewrite(path, tmp_path / "e.npz", replace={META + ".npy": buf.getvalue()})
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(tmp_path / "e.npz")


def test_a_compressed_entry_is_refused_unread(saved, tmp_path):
    # The case, smaller: a deflated entry of 40 MB of zeros (about 40 kB on disk).
    big = tmp_path / "big.npz"
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(big, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        pad = zipfile.ZipInfo("arrays/pad.npy")
        pad.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(pad, "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (10_000_000,)}
            )
            for _ in range(40):
                f.write(bytes(1_000_000))
    assert big.stat().st_size < 1_000_000
    with pytest.raises(
        CheckpointError, match=r"'arrays/pad.npy' is compressed .* inflate to 40,"
    ) as err:
        read_checkpoint(big)
    assert str(big) in str(err.value)
    whole = tmp_path / "whole.npz"  # every entry compressed: refused too
    _rewrite(saved, whole, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="compressed"):
        read_checkpoint(whole)


def test_entries_declaring_more_than_the_bound_are_refused(saved):
    with pytest.raises(
        CheckpointError, match=r"declare [\d,]+ bytes uncompressed, more than the 100"
    ) as err:
        read_checkpoint(saved, max_bytes=100)
    assert str(saved) in str(err.value)
    assert read_checkpoint(saved).round == 4


def test_a_header_that_disagrees_with_its_entry_is_refused(saved, tmp_path):
    # An array header claiming 10^12 floats in an entry of a few bytes: never allocated.
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    )
    buf.write(bytes(16))
    lying = tmp_path / "lying.npz"
    _rewrite(saved, lying, replace={"arrays/fc.bias.npy": buf.getvalue()})
    with pytest.raises(CheckpointError, match=r"'arrays/fc.bias.npy' declares a float32 array"):
        read_checkpoint(lying)


def test_a_row_too_large_to_read_back_is_refused_when_written(tmp_path, monkeypatch):
    from maestro_common.app import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_META_BYTES", 4096)
    with pytest.raises(CheckpointError, match=r"the metadata .* takes [\d,]+ bytes, more than"):
        write_checkpoint(tmp_path / "c.npz", 1, _arrays(), CONFIG, row={"x": "y" * 5000})
    assert not (tmp_path / "c.npz").exists()
    write_checkpoint(tmp_path / "c.npz", 1, _arrays(), CONFIG, row={"x": "y"})
    assert read_checkpoint(tmp_path / "c.npz").row == {"x": "y"}
