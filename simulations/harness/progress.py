"""A run's metrics rows read back from its folder, and the progress line shown while it trains."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from server.results import MetricsError, read_metrics
from simulations.harness.errors import HarnessError


def read_rows(folder: Path) -> list[dict[str, Any]]:
    """The metrics rows recorded so far (a line being written is skipped)."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if line.strip():
                rows.append(json.loads(line))
    return rows


def checked_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of a run folder's metrics.jsonl, which must be rounds 1, 2, ... in order, each
    once (a cut last line is left out: the ServerApp repairs it when it resumes).

    Raises
    ------
    HarnessError
        Naming the file, when a line is damaged or the rounds are not 1..n in order.
    """
    path = folder / "metrics.jsonl"
    try:
        rows, _ = read_metrics(path)
    except MetricsError as err:
        raise HarnessError(f"{err}; use another --out") from err
    rounds = [r["round"] for r in rows]
    if rounds != list(range(1, len(rows) + 1)):
        raise HarnessError(
            f"{path} records rounds {rounds}, not 1..{len(rows)} in order, each once: the run "
            "folder was written by more than one writer or damaged; use another --out"
        )
    return rows


def valid_replies(row: Mapping[str, Any]) -> int:
    """Train replies accepted and aggregated in a round (older rows: clients not dropped)."""
    if "valid-replies" in row:
        return int(row["valid-replies"])
    return sum(1 for c in row.get("clients", []) if not c.get("dropped"))


def never_trained(rows: Sequence[Mapping[str, Any]]) -> bool:
    """No rows at all, or no round with a valid reply: the model was never trained."""
    return not rows or all(valid_replies(r) == 0 or r.get("no-valid-reply") for r in rows)


def _accuracy(rows: Sequence[Mapping[str, Any]]) -> str:
    # Test accuracy; validation accuracy (marked "val") for runs that never see the test set.
    key = "tiers" if any(r.get("tiers") for r in rows) else "val-tiers"
    evaluated = [r for r in rows if r.get(key)]
    if not evaluated:
        return "…"
    tiers = evaluated[-1][key]
    shown = sorted(tiers, key=float)
    shown = [shown[0], shown[-1]] if len(shown) > 1 else shown
    mark = "" if key == "tiers" else "val "
    return ", ".join(f"{mark}β={t}: {100 * tiers[t]['accuracy']:.2f}%" for t in shown)


def progress_line(
    name: str, rows: Sequence[Mapping[str, Any]], total: int, done: int, startup: float
) -> str:
    """One progress line read off the metrics rows.

    Before the first new round: the start-up phase and its time. After: rounds done, the last
    accuracy (smallest and largest tier) and the time left, from the wall time of the rounds
    trained by this invocation (rounds before ``done`` were resumed, start-up is not counted).
    """
    new = [r for r in rows if r["round"] > done]
    if not new:
        return f"[{name}] starting up (SuperLink, simulation engine, clients): {startup:.0f} s"
    rnd = max(r["round"] for r in rows)
    per_round = sum(float(r.get("wall-seconds", 0.0)) for r in new) / len(new)
    left = per_round * (total - rnd)
    return (
        f"[{name}] round {rnd}/{total} | {_accuracy(rows)} | "
        f"{per_round:.1f} s/round, ~{left / 60:.1f} min left"
    )
