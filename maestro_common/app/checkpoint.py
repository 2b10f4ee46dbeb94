"""Checkpoints that cannot run code: named arrays in an ``.npz`` file, metadata as JSON inside.

A checkpoint file is an uncompressed numpy ``.npz`` archive (read with ``allow_pickle=False``, so
loading never unpickles anything) holding:

- ``arrays/<key>``: every array of the model, numeric dtypes only;
- ``meta.json``: a uint8 array of UTF-8 JSON with the format name and version, the round, the run
  config, optionally the round's metrics row, each array's dtype and shape, and a SHA-256 digest
  over the round, the config, the row and every array's name, dtype, shape and bytes.

The round's metrics row rides in the checkpoint so that the checkpoint and its row are committed
by one rename: a crash before ``metrics.jsonl`` gets the row loses nothing
(the server restores it on resume).

:func:`read_checkpoint` bounds what it reads before reading any entry whole (entries stored
uncompressed, as written here, so nothing inflates beyond the file's own size; their declared
sizes together within a limit; each array's header agreeing with its entry's size), then checks
the metadata, the digest and that every float is finite; :func:`check_arrays` checks the arrays
against the model about to be resumed. Every failure is a :class:`CheckpointError` that names
the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT, VERSION = "maestro-fl-checkpoint", 1
META, PREFIX = "meta.json", "arrays/"
_KINDS = "fiub"  # float, signed, unsigned, bool: what a state_dict holds
# What read_checkpoint will read at most: the declared size of all entries together (the
# largest model here, a factored ResNet, is under 100 MB), and of the metadata entry alone.
MAX_BYTES = 1 << 30
MAX_META_BYTES = 64 << 20


class CheckpointError(ValueError):
    """A checkpoint file that cannot be written, read or resumed from; the message names it."""


@dataclass
class Checkpoint:
    """What a checkpoint holds: the last finished round, the global arrays and the run config."""

    round: int
    arrays: dict[str, np.ndarray]
    config: dict[str, Any]
    row: dict[str, Any] | None = None  # that round's metrics row (None: written without one)


def write_checkpoint(
    path: Path,
    server_round: int,
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    row: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (write a temporary file, then rename over ``path``); the
    folder is created if needed. ``row`` (the round's metrics row) is stored and checksummed with
    it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}
    for key, arr in arrays.items():
        if arr.dtype.kind not in _KINDS:
            raise CheckpointError(f"{path}: array {key!r} has dtype {arr.dtype}, not numeric")
    try:
        config_json = json.loads(json.dumps(dict(config)))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the run config is not JSON: {err}") from err
    try:
        row_json = None if row is None else json.loads(json.dumps(dict(row)))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the metrics row is not JSON: {err}") from err
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "round": int(server_round),
        "config": config_json,
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in arrays.items()},
        "sha256": _digest(int(server_round), config_json, arrays, row_json),
    }
    if row_json is not None:
        meta["row"] = row_json
    entries = {PREFIX + k: v for k, v in arrays.items()}
    entries[META] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    if entries[META].nbytes > MAX_META_BYTES - 1024:  # what read_checkpoint would refuse
        raise CheckpointError(
            f"{path}: the metadata (run config and metrics row) takes {entries[META].nbytes:,} "
            f"bytes, more than the {MAX_META_BYTES:,} a checkpoint may hold"
        )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **entries)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path, max_bytes: int = MAX_BYTES) -> Checkpoint:
    """Read and verify a checkpoint (format, digest, finite floats); never unpickles.

    Before any entry is read whole, the archive's entries are checked: each stored uncompressed
    (as :func:`write_checkpoint` writes them; a compressed entry could inflate far beyond the
    file's size, so it is refused unread), their declared sizes together at most ``max_bytes``
    (the metadata entry at most ``MAX_META_BYTES``), and each array's ``.npy`` header describing
    exactly the bytes its entry holds.

    Raises
    ------
    CheckpointError
        If the file is missing, not a checkpoint of this format, larger than the bound,
        truncated or altered (digest mismatch), or holds a non-finite float; the message names
        the file and the cause.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            _check_entries(path, npz.zip, max_bytes)
            names = set(npz.files)
            if META not in names:
                raise CheckpointError(f"{path}: not a Maestro-FL checkpoint (no {META} entry)")
            meta = json.loads(npz[META].tobytes().decode())
            arrays = {n[len(PREFIX) :]: npz[n] for n in names if n.startswith(PREFIX)}
    except CheckpointError:
        raise
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: checkpoint file not found") from err
    except Exception as err:  # zip, npy header, JSON: whatever a damaged file trips
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated, corrupt or not an .npz file): "
            f"{type(err).__name__}: {err}"
        ) from err
    _check_meta(path, meta, arrays)
    if _digest(meta["round"], meta["config"], arrays, meta.get("row")) != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch: the file was altered or damaged")
    for key, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{path}: array {key!r} holds NaN or Inf")
    return Checkpoint(meta["round"], arrays, meta["config"], meta.get("row"))


def _check_entries(path: Path, archive: zipfile.ZipFile, max_bytes: int) -> None:
    """Refuse an archive whose entries would inflate beyond the bound, before reading them."""
    infos = archive.infolist()
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise CheckpointError(
            f"{path}: its entries declare {total:,} bytes uncompressed, more than the "
            f"{max_bytes:,} a checkpoint may hold; not read"
        )
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{path}: entry {info.filename!r} is compressed (zip method "
                f"{info.compress_type}, {info.compress_size:,} bytes declared to inflate to "
                f"{info.file_size:,}); checkpoints are stored uncompressed, so it is not read"
            )
        if info.filename == META + ".npy" and info.file_size > MAX_META_BYTES:
            raise CheckpointError(
                f"{path}: entry {META} declares {info.file_size:,} bytes, more than the "
                f"{MAX_META_BYTES:,} allowed for the metadata; not read"
            )
        with archive.open(info) as entry:  # only the header is read here
            try:
                version = np.lib.format.read_magic(entry)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(entry)
            except ValueError as err:
                raise CheckpointError(
                    f"{path}: entry {info.filename!r} is not a .npy array: {err}"
                ) from err
            header = entry.tell()
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if header + nbytes != info.file_size:
            raise CheckpointError(
                f"{path}: entry {info.filename!r} declares a {dtype} array of shape {shape} "
                f"({nbytes:,} bytes) but holds {info.file_size - header:,} bytes; not read"
            )


def check_arrays(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    prefix_axes: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Check a checkpoint's arrays against the model a run is about to resume.

    Keys must match exactly and dtypes equal. Shapes must equal the model's, except that on an
    axis in ``prefix_axes`` (a factored layer's rank axis, shrunk during training) the size may be
    anything from 1 up to the model's.

    Raises
    ------
    CheckpointError
        Naming the file and the first key that disagrees.
    """
    missing, unknown = set(reference) - set(arrays), set(arrays) - set(reference)
    if missing or unknown:
        raise CheckpointError(
            f"{path}: does not match the model: missing {sorted(missing)[:5]}, "
            f"unknown {sorted(unknown)[:5]}"
        )
    axes = prefix_axes or {}
    for key in sorted(reference):
        arr, ref = arrays[key], reference[key]
        if arr.dtype != ref.dtype:
            raise CheckpointError(f"{path}: {key!r} has dtype {arr.dtype}, the model {ref.dtype}")
        ok = arr.ndim == ref.ndim and all(
            (1 <= a <= r) if axis in axes.get(key, ()) else a == r
            for axis, (a, r) in enumerate(zip(arr.shape, ref.shape, strict=False))
        )
        if not ok:
            raise CheckpointError(
                f"{path}: {key!r} has shape {arr.shape}, the model {ref.shape} (only the rank "
                f"axes {tuple(axes.get(key, ()))} may be smaller)"
            )


def _check_meta(path: Path, meta: object, arrays: Mapping[str, np.ndarray]) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: bad checkpoint metadata: {what}")

    need(isinstance(meta, dict), "not a JSON object")
    assert isinstance(meta, dict)
    need(meta.get("format") == FORMAT, f"format {meta.get('format')!r}, expected {FORMAT!r}")
    need(meta.get("version") == VERSION, f"version {meta.get('version')!r}, expected {VERSION}")
    rnd = meta.get("round")
    need(isinstance(rnd, int) and not isinstance(rnd, bool) and rnd >= 0, f"round {rnd!r}")
    need(isinstance(meta.get("config"), dict), "config is not an object")
    need(isinstance(meta.get("sha256"), str), "no sha256")
    need(meta.get("row") is None or isinstance(meta.get("row"), dict), "row is not an object")
    listed = meta.get("arrays")
    need(isinstance(listed, dict) and set(listed) == set(arrays), "array list disagrees")
    assert isinstance(listed, dict)
    for key, arr in arrays.items():
        spec = listed[key]
        need(
            isinstance(spec, dict)
            and spec.get("dtype") == arr.dtype.str
            and spec.get("shape") == list(arr.shape)
            and arr.dtype.kind in _KINDS,
            f"array {key!r} is {arr.dtype.str} {list(arr.shape)}, listed as {spec!r}",
        )


def _digest(
    server_round: int,
    config: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    row: Mapping[str, Any] | None = None,
) -> str:
    h = hashlib.sha256()
    head: dict[str, Any] = {"round": server_round, "config": config}
    if row is not None:  # checkpoints written without a row keep their digest
        head["row"] = row
    h.update(json.dumps(head, sort_keys=True).encode())
    for key in sorted(arrays):
        arr = np.asarray(arrays[key], order="C")
        h.update(json.dumps([key, arr.dtype.str, list(arr.shape)]).encode())
        h.update(arr.tobytes())
    return h.hexdigest()
