"""The report's figures: each written as a PNG (what report.md embeds) and a PDF beside it.

Accuracy axes are in %, round axes have integer ticks, virtual-time axes use the unit that fits
the run (s, min or h, :func:`time_unit`), and legends sit to the right of the panels, outside
the data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from simulations.paired import PairedDifference
from simulations.report.runs import (
    METHOD_ORDER,
    Run,
    by_method,
    bytes_per_client_round,
    final_accuracy,
    mean_std,
    method_rank,
    model_of,
    tier_cost,
    tier_labels,
    tier_payload,
)
from simulations.time_axis import factored_kind, step_times

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # after the backend is chosen

PLOTS = {
    "accuracy-per-round.png": "Test accuracy per round, one panel per tier (mean over seeds, "
    "band: min to max over seeds)",
    "accuracy-vs-macs.png": "Headline test accuracy against forward MACs at each tier",
    "accuracy-vs-bytes.png": "Headline test accuracy against bytes down + up per client per "
    "round at each tier",
    "bytes-per-round.png": "Bytes down + up per client per round, by tier",
    "accuracy-vs-virtual-time.png": "Accuracy of the full and the smallest tier against the "
    "virtual clock",
}
STEP_TIME_PLOT = "accuracy-vs-step-time.png"
COMPUTE_PLOT = "accuracy-vs-client-compute.png"
PAIRED_PLOT = "paired-differences.png"
VECTOR_FORMAT = "pdf"  # written beside every PNG
DPI = 200
_MARKERS = "osD^v<>ph*"
# One marker and line style per method, so methods whose curves coincide stay distinguishable.
_METHOD_STYLE = {
    m: (_MARKERS[i], ("-", "--", "-.", ":")[i % 4]) for i, m in enumerate(METHOD_ORDER)
}


def time_unit(seconds: float) -> tuple[float, str]:
    """(seconds per unit, unit) for an axis reaching ``seconds``: s up to 2 min, min up to 2 h,
    h beyond."""
    if seconds <= 120:
        return 1.0, "s"
    if seconds <= 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def legend_outside(ax: plt.Axes, **kwargs: Any) -> None:
    """The legend of ``ax``'s labelled artists to the right of it, outside every panel's data
    (call it on the rightmost panel)."""
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small", **kwargs
    )


def save_figure(fig: plt.Figure, path: Path | str) -> Path:
    """Write ``fig`` to ``path`` (PNG) and the same name with the vector suffix; close it."""
    path = Path(path)
    fig.tight_layout()
    for target in (path, path.with_suffix(f".{VECTOR_FORMAT}")):
        fig.savefig(target, dpi=DPI, bbox_inches="tight")  # tight: keeps the outside legend
    plt.close(fig)
    return path


def _mean_curve(
    runs: Sequence[Run], tier: str, x_key: str = "round"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per round: mean over seeds of ``x_key``, and the mean, min and max accuracy (%) at ``tier``.

    Only rounds evaluated by every run that evaluated the tier at all count, so a band never
    narrows because a seed is missing from a round.
    """
    xs: dict[int, list[float]] = defaultdict(list)
    ys: dict[int, list[float]] = defaultdict(list)
    seen = [run for run in runs if any(tier in r["tiers"] for r in run.evaluated)]
    for run in seen:
        for row in run.evaluated:
            if tier in row["tiers"] and row.get(x_key) is not None:
                xs[row["round"]].append(float(row[x_key]))
                ys[row["round"]].append(100 * float(row["tiers"][tier]["accuracy"]))
    rounds = [r for r in sorted(xs) if len(ys[r]) == len(seen)]
    x = np.array([np.mean(xs[r]) for r in rounds])
    y = [np.asarray(ys[r]) for r in rounds]
    return (
        x,
        np.array([v.mean() for v in y]),
        np.array([v.min() for v in y]),
        np.array([v.max() for v in y]),
    )


def _style(method: str, index: int) -> dict[str, Any]:
    marker, line = _METHOD_STYLE.get(method, (_MARKERS[index % len(_MARKERS)], "-"))
    return {"marker": marker, "linestyle": line, "markersize": 4, "label": method}


def _curves(ax: plt.Axes, runs: Sequence[Run], tier: str, x_key: str, scale: float) -> None:
    """A line per method (mean over seeds) with a band from the lowest to the highest seed."""
    for i, (method, group) in enumerate(by_method(runs).items()):
        x, mean, low, high = _mean_curve(group, tier, x_key)
        if not len(x):
            continue
        (line,) = ax.plot(x / scale, mean, **_style(method, i))
        if len(group) > 1:
            ax.fill_between(x / scale, low, high, color=line.get_color(), alpha=0.2, lw=0)


def plot_accuracy_per_round(runs: Sequence[Run], path: Path | str) -> Path:
    """One panel per tier, a line per method: test accuracy per round, mean over seeds, with a
    band from the lowest to the highest seed."""
    tiers = tier_labels(runs) or ["1"]
    fig, axes = plt.subplots(
        1, len(tiers), figsize=(3.2 * len(tiers), 3.2), sharey=True, squeeze=False
    )
    for ax, tier in zip(axes[0], tiers, strict=True):
        _curves(ax, runs, tier, "round", 1.0)
        ax.set_title(f"tier β={tier}")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    legend_outside(axes[0][-1])
    return save_figure(fig, path)


def plot_accuracy_vs_cost(
    runs: Sequence[Run],
    path: Path | str,
    last_k: int,
    cost: Callable[[Sequence[Run], str], float | None],
    xlabel: str,
) -> Path:
    """Headline accuracy against a per-tier cost: a line per method through its tiers, a marker
    shape per tier, error bars of ± the sample std over seeds (none for one seed)."""
    tiers = tier_labels(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (method, group) in enumerate(by_method(runs).items()):
        pts = []
        for tier in tiers:
            accs, x = final_accuracy(group, tier, last_k), cost(group, tier)
            if accs and x:
                mean, std = mean_std(accs)
                pts.append((x, 100 * mean, None if std is None else 100 * std, tier))
        if not pts:
            continue
        (line,) = ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            label=method,
            ls=_style(method, i)["linestyle"],
        )
        for x, acc, std, tier in pts:
            marker = _MARKERS[tiers.index(tier) % len(_MARKERS)]
            ax.errorbar(
                x, acc, yerr=std, marker=marker, color=line.get_color(), ls="none", capsize=2
            )
    # Marker legend for tiers, in grey, so it does not compete with the method colours.
    for i, tier in enumerate(tiers):
        ax.plot(
            [], [], marker=_MARKERS[i % len(_MARKERS)], color="grey", ls="none", label=f"β={tier}"
        )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("headline test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax)
    return save_figure(fig, path)


def plot_accuracy_vs_macs(runs: Sequence[Run], path: Path | str, last_k: int = 1) -> Path:
    """Headline accuracy against forward MACs: a line per method, a marker shape per tier."""

    def macs(group: Sequence[Run], tier: str) -> float | None:
        cost = tier_cost(group, tier)
        return cost[0] if cost else None

    return plot_accuracy_vs_cost(runs, path, last_k, macs, "forward MACs per example (log)")


def plot_accuracy_vs_bytes(runs: Sequence[Run], path: Path | str, last_k: int = 1) -> Path:
    """Headline accuracy against bytes down + up per client per round (the tier's payload)."""
    return plot_accuracy_vs_cost(
        runs, path, last_k, tier_payload, "bytes down + up per client per round (log)"
    )


def plot_accuracy_vs_step_time(
    runs: Sequence[Run], bench: Mapping[str, Any], path: Path | str, last_k: int = 1
) -> Path:
    """Headline accuracy against the measured train step time of each method's tier model
    (:mod:`simulations.time_axis`, from ``simulations.bench``), so methods compare at matched
    time as well as matched MACs."""
    model = model_of(runs)

    def step_ms(group: Sequence[Run], tier: str) -> float | None:
        times = step_times(
            bench, model, str(group[0].config["method"]), factored_kind(group[0].config)
        )
        return next((ms for beta, (ms, _) in times.items() if f"{beta:g}" == tier), None)

    return plot_accuracy_vs_cost(
        runs, path, last_k, step_ms, f"measured train step of the tier's model, ms ({model}, log)"
    )


def plot_bytes_per_round(runs: Sequence[Run], path: Path | str) -> Path:
    """Grouped bars: mean bytes down + up per client per round, by tier, one bar per method."""
    tiers = tier_labels(runs)
    groups = by_method(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(tiers)), 4))
    width = 0.8 / max(len(groups), 1)
    for i, (method, group) in enumerate(groups.items()):
        heights = [bytes_per_client_round(group, t) or 0.0 for t in tiers]
        ax.bar(np.arange(len(tiers)) + i * width, np.asarray(heights) / 1e6, width, label=method)
    ax.set_xticks(np.arange(len(tiers)) + width * (len(groups) - 1) / 2)
    ax.set_xticklabels([f"β={t}" for t in tiers])
    ax.set_ylabel("MB down + up per client per round")
    ax.grid(alpha=0.3, axis="y")
    legend_outside(ax)
    return save_figure(fig, path)


def plot_accuracy_vs_virtual_time(runs: Sequence[Run], path: Path | str) -> Path:
    """Accuracy of the full (largest) and the smallest tier against the virtual clock, in the
    unit that fits the longest run (:func:`time_unit`)."""
    tiers = tier_labels(runs)
    shown = [tiers[-1], tiers[0]] if len(tiers) > 1 else tiers or ["1"]
    clock = [float(r["virtual-clock"]) for run in runs for r in run.rows if r.get("virtual-clock")]
    scale, unit = time_unit(max(clock, default=0.0))
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.6), squeeze=False)
    for ax, tier in zip(axes[0], shown, strict=True):
        _curves(ax, runs, tier, "virtual-clock", scale)
        ax.set_title(f"tier β={tier}")
        ax.set_xlabel(f"virtual clock ({unit})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    legend_outside(axes[0][-1])
    return save_figure(fig, path)


def plot_paired_differences(rows: Sequence[PairedDifference], path: Path | str) -> Path | None:
    """One panel per reference: per tier and method, the mean paired difference method −
    reference (pp) with its 95 % t interval (a bare marker for one seed); None without rows."""
    if not rows:
        return None
    refs = sorted({(r.reference, r.margin) for r in rows}, key=lambda rm: method_rank(rm[0]))
    betas = sorted({r.beta for r in rows})
    methods = sorted({r.method for r in rows}, key=method_rank)
    size = ((1.2 * len(betas) + 2.5) * len(refs), 3.6)
    fig, axes = plt.subplots(1, len(refs), figsize=size, sharey=True, squeeze=False)
    width = 0.8 / len(methods)
    for ax, (ref, margin) in zip(axes[0], refs, strict=True):
        for i, method in enumerate(methods):
            shown = [r for r in rows if (r.reference, r.margin, r.method) == (ref, margin, method)]
            if not shown:
                continue
            x = [betas.index(r.beta) + (i - (len(methods) - 1) / 2) * width for r in shown]
            err = [r.half_width if r.n > 1 else 0.0 for r in shown]
            ax.errorbar(
                x, [r.mean for r in shown], yerr=err, color=f"C{i}", ls="none", capsize=3,
                marker=_style(method, i)["marker"], label=method,
            )  # fmt: skip
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(betas)))
        ax.set_xticklabels([f"β={b:g}" for b in betas])
        ax.set_title(f"against {ref}" + (f" − {margin:g} pp" if margin else ""))
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("method − reference (pp),\nmean and 95 % interval")
    legend_outside(axes[0][-1])
    return save_figure(fig, path)
