"""What a run leaves behind: config.json, metrics.jsonl, summary.md, checkpoint.npz.

The files and their roles are described in docs/architecture.md ("What a run leaves behind").

The checkpoint (:mod:`maestro_common.app.checkpoint`: arrays and JSON, no pickle, with a checksum)
is written before the round's metrics line, each by write-then-rename, so a crash at any point
leaves a consistent pair: resume drops metric lines past the checkpoint's round.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maestro_common.app.checkpoint import Checkpoint, read_checkpoint, write_checkpoint

CHECKPOINT = "checkpoint.npz"
METRICS, CONFIG, SUMMARY = "metrics.jsonl", "config.json", "summary.md"
# The pickle checkpoint of earlier versions: never loaded (unpickling can run code).
OLD_CHECKPOINT = "checkpoint.pt"


class ResumeError(RuntimeError):
    """A run folder cannot be resumed (or would be overwritten) as asked."""


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    folder: Path, server_round: int, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any]
) -> None:
    """Arrays + the round they finished + the run config, atomically."""
    write_checkpoint(folder / CHECKPOINT, server_round, arrays, config)


def load_checkpoint(folder: Path) -> Checkpoint:
    """The folder's verified checkpoint (:func:`maestro_common.app.checkpoint.read_checkpoint`)."""
    return read_checkpoint(folder / CHECKPOINT)


# Keys that may differ on resume; everything else must match the checkpoint's run.
RESUMABLE_CHANGES = {"num-rounds", "resume", "round-timeout", "device", "eval-every", "node-wait"}


def check_resumable(saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    diff = sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)
    )
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ResumeError(
            f"cannot resume: the run config differs from the checkpoint's ({detail}); "
            f"only {sorted(RESUMABLE_CHANGES)} may change"
        )


class RunRecorder:
    """Writes one run's folder; prepares it for a fresh start or a resume."""

    def __init__(self, folder: Path, config: Mapping[str, Any], resume: bool) -> None:
        self.folder = folder
        self.config = dict(config)
        self.start_round = 0
        self.initial_arrays: dict[str, np.ndarray] | None = None
        has_checkpoint = (folder / CHECKPOINT).exists()
        if (folder / OLD_CHECKPOINT).exists() and not has_checkpoint:
            raise ResumeError(
                f"{folder / OLD_CHECKPOINT} is a checkpoint of the old pickle format, which is no "
                f"longer read (loading a pickle can run code); the format is now {CHECKPOINT}. "
                "Start the run again in another folder (or another run-name)"
            )
        if resume and has_checkpoint:
            state = load_checkpoint(folder)
            check_resumable(state.config, self.config)
            self.start_round = state.round
            self.initial_arrays = state.arrays
            self._truncate_metrics(self.start_round)
        elif (folder / METRICS).exists() and resume:
            raise ResumeError(
                f"{folder} has {METRICS} but no {CHECKPOINT}: nothing to resume from; move the "
                "folder away or choose another run-name"
            )
        elif (has_checkpoint or (folder / METRICS).exists()) and not resume:
            raise ResumeError(
                f"{folder} already holds a run: set resume=true to continue it, or choose "
                "another run-name or output-dir"
            )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(self.config, indent=1, sort_keys=True) + "\n")

    def _truncate_metrics(self, last_round: int) -> None:
        path = self.folder / METRICS
        if not path.exists():
            return
        keep = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["round"] <= last_round
        ]
        _atomic_write(path, lambda f: f.write("".join(x + "\n" for x in keep).encode()))

    def record_round(
        self, server_round: int, arrays: Mapping[str, np.ndarray], row: Mapping[str, Any]
    ) -> None:
        save_checkpoint(self.folder, server_round, arrays, self.config)
        with open(self.folder / METRICS, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        path = self.folder / METRICS
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
