"""The centralized trainer's results: one :class:`Row` per trained model and tier, and their
forms on disk (a markdown table, and ``summary.csv`` in the federated report's schema)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from simulations.report import SUMMARY_COLUMNS


@dataclass(frozen=True)
class Row:
    """One tier β of one trained model (accuracies are fractions, as the evaluator gives them)."""

    model: str
    method: str  # the method's label (simulations.labels.method_label), or "svd"
    seed: int
    beta: float  # the tier label
    accuracy: float
    loss: float
    params: int
    macs: int
    train_seconds: float
    lr: float = 0.0
    step_cost: float = 1.0  # MACs of one training step's passes / one dense model's pass
    width: float = 1.0  # the budget evaluated at β: a width or rank fraction (the method's)
    # The same model's accuracy on the validation split (val-size), None without one: what
    # settings other than the lr are chosen on, never the test accuracy.
    val_accuracy: float | None = None
    # Character models: accuracy at each window's last position (LEAF's label); None for images.
    accuracy_last: float | None = None
    epochs: int = 0
    run: str = ""  # the folder a saved model goes to (<out>/<run>), also for its svd rows


def summary_frame(rows: Sequence[Row]) -> pd.DataFrame:
    """The rows in the federated report's ``summary.csv`` schema (accuracies in %).

    One evaluation per model, so ``evals`` is 1 and ``last-round`` the epochs trained; the
    payload columns are the federation's and stay empty.
    """
    records = [
        {
            # As the federated summary: the base method, and the label naming its variant.
            "method": r.method.split("+")[0],
            "label": r.method,
            "variant": "+".join(r.method.split("+")[1:]),
            "beta": r.beta,
            "seed": r.seed,
            "accuracy-pct": round(100 * r.accuracy, 4),
            "accuracy-last-pct": (
                None if r.accuracy_last is None else round(100 * r.accuracy_last, 4)
            ),
            "evals": 1,
            "last-round": r.epochs,
            "lr": r.lr,
            "macs": r.macs,
            "params": r.params,
            "bytes-per-round": None,
            "client-bytes-per-round": None,
            "run": r.run,
        }
        for r in rows
    ]
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


def summarize(rows: Sequence[Row]) -> str:
    """A markdown table: mean ± std over seeds for every (method, β)."""
    groups: dict[tuple[str, float], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.method, r.beta), []).append(r)
    text = any(r.accuracy_last is not None for r in rows)
    lines = [
        "| model | method | β | accuracy % (mean ± std) | "
        + ("last position % | " if text else "")
        + "validation % | seeds | params | MACs | lr | step cost |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if text else ""),
    ]
    for (method, beta), rs in groups.items():
        accs = [100 * r.accuracy for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        vals = [100 * r.val_accuracy for r in rs if r.val_accuracy is not None]
        val = f"{statistics.mean(vals):.2f}" if vals else "–"
        lasts = [100 * r.accuracy_last for r in rs if r.accuracy_last is not None]
        last = f"{statistics.mean(lasts):.2f} | " if text else ""
        params = round(statistics.mean(r.params for r in rs))
        macs = round(statistics.mean(r.macs for r in rs))
        lines.append(
            f"| {rs[0].model} | {method} | {beta:g} | {statistics.mean(accs):.2f} ± {std:.2f} "
            f"| {last}{val} | {len(rs)} | {params:,} | {macs:,} | {rs[0].lr:g} "
            f"| {statistics.mean(r.step_cost for r in rs):.2f} |"
        )
    return "\n".join(lines)
