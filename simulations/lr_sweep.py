"""Per-method learning-rate selection on the server's validation split (``simulations.run --lrs``).

Every method gets the same tuning budget: one run per lr of one grid, at a shorter horizon
(``--select-rounds``) and one seed (``--select-seed``), with the run's ``val-size`` examples held
out of the training set and ``test-eval = false``, so the test set is never evaluated while
choosing. A method's score at an lr is the mean over tiers of the mean of its last K validation
evaluations (K = the report's ``--last-evals``); the lr with the best score is used for every
seed of the method's full-horizon runs. ``lr-selection.json`` in the harness's ``--out`` keeps the
choice and the whole grid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SELECTION = "lr-selection.json"
SWEEP_DIR = "select"  # sweep runs go to <out>/select/<method>-lr<lr>/


def parse_lrs(text: str) -> tuple[float, ...]:
    """``"0.02,0.05"`` → (0.02, 0.05); positive, finite and distinct, else ValueError."""
    try:
        lrs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise ValueError(f"--lrs must be comma-separated numbers, got {text!r}") from err
    if not lrs or not all(np.isfinite(lr) and lr > 0 for lr in lrs):
        raise ValueError(f"--lrs must be positive finite numbers, got {text!r}")
    if len({f"{lr:g}" for lr in lrs}) != len(lrs):
        raise ValueError(f"--lrs repeats a value: {text!r}")
    return lrs


def sweep_name(method: str, lr: float) -> str:
    """The sweep run's folder name, e.g. ``maestro-lr0.05``."""
    return f"{method}-lr{lr:g}"


def settings(lrs: Sequence[float], rounds: int, seed: int, last_k: int) -> dict[str, Any]:
    """What the selection depends on besides the runs' own settings (recorded and compared)."""
    return {
        "lrs": ",".join(f"{lr:g}" for lr in lrs),
        "select-rounds": rounds,
        "select-seed": seed,
        "last-k": last_k,
    }


def sweep_config(cfg: Mapping[str, Any], lr: float, rounds: int, seed: int, out_dir: Path) -> dict:
    """The sweep run of ``cfg``'s method at ``lr``: ``rounds`` rounds, seed ``seed``, validation
    only, in ``out_dir/select``."""
    return {
        **cfg,
        "lr": lr,
        "num-rounds": rounds,
        "seed": seed,
        "test-eval": False,
        "run-name": sweep_name(str(cfg["method"]), lr),
        "output-dir": str(out_dir / SWEEP_DIR),
    }


def val_score(rows: Sequence[Mapping[str, Any]], last_k: int) -> tuple[dict[str, float], float]:
    """Per tier, the mean validation accuracy of the last ``last_k`` evaluations; and their mean.

    Raises
    ------
    ValueError
        When no row holds a validation evaluation (``val-tiers``).
    """
    evaluated = [r for r in rows if r.get("val-tiers")]
    if not evaluated:
        raise ValueError("no round was evaluated on the validation split (val-tiers)")
    last = evaluated[-last_k:]
    tiers = sorted({t for r in last for t in r["val-tiers"]}, key=float)
    per_tier = {
        t: float(np.mean([r["val-tiers"][t]["accuracy"] for r in last if t in r["val-tiers"]]))
        for t in tiers
    }
    return per_tier, float(np.mean(list(per_tier.values())))


def choose(grid: Sequence[Mapping[str, Any]]) -> float | None:
    """The lr of the best ``mean`` among the grid entries that have one (ties: the smaller lr);
    None when every entry failed."""
    scored = [e for e in grid if e.get("mean") is not None and np.isfinite(e["mean"])]
    if not scored:
        return None
    return min(scored, key=lambda e: (-e["mean"], e["lr"]))["lr"]


def method_selection(results: Mapping[float, Sequence[Mapping[str, Any]] | str], last_k: int):
    """One method's grid and choice from its sweep runs.

    Parameters
    ----------
    results : Mapping[float, rows or str]
        Per lr: the sweep run's metrics rows, or the message of its failure.
    last_k : int
        Validation evaluations averaged per tier.

    Returns
    -------
    dict
        ``{"lr": chosen or None, "grid": [{"lr", "val-accuracy": {tier: acc}, "mean"} or
        {"lr", "failed": message}, ...]}`` in lr order.
    """
    grid = []
    for lr in sorted(results):
        got = results[lr]
        if isinstance(got, str):
            grid.append({"lr": lr, "failed": got})
            continue
        try:
            per_tier, mean = val_score(got, last_k)
        except ValueError as err:
            grid.append({"lr": lr, "failed": str(err)})
            continue
        grid.append({"lr": lr, "val-accuracy": per_tier, "mean": mean})
    return {"lr": choose(grid), "grid": grid}


def read_selection(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / SELECTION
    return json.loads(path.read_text()) if path.exists() else None


def check_selection(out_dir: Path, wanted: Mapping[str, Any]) -> None:
    """An existing ``lr-selection.json`` must come from the same tuning settings.

    Raises
    ------
    ValueError
        Naming the settings that differ: the report would mix methods tuned differently.
    """
    old = read_selection(out_dir)
    if old is None:
        return
    diff = [
        f"{k}: {old['settings'].get(k)!r} -> {v!r}"
        for k, v in wanted.items()
        if old["settings"].get(k) != v
    ]
    if diff:
        raise ValueError(
            f"{out_dir / SELECTION} was chosen with other tuning settings ({'; '.join(diff)}): "
            "every method must get the same tuning budget; use another --out"
        )


def write_selection(
    out_dir: Path, wanted: Mapping[str, Any], methods: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Add (or replace) ``methods``' choices in ``lr-selection.json``; returns the whole file."""
    old = read_selection(out_dir) or {"settings": dict(wanted), "methods": {}}
    record = {"settings": dict(wanted), "methods": {**old["methods"], **methods}}
    (out_dir / SELECTION).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record
