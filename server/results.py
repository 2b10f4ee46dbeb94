"""What a run leaves behind: config.json, metrics.jsonl, summary.md, checkpoint.npz.

The files and their roles are described in docs/architecture.md ("What a run leaves behind").

The checkpoint (:mod:`maestro_common.app.checkpoint`: arrays and JSON, no pickle, with a checksum)
holds the round's metrics row too, and is committed by one rename before that row is appended to
``metrics.jsonl``. Whatever a crash cuts, the last complete round survives: on resume, lines past
the checkpoint's round are dropped, a cut (partial) last line is dropped, and the checkpoint's own
row is appended when the crash came before it reached ``metrics.jsonl``. Any other damage (a
line that is not JSON before the last, rounds out of order) is refused with the file named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maestro_common.app.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from maestro_common.app.config import as_current

CHECKPOINT = "checkpoint.npz"
METRICS, CONFIG, SUMMARY = "metrics.jsonl", "config.json", "summary.md"
# The pickle checkpoint of earlier versions: never loaded (unpickling can run code).
OLD_CHECKPOINT = "checkpoint.pt"


class ResumeError(RuntimeError):
    """A run folder cannot be resumed (or would be overwritten) as asked."""


class MetricsError(ResumeError):
    """A ``metrics.jsonl`` that cannot be read or repaired; the message names the file."""


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a ``metrics.jsonl``, and whether its last line was cut (left out of the rows).

    A line that is not a JSON object is tolerated only as the file's last non-blank line (a
    write cut by a crash); rounds must increase from row to row.

    Raises
    ------
    MetricsError
        Naming the file and the line: a damaged line before the last, a row without an integer
        ``round``, or rounds out of order (written twice, e.g. by two writers).
    """
    path = Path(path)
    if not path.exists():
        return [], False
    lines = path.read_bytes().split(b"\n")
    filled = [i for i, line in enumerate(lines) if line.strip()]
    rows: list[dict[str, Any]] = []
    for i in filled:
        try:
            row = json.loads(lines[i].decode())
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
            if i == filled[-1]:
                return rows, True
            raise MetricsError(
                f"{path}: line {i + 1} is not JSON ({err}); only a cut last line can be repaired. "
                "Move the run folder away (or choose another run-name)"
            ) from err
        rnd = row.get("round") if isinstance(row, dict) else None
        if not isinstance(rnd, int) or isinstance(rnd, bool):
            raise MetricsError(f"{path}: line {i + 1} is not a metrics row with an integer round")
        if rows and rnd <= rows[-1]["round"]:
            raise MetricsError(
                f"{path}: line {i + 1} records round {rnd} after round {rows[-1]['round']}: rounds "
                "out of order (two writers on one run folder?); move the run folder away (or "
                "choose another run-name)"
            )
        rows.append(row)
    return rows, False


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    folder: Path,
    server_round: int,
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    row: Mapping[str, Any] | None = None,
) -> None:
    """Arrays + the round they finished + the run config (+ that round's metrics row),
    atomically."""
    write_checkpoint(folder / CHECKPOINT, server_round, arrays, config, row)


def load_checkpoint(folder: Path) -> Checkpoint:
    """The folder's verified checkpoint (:func:`maestro_common.app.checkpoint.read_checkpoint`)."""
    return read_checkpoint(folder / CHECKPOINT)


# Keys that may differ on resume; everything else must match the checkpoint's run.
RESUMABLE_CHANGES = {
    *("num-rounds", "resume", "round-timeout", "device", "eval-every", "node-wait"),
    "tensorboard",  # only what is logged besides the run's own files
}


def check_resumable(saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Refuse to resume a run whose config changed beyond :data:`RESUMABLE_CHANGES`, naming the
    keys. A key removed from the code since the checkpoint, stored there at its old default,
    is no change (the run did not use its variant), and neither is a key added since, now at
    its default (:func:`~maestro_common.app.config.as_current`)."""
    saved = as_current(saved)
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
        self.repairs: list[str] = []  # what resume repaired in metrics.jsonl, for the log
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
            self._repair_metrics(state.round, state.row)
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

    def _repair_metrics(self, last_round: int, last_row: Mapping[str, Any] | None) -> None:
        """Make ``metrics.jsonl`` hold the rows up to the checkpoint's round: drop later rows
        and a cut last line; append the checkpoint's row if the crash came before it was."""
        path = self.folder / METRICS
        rows, cut = read_metrics(path)
        if cut:
            self.repairs.append(f"{path}: dropped a cut (partial) last line")
        keep = [r for r in rows if r["round"] <= last_round]
        if len(keep) < len(rows):
            dropped = [r["round"] for r in rows[len(keep) :]]
            self.repairs.append(f"{path}: dropped rounds {dropped} past the checkpoint's")
        if last_row is not None and (not keep or keep[-1]["round"] < last_round):
            keep.append(dict(last_row))
            self.repairs.append(f"{path}: restored round {last_round}'s row from the checkpoint")
        if not self.repairs and not path.exists():
            return
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep)
        _atomic_write(path, lambda f: f.write(lines.encode()))

    def record_round(
        self, server_round: int, arrays: Mapping[str, np.ndarray], row: Mapping[str, Any]
    ) -> None:
        """Commit the round: its checkpoint, holding its row, by one rename; then the row's line.
        A crash between the two loses nothing (resume restores the row from the checkpoint)."""
        save_checkpoint(self.folder, server_round, arrays, self.config, row)
        with open(self.folder / METRICS, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        """The rows recorded so far (:func:`read_metrics`; a cut last line is left out)."""
        return read_metrics(self.folder / METRICS)[0]
