"""The report's tidy tables as pandas DataFrames: ``results.csv`` and ``summary.csv``.

Accuracies are percentages, the unit in the column's name (``accuracy-pct``). ``method`` is the
base method (``maestro``), ``variant`` what the run's label adds to it (``warmup``,
``tucker+breakeven``; empty for the method as the paper defines it), every setting a variant is
made of has its own column (:data:`simulations.labels.VARIANT_SETTINGS`), and ``label`` is the
name the report's markdown tables show (``maestro+warmup``): one column to group runs by without
mixing a method with its variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simulations.labels import VARIANT_SETTINGS, variant_of, variant_settings
from simulations.report.runs import (
    Run,
    bytes_per_client_round,
    load_runs,
    run_folders,
    tier_labels,
    tier_payload,
)

VARIANT_COLUMNS = ["label", "variant", *VARIANT_SETTINGS]
RESULTS_COLUMNS = [
    "run",
    "method",
    "seed",
    "round",
    "tier",
    "beta",
    "accuracy-pct",
    "accuracy-last-pct",
    "loss",
    "macs",
    "params",
    "virtual-clock",
    "wall-seconds",
    *VARIANT_COLUMNS,
]
SUMMARY_COLUMNS = [
    "method",
    "beta",
    "seed",
    "accuracy-pct",
    "accuracy-last-pct",
    "evals",
    "last-round",
    "lr",
    "macs",
    "params",
    "bytes-per-round",
    "client-bytes-per-round",
    "run",
    *VARIANT_COLUMNS,
]


def _pct(fraction: float | None, digits: int = 4) -> float | None:
    return None if fraction is None else round(100 * float(fraction), digits)


def _variant(run: Run) -> dict[str, object]:
    return {"label": run.method, "variant": variant_of(run.config), **variant_settings(run.config)}


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """A tidy DataFrame: one row per run × evaluated round × tier.

    Columns: run (folder name), method (the base method), seed, round, tier (label, e.g.
    "0.2"), beta (float), accuracy-pct, accuracy-last-pct (character models; empty for images),
    loss, macs, params, virtual-clock (s), wall-seconds, then label, variant and the variant
    settings.
    """
    records = [
        {
            "run": run.folder.name,
            "method": str(run.config["method"]),
            "seed": run.seed,
            "round": int(row["round"]),
            "tier": tier,
            "beta": float(tier),
            "accuracy-pct": _pct(m.get("accuracy"), 6),
            "accuracy-last-pct": _pct(m.get("accuracy-last"), 6),
            "loss": m.get("loss"),
            "macs": m.get("macs"),
            "params": m.get("params"),
            "virtual-clock": row.get("virtual-clock"),
            "wall-seconds": row.get("wall-seconds"),
            **_variant(run),
        }
        for run in runs
        for row in run.evaluated
        for tier, m in sorted(row["tiers"].items(), key=lambda kv: float(kv[0]))
    ]
    return pd.DataFrame.from_records(records, columns=RESULTS_COLUMNS)


def summary_frame(runs: Sequence[Run], last_k: int = 3) -> pd.DataFrame:
    """The headline per run and tier: one row per method × variant × tier × seed.

    Columns: method (the base method), beta, seed, accuracy-pct (on the test set, the mean of
    the run's last ``last_k`` evaluations), accuracy-last-pct (likewise, a character model's
    accuracy at the last position of each window, LEAF's label; empty for images), evals (how
    many were averaged), last-round (of the last one), lr, macs and params (the method's model
    at the tier), bytes-per-round (the tier's payload down + up, per client and round),
    client-bytes-per-round (measured: the mean over the run's clients of the tier; empty when
    none took part), run (folder name), then label, variant and the variant settings.
    """
    records = []
    for run in sorted(runs, key=lambda r: (r.method, r.seed, r.folder.name)):
        evaluated = run.evaluated
        for tier in tier_labels([run]):
            accs = [r["tiers"][tier]["accuracy"] for r in evaluated if tier in r["tiers"]]
            # A character model's accuracy at the window's last position (LEAF's label) too.
            lasts = [
                r["tiers"][tier]["accuracy-last"]
                for r in evaluated
                if "accuracy-last" in r["tiers"].get(tier, {})
            ]
            last = [r for r in evaluated if tier in r["tiers"]][-1]
            m = last["tiers"][tier]
            records.append(
                {
                    "method": str(run.config["method"]),
                    "beta": float(tier),
                    "seed": run.seed,
                    "accuracy-pct": _pct(np.mean(accs[-last_k:])),
                    "accuracy-last-pct": _pct(np.mean(lasts[-last_k:])) if lasts else None,
                    "evals": len(accs[-last_k:]),
                    "last-round": int(last["round"]),
                    "lr": run.config.get("lr"),
                    "macs": m.get("macs"),
                    "params": m.get("params"),
                    "bytes-per-round": tier_payload([run], tier),
                    "client-bytes-per-round": bytes_per_client_round([run], tier),
                    "run": run.folder.name,
                    **_variant(run),
                }
            )
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


def load_frame(*paths: Path | str) -> pd.DataFrame:
    """Any set of runs as a tidy DataFrame (see :func:`runs_frame`).

    ``paths`` are run folders or harness ``--out`` folders, e.g.
    ``load_frame("runs/compare")``.
    """
    return runs_frame(load_runs(run_folders(paths)))
