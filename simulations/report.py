"""The comparison report across runs: methods side by side at every tier, over seeds.

Each run folder holds ``config.json`` (the run config, with ``method`` and ``seed``) and
``metrics.jsonl`` (one row per round, ``"tiers"`` on evaluated rounds). Tier labels are the
tiers' budgets as strings ("0.2" .. "1") and are the same for every method; the MACs and params
behind a label differ per method (a width prefix for FjORD/HeteroFL, a rank prefix for Maestro,
the whole model for FedAvg).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from simulations.time_to_accuracy import time_to_accuracy

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt

METHOD_ORDER = ("maestro", "fjord", "heterofl", "fedavg-all", "fedavg-fit")
PLOTS = {
    "accuracy-per-round.png": "Test accuracy per round, one panel per tier (mean over seeds)",
    "accuracy-vs-macs.png": "Final test accuracy against forward MACs at each tier",
    "bytes-per-round.png": "Bytes down + up per client per round, by tier",
    "accuracy-vs-virtual-time.png": "Accuracy of the full and the smallest tier against the "
    "virtual clock",
}
_MARKERS = "osD^v<>ph*"


@dataclass(frozen=True)
class Run:
    """One finished (or partial) run: its config and its metrics rows in round order."""

    folder: Path
    config: dict[str, Any]
    rows: tuple[dict[str, Any], ...]

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def evaluated(self) -> list[dict[str, Any]]:
        """Rows with per-tier evaluation."""
        return [r for r in self.rows if r.get("tiers")]

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
        When a config has no ``method`` or ``seed``.
    """
    runs = []
    for folder in map(Path, folders):
        config = json.loads((folder / "config.json").read_text())
        missing = [k for k in ("method", "seed") if k not in config]
        if missing:
            raise ValueError(f"{folder / 'config.json'} lacks {', '.join(missing)}")
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        rows = sorted(
            (json.loads(line) for line in lines if line.strip()), key=lambda r: r["round"]
        )
        runs.append(Run(folder, config, tuple(rows)))
    return runs


def _by_method(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by method, known methods first in a fixed order, then the rest by name."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.method].append(run)

    def rank(method: str) -> tuple[int, str]:
        known = method in METHOD_ORDER
        return (METHOD_ORDER.index(method) if known else len(METHOD_ORDER), method)

    return {m: sorted(groups[m], key=lambda r: r.seed) for m in sorted(groups, key=rank)}


def _tiers(runs: Sequence[Run]) -> list[str]:
    """Every tier label seen in any evaluated row, smallest budget first."""
    return sorted({t for run in runs for r in run.evaluated for t in r["tiers"]}, key=float)


def _client_tier(client: dict[str, Any]) -> str | None:
    """A client entry's tier label: its ``tier``/``tier-beta``, else its rank fraction."""
    if "tier" in client:
        return str(client["tier"])
    if "tier-beta" in client:  # the node's tier; rank-fraction may be lowered by a deadline
        return f"{float(client['tier-beta']):g}"
    if "rank-fraction" in client:
        return f"{float(client['rank-fraction']):g}"
    return None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    # Sample standard deviation across seeds; 0 for a single seed rather than NaN.
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std


def final_accuracy(runs: Sequence[Run], tier: str) -> list[float]:
    """Final accuracy at ``tier`` of every run that evaluated it."""
    finals = [run.final for run in runs]
    return [f["tiers"][tier]["accuracy"] for f in finals if f and tier in f["tiers"]]


def bytes_per_client_round(runs: Sequence[Run], tier: str) -> float | None:
    """Mean bytes down + up of one client of ``tier`` in one round, over rounds and seeds.

    None when no client of that tier took part (e.g. FedAvg on the devices that fit only).
    """
    totals = [
        c.get("bytes-down", 0) + c.get("bytes-up", 0)
        for run in runs
        for row in run.rows
        for c in row.get("clients", [])
        if _client_tier(c) == tier
    ]
    return float(np.mean(totals)) if totals else None


def _tier_cost(runs: Sequence[Run], tier: str) -> tuple[int, int] | None:
    """(MACs, params) of a method at ``tier``, from its last evaluated row."""
    for run in runs:
        final = run.final
        if final and tier in final["tiers"]:
            m = final["tiers"][tier]
            return int(m["macs"]), int(m["params"])
    return None


def comparison_table(runs: Sequence[Run]) -> str:
    """Markdown table: one line per method × tier.

    Columns: final test accuracy (mean ± sample std over n seeds, in %), the method's forward
    MACs and params at that tier, and the mean bytes down + up per participating client per round.
    """
    lines = [
        "| method | tier β | final accuracy % (mean ± std) | n | MACs | params "
        "| bytes/client/round (down+up) |",
        "|---|---|---|---|---|---|---|",
    ]
    tiers = _tiers(runs)
    for method, group in _by_method(runs).items():
        for tier in tiers:
            accs = final_accuracy(group, tier)
            if not accs:
                continue
            mean, std = _mean_std(accs)
            cost = _tier_cost(group, tier)
            macs, params = (f"{cost[0]:,}", f"{cost[1]:,}") if cost else ("–", "–")
            nbytes = bytes_per_client_round(group, tier)
            shown_bytes = f"{nbytes:,.0f}" if nbytes is not None else "– (no client)"
            lines.append(
                f"| {method} | {tier} | {100 * mean:.2f} ± {100 * std:.2f} | {len(accs)} "
                f"| {macs} | {params} | {shown_bytes} |"
            )
    return "\n".join(lines)


def _hours_to(group: Sequence[Run], tier: str, target: float) -> str:
    """Mean virtual hours until ``tier`` reaches ``target`` (* if some seeds never did)."""
    times = [time_to_accuracy(run.rows, tier, target) for run in group]
    reached = [t for t in times if t is not None]
    if not reached:
        return "not reached"
    return f"{np.mean(reached) / 3600:.2f}" + ("" if len(reached) == len(times) else "*")


def timing_table(runs: Sequence[Run], concurrency: int, target: float) -> str:
    """Markdown table of time per method: wall and virtual seconds per round, where the wall
    time went, and virtual time until the full and the smallest tier reach ``target``.

    Client compute per round is the sum of the clients' train-seconds divided by
    ``concurrency`` (clients that train at once); harness overhead is the rest of the round's
    wall time once client compute, centralized evaluation and aggregation are taken out
    (Flower/Ray dispatch, serialisation, model building, data loading and waiting).
    """
    lines = [
        "| method | wall s/round | client compute s/round | eval s/round | aggregation % "
        f"| overhead % | virtual s/round | virtual h to {100 * target:.0f}% (full / smallest) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    tiers = _tiers(runs)
    for method, group in _by_method(runs).items():
        rows = [r for run in group for r in run.rows]
        if not rows:
            continue
        wall = sum(r.get("wall-seconds", 0.0) for r in rows)
        compute = sum(c.get("train-seconds", 0.0) for r in rows for c in r.get("clients", []))
        compute /= max(concurrency, 1)
        evals = sum(r.get("eval-seconds", 0.0) for r in rows)
        agg = sum(r.get("aggregate-seconds", 0.0) for r in rows)
        virtual = sum(r.get("virtual-seconds", 0.0) for r in rows)
        overhead = max(wall - compute - evals - agg, 0.0)
        n = len(rows)

        share = 100 / wall if wall else 0.0
        lines.append(
            f"| {method} | {wall / n:.2f} | {compute / n:.2f} | {evals / n:.2f} "
            f"| {agg * share:.2f} | {overhead * share:.1f} | {virtual / n:.1f} "
            f"| {_hours_to(group, tiers[-1], target)} / {_hours_to(group, tiers[0], target)} |"
        )
    return "\n".join(lines)


def _mean_curve(
    runs: Sequence[Run], tier: str, x_key: str = "round"
) -> tuple[list[float], list[float]]:
    """Per round, mean over seeds of ``x_key`` and of the accuracy at ``tier``."""
    xs: dict[int, list[float]] = defaultdict(list)
    ys: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for row in run.evaluated:
            if tier in row["tiers"] and row.get(x_key) is not None:
                xs[row["round"]].append(float(row[x_key]))
                ys[row["round"]].append(float(row["tiers"][tier]["accuracy"]))
    rounds = sorted(xs)
    return [float(np.mean(xs[r])) for r in rounds], [100 * float(np.mean(ys[r])) for r in rounds]


def _save(fig: plt.Figure, path: Path | str) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_per_round(runs: Sequence[Run], path: Path | str) -> Path:
    """One panel per tier, a line per method: test accuracy per round, mean over seeds."""
    tiers = _tiers(runs) or ["1"]
    fig, axes = plt.subplots(
        1, len(tiers), figsize=(3.2 * len(tiers), 3.2), sharey=True, squeeze=False
    )
    for ax, tier in zip(axes[0], tiers, strict=True):
        for method, group in _by_method(runs).items():
            x, y = _mean_curve(group, tier)
            if x:
                ax.plot(x, y, marker=".", label=method)
        ax.set_title(f"tier β={tier}")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize="small")
    return _save(fig, path)


def plot_accuracy_vs_macs(runs: Sequence[Run], path: Path | str) -> Path:
    """Final accuracy against forward MACs: a line per method, a marker shape per tier."""
    tiers = _tiers(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, group in _by_method(runs).items():
        pts = []
        for tier in tiers:
            accs, cost = final_accuracy(group, tier), _tier_cost(group, tier)
            if accs and cost:
                pts.append((cost[0], 100 * _mean_std(accs)[0], tier))
        if not pts:
            continue
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=method)
        for macs, acc, tier in pts:
            marker = _MARKERS[tiers.index(tier) % len(_MARKERS)]
            ax.plot(macs, acc, marker=marker, color=line.get_color(), linestyle="none")
    # Marker legend for tiers, in grey, so it does not compete with the method colours.
    for i, tier in enumerate(tiers):
        ax.plot(
            [], [], marker=_MARKERS[i % len(_MARKERS)], color="grey", ls="none", label=f"β={tier}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("forward MACs per example (log)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def plot_bytes_per_round(runs: Sequence[Run], path: Path | str) -> Path:
    """Grouped bars: mean bytes down + up per client per round, by tier, one bar per method."""
    tiers = _tiers(runs)
    groups = _by_method(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(tiers)), 4))
    width = 0.8 / max(len(groups), 1)
    for i, (method, group) in enumerate(groups.items()):
        heights = [bytes_per_client_round(group, t) or 0.0 for t in tiers]
        ax.bar(np.arange(len(tiers)) + i * width, np.asarray(heights) / 1e6, width, label=method)
    ax.set_xticks(np.arange(len(tiers)) + width * (len(groups) - 1) / 2)
    ax.set_xticklabels([f"β={t}" for t in tiers])
    ax.set_ylabel("MB down + up per client per round")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_accuracy_vs_virtual_time(runs: Sequence[Run], path: Path | str) -> Path:
    """Accuracy of the full (largest) and the smallest tier against the virtual clock."""
    tiers = _tiers(runs)
    shown = [tiers[-1], tiers[0]] if len(tiers) > 1 else tiers or ["1"]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.6), squeeze=False)
    for ax, tier in zip(axes[0], shown, strict=True):
        for method, group in _by_method(runs).items():
            x, y = _mean_curve(group, tier, x_key="virtual-clock")
            if x:
                ax.plot(np.asarray(x) / 3600, y, marker=".", label=method)
        ax.set_title(f"tier β={tier}")
        ax.set_xlabel("virtual clock (hours)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize="small")
    return _save(fig, path)


def write_report(
    folders: Iterable[Path | str],
    out_dir: Path | str,
    title: str,
    command: str,
    concurrency: int = 1,
    target: float = 0.8,
) -> Path:
    """Write ``out_dir/report.md`` and its four PNGs; return the report's path.

    Parameters
    ----------
    folders : Iterable[Path | str]
        Run folders, each with ``config.json`` and ``metrics.jsonl``.
    out_dir : Path | str
        Where report.md and the plots go (created if needed).
    title : str
        The report's heading.
    command : str
        The exact command line that produced the runs, quoted in the report so it can be rerun.
    concurrency : int
        Clients that trained at the same time (for the time table).
    target : float
        Accuracy whose virtual time-to-reach the time table reports.
    """
    runs = load_runs(folders)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_accuracy_per_round(runs, out / "accuracy-per-round.png")
    plot_accuracy_vs_macs(runs, out / "accuracy-vs-macs.png")
    plot_bytes_per_round(runs, out / "bytes-per-round.png")
    plot_accuracy_vs_virtual_time(runs, out / "accuracy-vs-virtual-time.png")
    seeds = ", ".join(f"{m}: {[r.seed for r in group]}" for m, group in _by_method(runs).items())
    figures = "\n\n".join(f"![{caption}]({name})" for name, caption in PLOTS.items())
    text = (
        f"# {title}\n\n"
        f"Command:\n\n```\n{command}\n```\n\n"
        f"Runs: {len(runs)} (seeds per method: {seeds}).\n\n"
        f"{comparison_table(runs)}\n\n"
        f"{timing_table(runs, concurrency, target)}\n\n"
        "Accuracy is on the centralized test set at the last evaluated round; ± is the sample "
        "standard deviation over the n seeds. MACs and params are those of each method's model "
        "at that tier. Virtual time comes from assumed device profiles (server/profiles.py), "
        "not measurements. Time: client compute is the clients' train-seconds summed and divided "
        f"by the {concurrency} clients that trained at once; overhead is the rest of the wall "
        "time once compute, centralized evaluation and aggregation are taken out; * marks a "
        "target not reached by every seed.\n\n"
        f"{figures}\n"
    )
    path = out / "report.md"
    path.write_text(text)
    return path
