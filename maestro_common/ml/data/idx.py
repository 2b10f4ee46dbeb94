"""Reading and writing IDX files (the MNIST / Fashion-MNIST container format).

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, followed by
``ndim`` big-endian ``uint32`` dimension sizes, followed by the array data in C order,
big-endian. Files may be gzip-compressed; compression is detected from the content
(the gzip magic bytes), not the file name, so a misnamed file still loads.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx"]

_GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian numpy dtype, as defined by the format.
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_SIZE_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # A truncated download is the common cause; say so instead of a bare zlib error.
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a numpy array.

    Parameters
    ----------
    path : str or Path
        File to read. Gzip compression is detected from the file content.

    Returns
    -------
    np.ndarray
        Array with the shape stored in the header and the native-endian version of the
        stored dtype (e.g. ``uint8`` for MNIST images). The array is writable.

    Raises
    ------
    ValueError
        If the file is not a valid IDX file: bad magic number, unknown dtype code,
        truncated header or data, or trailing bytes after the data.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes, need a 4-byte magic)")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(
            f"{path}: bad IDX magic number {raw[:4].hex()}; expected 0000<dtype><ndim>"
        )
    if code not in _CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02x}" for c in _CODE_TO_DTYPE)
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header ({len(raw)} bytes, need {header_len} for {ndim} dims)"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = _CODE_TO_DTYPE[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got < expected:
        raise ValueError(
            f"{path}: truncated IDX data for shape {shape} ({got} of {expected} bytes)"
        )
    if got > expected:
        raise ValueError(
            f"{path}: {got - expected} unexpected trailing bytes after IDX data of shape {shape}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    # astype copies, which both converts to native byte order and makes the result writable
    # (frombuffer over bytes is read-only).
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a numpy array as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    Useful for tests and for making small local samples of IDX datasets.

    Parameters
    ----------
    path : str or Path
        Destination file. Parent directories must exist.
    array : np.ndarray
        Array of at least one dimension with dtype uint8, int8, int16, int32, float32 or
        float64. Every dimension must fit in an unsigned 32-bit integer.

    Raises
    ------
    ValueError
        If the dtype or shape cannot be represented in IDX.
    """
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _KIND_SIZE_TO_CODE:
        raise ValueError(
            f"dtype {array.dtype} cannot be stored in IDX; "
            "use uint8, int8, int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    if any(d > 0xFFFFFFFF for d in array.shape):
        raise ValueError(f"shape {array.shape} has a dimension too large for IDX")
    code = _KIND_SIZE_TO_CODE[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        # mtime=0 keeps the output byte-identical across runs.
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
