"""Time to accuracy of a finished run, read off its metrics rows (virtual clock)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def time_to_accuracy(rows: Sequence[dict[str, Any]], tier: str, target: float) -> float | None:
    """Virtual seconds since the start until ``tier`` first reaches ``target`` accuracy.

    Parameters
    ----------
    rows : Sequence[dict]
        ``metrics.jsonl`` rows in round order; rows without ``"tiers"`` (not evaluated) are
        skipped.
    tier : str
        Tier label, as in ``row["tiers"]`` (e.g. ``"0.2"``).
    target : float
        Accuracy in [0, 1].

    Returns
    -------
    float | None
        ``row["virtual-clock"]`` of the first row with accuracy ≥ target; None if never reached.
    """
    for row in rows:
        metrics = (row.get("tiers") or {}).get(tier)
        if metrics is not None and metrics["accuracy"] >= target:
            return float(row["virtual-clock"])
    return None
