"""Loading finished runs and the per-method, per-tier figures read from their metrics.

Each run folder holds ``config.json`` (the run config, with ``method`` and ``seed``) and
``metrics.jsonl`` (one row per round, ``"tiers"`` on evaluated rounds). Tier labels are the
tiers' budgets as strings ("0.2" .. "1"). Accuracies in ``metrics.jsonl`` are fractions; the
functions here return them so, and the tables, CSVs and plots turn them into percentages.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maestro_common.app.removed import REMOVED_KEYS, removed_key_message, without_removed_defaults
from simulations.client_compute import TierCompute, tier_compute
from simulations.labels import method_label

METHOD_ORDER = (
    "maestro",
    "maestro+warmup",
    "maestro+fjord-warmup",
    "fjord",
    "heterofl",
    "fedavg-all",
    "fedavg-fit",
)
RECORD = "harness.json"  # simulations.provenance.RECORD (not imported: keeps this module light)


@dataclass(frozen=True)
class Run:
    """One finished (or partial) run: its config and its metrics rows in round order."""

    folder: Path
    config: dict[str, Any]
    rows: tuple[dict[str, Any], ...]

    @property
    def method(self) -> str:
        """The method's label (:func:`~simulations.labels.method_label`): a variant such as
        ``maestro+warmup`` is reported apart from its method."""
        return method_label(self.config)

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def evaluated(self) -> list[dict[str, Any]]:
        """Rows with per-tier evaluation."""
        return [r for r in self.rows if r.get("tiers")]

    @property
    def record(self) -> dict[str, Any] | None:
        """The harness's record of the run (request, commands, commits), if it has one."""
        path = self.folder / RECORD
        return json.loads(path.read_text()) if path.exists() else None

    def last_evaluations(self, k: int) -> list[dict[str, Any]]:
        """The last ``k`` evaluated rows (fewer when the run evaluated fewer times)."""
        return self.evaluated[-k:]

    @property
    def final(self) -> dict[str, Any] | None:
        """The last evaluated row, or None."""
        evaluated = self.evaluated
        return evaluated[-1] if evaluated else None


def load_runs(folders: Iterable[Path | str]) -> list[Run]:
    """Read ``config.json`` and ``metrics.jsonl`` of every folder.

    Raises
    ------
    FileNotFoundError
        When a folder lacks either file.
    ValueError
        When a config has no ``method`` or ``seed``, or ran a variant whose code was removed
        (a removed key at its default, as every older run stores it, is dropped).
    """
    runs = []
    for folder in map(Path, folders):
        config = without_removed_defaults(json.loads((folder / "config.json").read_text()))
        removed = sorted(set(config) & set(REMOVED_KEYS))
        if removed:
            raise ValueError(f"{folder / 'config.json'}: {removed_key_message(removed[0])}")
        missing = [k for k in ("method", "seed") if k not in config]
        if missing:
            raise ValueError(f"{folder / 'config.json'} lacks {', '.join(missing)}")
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        rows = sorted(
            (json.loads(line) for line in lines if line.strip()), key=lambda r: r["round"]
        )
        runs.append(Run(folder, config, tuple(rows)))
    return runs


def run_folders(paths: Iterable[Path | str]) -> list[Path]:
    """Run folders from paths that are run folders or harness output folders (with ``runs/``)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "metrics.jsonl").exists():
            found.append(path)
        elif (path / "runs").is_dir():
            found += sorted(p for p in (path / "runs").iterdir() if (p / "metrics.jsonl").exists())
        else:
            raise FileNotFoundError(f"{path} is neither a run folder nor a harness --out folder")
    return found


def method_rank(method: str) -> tuple[int, str]:
    """Sort key of a method label: known methods in a fixed order, then the rest by name."""
    known = method in METHOD_ORDER
    return (METHOD_ORDER.index(method) if known else len(METHOD_ORDER), method)


def by_method(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by method, known methods first in a fixed order, then the rest by name."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.method].append(run)
    return {m: sorted(groups[m], key=lambda r: r.seed) for m in sorted(groups, key=method_rank)}


def tier_labels(runs: Sequence[Run]) -> list[str]:
    """Every tier label seen in any evaluated row, smallest budget first."""
    return sorted({t for run in runs for r in run.evaluated for t in r["tiers"]}, key=float)


def client_tier(client: dict[str, Any]) -> str | None:
    """A client entry's tier label (its β): ``tier-beta``, else its rank fraction.

    ``tier`` in a client row is the tier's index, not its label, so it is not used here.
    """
    if "tier-beta" in client:  # the node's tier; rank-fraction may be lowered by a deadline
        return f"{float(client['tier-beta']):g}"
    if "rank-fraction" in client:
        return f"{float(client['rank-fraction']):g}"
    return None


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation over seeds; the std is None for a single seed (a
    spread over one value is undefined, not zero)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return float(arr.mean()), std


def final_accuracy(runs: Sequence[Run], tier: str, last_k: int = 1) -> list[float]:
    """Per run that evaluated ``tier``: its mean accuracy (a fraction) over its last ``last_k``
    evaluations."""
    out = []
    for run in runs:
        accs = [r["tiers"][tier]["accuracy"] for r in run.evaluated if tier in r["tiers"]]
        if accs:
            out.append(float(np.mean(accs[-last_k:])))
    return out


def bytes_per_client_round(runs: Sequence[Run], tier: str) -> float | None:
    """Mean bytes down + up of one client of ``tier`` in one round, over rounds and seeds.

    None when no client of that tier took part (e.g. FedAvg on the devices that fit only).
    """
    totals = [
        c.get("bytes-down", 0) + c.get("bytes-up", 0)
        for run in runs
        for row in run.rows
        for c in row.get("clients", [])
        if client_tier(c) == tier
    ]
    return float(np.mean(totals)) if totals else None


def tiers_without_clients(runs: Sequence[Run]) -> list[str]:
    """Tier labels the runs evaluated that no client entry of any round belongs to: no device
    of that tier was ever sent work, so its accuracy is that of a sub-model no device of it
    trained. Empty when the runs recorded no client with a tier (nothing to tell from)."""
    seen = {client_tier(c) for run in runs for row in run.rows for c in row.get("clients", [])}
    seen.discard(None)
    if not seen:
        return []
    return [t for t in tier_labels(runs) if t not in seen]


def tier_cost(runs: Sequence[Run], tier: str) -> tuple[int, int] | None:
    """(MACs, params) of a method at ``tier``, from its last evaluated row."""
    for run in runs:
        final = run.final
        if final and tier in final["tiers"]:
            m = final["tiers"][tier]
            return int(m["macs"]), int(m["params"])
    return None


def tier_payload(runs: Sequence[Run], tier: str) -> int | None:
    """Bytes down + up of one client of ``tier`` in one round: its sub-model's payload, from the
    last evaluated row (defined for every tier, also one no client of took part in)."""
    for run in runs:
        final = run.final
        if final and tier in final["tiers"]:
            m = final["tiers"][tier]
            if "bytes-down" in m:
                return int(m["bytes-down"]) + int(m.get("bytes-up", m["bytes-down"]))
    return None


def model_of(runs: Sequence[Run]) -> str:
    """The model every run trained; ValueError when they differ."""
    models = {r.config.get("model", "cnn") for r in runs}
    if len(models) != 1:
        raise ValueError(f"runs of several models {sorted(models)}: no time axis")
    return models.pop()


def client_examples(runs: Sequence[Run], tier: str) -> list[int]:
    """The ``num-examples`` of every client entry of ``tier``."""
    return [
        int(c["num-examples"])
        for run in runs
        for row in run.rows
        for c in row.get("clients", [])
        if client_tier(c) == tier and c.get("num-examples")
    ]


def group_compute(group: Sequence[Run], tier: str) -> TierCompute | None:
    """A method's client compute per round at ``tier`` (:func:`simulations.client_compute`)."""
    # The group's runs share their settings (the harness refuses otherwise): the first's config.
    return tier_compute(group[0].config, tier, client_examples(group, tier))


def merged_selection(paths: Iterable[Path | str]) -> dict[str, Any] | None:
    """The lr sweeps (``lr-selection.json``) of several harness ``--out`` folders as one.

    Raises
    ------
    ValueError
        When their tuning settings differ, or two folders chose an lr for the same method: one
        report must not mix methods tuned differently.
    """
    merged: dict[str, Any] | None = None
    for path in map(Path, paths):
        file = path / "lr-selection.json"
        if not file.exists():
            continue
        selection = json.loads(file.read_text())
        if merged is None:
            merged = {"settings": selection["settings"], "methods": {}}
        elif selection["settings"] != merged["settings"]:
            raise ValueError(
                f"{file} was tuned with {selection['settings']}, another folder with "
                f"{merged['settings']}: report them apart"
            )
        twice = set(selection["methods"]) & set(merged["methods"])
        if twice:
            raise ValueError(f"{file} tunes {sorted(twice)} again: report them apart")
        merged["methods"].update(selection["methods"])
    return merged
