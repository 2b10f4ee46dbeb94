"""The comparison report across runs: methods side by side at every tier, over seeds.

Each run folder holds ``config.json`` (the run config, with ``method`` and ``seed``) and
``metrics.jsonl`` (one row per round, ``"tiers"`` on evaluated rounds). Tier labels are the
tiers' budgets as strings ("0.2" .. "1") and are the same for every method; the MACs and params
behind a label differ per method (a width prefix for FjORD/HeteroFL, a rank prefix for Maestro,
the whole model for FedAvg).

The headline accuracy of a run is the mean over its last K evaluations (one evaluation is noisy:
a few pp between neighbouring evaluations is common with non-IID clients), then mean ± sample std
over seeds. :func:`load_frame` gives any set of runs as a tidy pandas DataFrame (one row per
run × evaluated round × tier) for your own figures; the report writes it as ``results.csv``, and
the headline per run and tier (:func:`summary_frame`) as ``summary.csv``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from simulations.client_compute import TierCompute, passes_per_step, tier_compute
from simulations.labels import method_label, method_list
from simulations.paired import paired_section
from simulations.time_axis import factored_kind, step_times, time_axis_table
from simulations.time_to_accuracy import time_to_accuracy

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt

METHOD_ORDER = (
    "maestro",
    "maestro+warmup",
    "maestro+fjord-warmup",
    "fjord",
    "heterofl",
    "fedavg-all",
    "fedavg-fit",
)
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
_MARKERS = "osD^v<>ph*"
# One marker and line style per method, so methods whose curves coincide stay distinguishable.
_METHOD_STYLE = {
    m: (_MARKERS[i], ("-", "--", "-.", ":")[i % 4]) for i, m in enumerate(METHOD_ORDER)
}
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
    """A client entry's tier label (its β): ``tier-beta``, else its rank fraction.

    ``tier`` in a client row is the tier's index, not its label, so it is not used here.
    """
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


def final_accuracy(runs: Sequence[Run], tier: str, last_k: int = 1) -> list[float]:
    """Per run that evaluated ``tier``: its mean accuracy over its last ``last_k`` evaluations."""
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


def comparison_table(runs: Sequence[Run], last_k: int = 1) -> str:
    """Markdown table: one line per method × tier.

    Columns: test accuracy (each run's mean over its last ``last_k`` evaluations, then mean ±
    sample std over n seeds, in %), the method's forward MACs and params at that tier, and the
    mean bytes down + up per participating client per round.
    """
    head = "final accuracy" if last_k == 1 else f"accuracy, mean of last {last_k} evals,"
    lines = [
        f"| method | tier β | {head} % (mean ± std over seeds) | n | MACs | params "
        "| bytes/client/round (down+up) |",
        "|---|---|---|---|---|---|---|",
    ]
    tiers = _tiers(runs)
    for method, group in _by_method(runs).items():
        for tier in tiers:
            accs = final_accuracy(group, tier, last_k)
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

    Per round, over the method's runs:

    - client compute: the clients' train-seconds summed and divided by ``concurrency`` (clients
      that train at once);
    - client setup: their handle-seconds less train-seconds, summed and divided the same way
      (run config, data rows, model build and load, prefix cut);
    - dispatch: a worker process's idle time in the training phase before its first client and
      between its clients (the server building and sending the instructions, Flower/Ray
      dispatch, (de)serialisation), the mean over workers;
    - waiting: a worker's idle time after its last client until the phase ends, the mean over
      workers: the synchronous round waiting for the slowest worker (uneven clients, or more
      clients than workers), plus the last pull;
    - evaluation: the server's (test and validation sets) plus the federated phase on clients;
    - overhead: the wall time less client compute, evaluation, aggregation and waiting (so
      client setup, dispatch and the server's own work), as a share of the wall time; waiting
      is a share of its own.

    Runs recorded before clients reported their timestamps show "–" for the parts they lack,
    and their overhead includes the waiting.
    """
    lines = [
        "| method | wall s/round | client compute s/round | client setup s/round "
        "| dispatch s/round | waiting for the slowest s/round | eval s/round | aggregation % "
        f"| waiting % | overhead % | virtual s/round | virtual h to {100 * target:.0f}% "
        "(full / smallest) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tiers = _tiers(runs)
    per = max(concurrency, 1)
    for method, group in _by_method(runs).items():
        rows = [r for run in group for r in run.rows]
        if not rows:
            continue
        clients = [c for r in rows for c in r.get("clients", [])]
        wall = sum(r.get("wall-seconds", 0.0) for r in rows)
        compute = sum(c.get("train-seconds", 0.0) for c in clients) / per
        evals = sum(r.get("eval-seconds", 0.0) + r.get("fed-eval-seconds", 0.0) for r in rows)
        agg = sum(r.get("aggregate-seconds", 0.0) for r in rows)
        virtual = sum(r.get("virtual-seconds", 0.0) for r in rows)
        n = len(rows)
        setup = dispatch = waiting_cell = waiting_share = "–"
        waiting = 0.0
        if clients and all("handle-seconds" in c for c in clients):
            setup = f"{(sum(c['handle-seconds'] for c in clients) / per - compute) / n:.2f}"
        laid_out = [_worker_times(r) for r in rows]
        if all(laid_out):
            per_round = [
                {k: float(np.mean([w[k] for w in workers])) for k in workers[0]}
                for workers in laid_out
            ]
            waiting = sum(w["after"] for w in per_round)
            dispatch = f"{sum(w['before'] + w['between'] for w in per_round) / n:.2f}"
            waiting_cell = f"{waiting / n:.2f}"
            waiting_share = f"{100 * waiting / wall:.1f}" if wall else "0.0"
        overhead = max(wall - compute - evals - agg - waiting, 0.0)
        share = 100 / wall if wall else 0.0
        lines.append(
            f"| {method} | {wall / n:.2f} | {compute / n:.2f} | {setup} | {dispatch} "
            f"| {waiting_cell} | {evals / n:.2f} | {agg * share:.2f} | {waiting_share} "
            f"| {overhead * share:.1f} | {virtual / n:.1f} "
            f"| {_hours_to(group, tiers[-1], target)} / {_hours_to(group, tiers[0], target)} |"
        )
    return "\n".join(lines)


def _worker_times(row: Mapping[str, Any]) -> list[dict[str, float]] | None:
    """Per worker process of one round's training phase: busy, training, and idle time before
    its first client, between its clients and after its last (None without the timestamps)."""
    clients = row.get("clients", [])
    keys = ("handle-start", "handle-seconds", "worker-pid")
    if "train-start" not in row or not clients or not all(k in c for c in clients for k in keys):
        return None
    start, end = row["train-start"], row["train-start"] + row.get("train-seconds", 0.0)
    by_pid: dict[float, list[dict]] = defaultdict(list)
    for c in clients:
        by_pid[c["worker-pid"]].append(c)
    workers = []
    for group in by_pid.values():
        group.sort(key=lambda c: c["handle-start"])
        ends = [c["handle-start"] + c["handle-seconds"] for c in group]
        gaps = [max(b["handle-start"] - e, 0.0) for e, b in zip(ends[:-1], group[1:], strict=True)]
        workers.append(
            {
                "busy": sum(c["handle-seconds"] for c in group),
                "train": sum(c.get("train-seconds", 0.0) for c in group),
                "before": max(group[0]["handle-start"] - start, 0.0),
                "between": sum(gaps),
                "after": max(end - ends[-1], 0.0),
            }
        )
    return workers


def phase_profile_table(runs: Sequence[Run]) -> str:
    """Markdown table: where a training phase's wall time goes, per worker process (mean over
    rounds and workers); empty when no run recorded the clients' timestamps."""
    lines = [
        "| method | training phase s | worker busy s | of which training s "
        "| idle before first client s | idle between clients s | idle after last client s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, group in _by_method(runs).items():
        phases, workers = [], []
        for row in (r for run in group for r in run.rows):
            times = _worker_times(row)
            if times:
                phases.append(row.get("train-seconds", 0.0))
                workers += times
        if not workers:
            continue
        mean = {k: float(np.mean([w[k] for w in workers])) for k in workers[0]}
        lines.append(
            f"| {method} | {np.mean(phases):.2f} | {mean['busy']:.2f} | {mean['train']:.2f} "
            f"| {mean['before']:.2f} | {mean['between']:.2f} | {mean['after']:.2f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


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
    for i, (method, group) in enumerate(_by_method(runs).items()):
        x, mean, low, high = _mean_curve(group, tier, x_key)
        if not len(x):
            continue
        (line,) = ax.plot(x / scale, mean, **_style(method, i))
        if len(group) > 1:
            ax.fill_between(x / scale, low, high, color=line.get_color(), alpha=0.2, lw=0)


def _save(fig: plt.Figure, path: Path | str) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_per_round(runs: Sequence[Run], path: Path | str) -> Path:
    """One panel per tier, a line per method: test accuracy per round, mean over seeds, with a
    band from the lowest to the highest seed."""
    tiers = _tiers(runs) or ["1"]
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
    axes[0][-1].legend(fontsize="small")
    return _save(fig, path)


def _tier_payload(runs: Sequence[Run], tier: str) -> int | None:
    """Bytes down + up of one client of ``tier`` in one round: its sub-model's payload, from the
    last evaluated row (defined for every tier, also one no client of took part in)."""
    for run in runs:
        final = run.final
        if final and tier in final["tiers"]:
            m = final["tiers"][tier]
            if "bytes-down" in m:
                return int(m["bytes-down"]) + int(m.get("bytes-up", m["bytes-down"]))
    return None


def _plot_accuracy_vs_cost(
    runs: Sequence[Run],
    path: Path | str,
    last_k: int,
    cost: Callable[[Sequence[Run], str], float | None],
    xlabel: str,
) -> Path:
    """Headline accuracy against a per-tier cost: a line per method through its tiers, a marker
    shape per tier, error bars of ± the sample std over seeds."""
    tiers = _tiers(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (method, group) in enumerate(_by_method(runs).items()):
        pts = []
        for tier in tiers:
            accs, x = final_accuracy(group, tier, last_k), cost(group, tier)
            if accs and x:
                mean, std = _mean_std(accs)
                pts.append((x, 100 * mean, 100 * std, tier))
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
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def plot_accuracy_vs_macs(runs: Sequence[Run], path: Path | str, last_k: int = 1) -> Path:
    """Headline accuracy against forward MACs: a line per method, a marker shape per tier."""

    def macs(group: Sequence[Run], tier: str) -> float | None:
        cost = _tier_cost(group, tier)
        return cost[0] if cost else None

    return _plot_accuracy_vs_cost(runs, path, last_k, macs, "forward MACs per example (log)")


def plot_accuracy_vs_bytes(runs: Sequence[Run], path: Path | str, last_k: int = 1) -> Path:
    """Headline accuracy against bytes down + up per client per round (the tier's payload)."""
    return _plot_accuracy_vs_cost(
        runs, path, last_k, _tier_payload, "bytes down + up per client per round (log)"
    )


STEP_TIME_PLOT = "accuracy-vs-step-time.png"


def _model_of(runs: Sequence[Run]) -> str:
    """The model every run trained; ValueError when they differ."""
    models = {r.config.get("model", "cnn") for r in runs}
    if len(models) != 1:
        raise ValueError(f"runs of several models {sorted(models)}: no time axis")
    return models.pop()


def _timed_kinds(runs: Sequence[Run]) -> dict[str, tuple[str, str]]:
    """Label -> (method, benchmark kind) of each method or variant the runs ran."""
    return {
        label: (str(group[0].config["method"]), factored_kind(group[0].config))
        for label, group in _by_method(runs).items()
    }


def plot_accuracy_vs_step_time(
    runs: Sequence[Run], bench: Mapping[str, Any], path: Path | str, last_k: int = 1
) -> Path:
    """Headline accuracy against the measured train step time of each method's tier model
    (:mod:`simulations.time_axis`, from ``simulations.bench``), so methods compare at matched
    time as well as matched MACs."""
    model = _model_of(runs)

    def step_ms(group: Sequence[Run], tier: str) -> float | None:
        times = step_times(
            bench, model, str(group[0].config["method"]), factored_kind(group[0].config)
        )
        return next((ms for beta, (ms, _) in times.items() if f"{beta:g}" == tier), None)

    return _plot_accuracy_vs_cost(
        runs, path, last_k, step_ms, f"measured train step of the tier's model, ms ({model}, log)"
    )


def time_axis_section(runs: Sequence[Run], bench: Mapping[str, Any]) -> str:
    """The report's time axis: per tier and method the measured step time beside the MAC ratio,
    and the plot of accuracy against it; a line saying why when the benchmark cannot serve."""
    passes = {
        label: {float(t): k for t in _tiers(group) if (k := passes_per_step(group[0].config, t))}
        for label, group in _by_method(runs).items()
    }
    try:
        table = time_axis_table(bench, _model_of(runs), _timed_kinds(runs), passes)
    except ValueError as err:
        return f"No time axis: {err}."
    settings = bench.get("meta", {}).get("settings", "")
    return (
        f"Measured train step time per tier (ms, `simulations.bench` on this machine; {settings}) "
        "beside the MACs relative to dense; a tier the benchmark did not measure shows –. A step "
        "here is one forward and backward pass of the tier's model and the MACs ratio one forward "
        "pass; passes/step is a local step's forward MACs over that pass (every pass of the "
        "method's objective: Maestro's nested sub-models too), which the step time leaves out "
        "and the virtual clock counts (docs/federated.md, step cost).\n\n"
        f"{table}\n\n![Headline test accuracy against the measured train step time of each "
        f"tier's model]({STEP_TIME_PLOT})"
    )


COMPUTE_PLOT = "accuracy-vs-client-compute.png"


def _client_examples(runs: Sequence[Run], tier: str) -> list[int]:
    return [
        int(c["num-examples"])
        for run in runs
        for row in run.rows
        for c in row.get("clients", [])
        if _client_tier(c) == tier and c.get("num-examples")
    ]


def _compute(group: Sequence[Run], tier: str) -> TierCompute | None:
    # The group's runs share their settings (the harness refuses otherwise): the first's config.
    return tier_compute(group[0].config, tier, _client_examples(group, tier))


def matched_compute_section(runs: Sequence[Run], out: Path, last_k: int = 1) -> str:
    """Accuracy beside each tier's client compute per round (forward + backward MACs of local
    training, every pass of the method's step), against the ``compute-match`` method's; with the
    plot of accuracy against it. Empty unless the runs set ``compute-match``."""
    matched = {str(r.config.get("compute-match") or "") for r in runs} - {""}
    if not matched:
        return ""
    lines = [
        "| method | tier β | accuracy % | n | step MACs/example | steps/round | train MACs/round "
        f"| ÷ {', '.join(sorted(matched))} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, group in _by_method(runs).items():
        for tier in _tiers(runs):
            accs, cost = final_accuracy(group, tier, last_k), _compute(group, tier)
            if not accs or cost is None:
                continue
            mean, std = _mean_std(accs)
            ratio = (
                f"{cost.train_macs / cost.match_train_macs:.2f}" if cost.match_train_macs else "–"
            )
            lines.append(
                f"| {method} | {tier} | {100 * mean:.2f} ± {100 * std:.2f} | {len(accs)} "
                f"| {cost.step_macs:,.0f} | {cost.steps:.1f} | {cost.train_macs:,.0f} | {ratio} |"
            )

    def train_macs(group: Sequence[Run], tier: str) -> float | None:
        cost = _compute(group, tier)
        return cost.train_macs if cost else None

    _plot_accuracy_vs_cost(
        runs, out / COMPUTE_PLOT, last_k, train_macs, "client training MACs per round (log)"
    )
    return (
        "Matched compute: every client ran the local steps that spend, at its tier, the forward "
        f"MACs of a `{', '.join(sorted(matched))}` round (`compute-match`). Step MACs count every "
        "forward pass of the method's step per example (a nested step's sub-models too); train "
        "MACs per client and round are step MACs × the examples its steps saw × 3 (forward plus "
        "a backward of twice its cost, the virtual clock's convention); ÷ is their ratio to the "
        "matched method's round (1 up to rounding to whole steps).\n\n"
        + "\n".join(lines)
        + f"\n\n![Headline test accuracy against client training MACs per round]({COMPUTE_PLOT})"
    )


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
        _curves(ax, runs, tier, "virtual-clock", 3600.0)
        ax.set_title(f"tier β={tier}")
        ax.set_xlabel("virtual clock (hours)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize="small")
    return _save(fig, path)


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """A tidy DataFrame: one row per run × evaluated round × tier.

    Columns: run (folder name), method, seed, round, tier (label, e.g. "0.2"), beta (float),
    accuracy, accuracy-last (character models), loss, macs, params, virtual-clock (s), wall-seconds.
    """
    records = [
        {
            "run": run.folder.name,
            "method": run.method,
            "seed": run.seed,
            "round": int(row["round"]),
            "tier": tier,
            "beta": float(tier),
            "accuracy": m.get("accuracy"),
            "accuracy-last": m.get("accuracy-last"),
            "loss": m.get("loss"),
            "macs": m.get("macs"),
            "params": m.get("params"),
            "virtual-clock": row.get("virtual-clock"),
            "wall-seconds": row.get("wall-seconds"),
        }
        for run in runs
        for row in run.evaluated
        for tier, m in sorted(row["tiers"].items(), key=lambda kv: float(kv[0]))
    ]
    columns = ["run", "method", "seed", "round", "tier", "beta", "accuracy", "accuracy-last"]
    columns += ["loss", "macs"]
    columns += ["params", "virtual-clock", "wall-seconds"]
    return pd.DataFrame.from_records(records, columns=columns)


SUMMARY_COLUMNS = [
    "method",
    "beta",
    "seed",
    "accuracy",
    "accuracy-last",
    "evals",
    "last-round",
    "lr",
    "macs",
    "params",
    "bytes-per-round",
    "client-bytes-per-round",
    "run",
]


def summary_frame(runs: Sequence[Run], last_k: int = 3) -> pd.DataFrame:
    """The headline per run and tier: one row per method × tier × seed.

    Columns: method, beta, seed, accuracy (% on the test set, the mean of the run's last
    ``last_k`` evaluations), accuracy-last (likewise, a character model's accuracy at the last
    position of each window, LEAF's label; empty for images), evals (how many were averaged),
    last-round (of the last one), lr,
    macs and params (the method's model at the tier), bytes-per-round (the tier's payload down +
    up, per client and round), client-bytes-per-round (measured: the mean over the run's clients
    of the tier; empty when none took part), run (folder name).
    """
    records = []
    for run in sorted(runs, key=lambda r: (r.method, r.seed, r.folder.name)):
        evaluated = run.evaluated
        for tier in _tiers([run]):
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
                    "method": run.method,
                    "beta": float(tier),
                    "seed": run.seed,
                    "accuracy": round(100 * float(np.mean(accs[-last_k:])), 4),
                    "accuracy-last": (
                        round(100 * float(np.mean(lasts[-last_k:])), 4) if lasts else None
                    ),
                    "evals": len(accs[-last_k:]),
                    "last-round": int(last["round"]),
                    "lr": run.config.get("lr"),
                    "macs": m.get("macs"),
                    "params": m.get("params"),
                    "bytes-per-round": _tier_payload([run], tier),
                    "client-bytes-per-round": bytes_per_client_round([run], tier),
                    "run": run.folder.name,
                }
            )
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


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


def load_frame(*paths: Path | str) -> pd.DataFrame:
    """Any set of runs as a tidy DataFrame (see :func:`runs_frame`).

    ``paths`` are run folders or harness ``--out`` folders, e.g.
    ``load_frame("runs/compare")``.
    """
    return runs_frame(load_runs(run_folders(paths)))


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


def selection_table(selection: dict[str, Any]) -> str:
    """Markdown table of an lr sweep (``lr-selection.json``): per method and lr, the validation
    accuracy per tier and its mean over tiers; the chosen lr in bold."""
    settings, methods = selection["settings"], selection["methods"]
    tiers = sorted(
        {t for m in methods.values() for e in m["grid"] for t in e.get("val-accuracy", {})},
        key=float,
    )
    lines = [
        f"lr chosen per method on the server's validation split (run-config `val-size` training "
        f"examples held out of every client partition; the test set is not evaluated): one run "
        f"per lr of {settings['lrs']} at {settings['select-rounds']} rounds, seed "
        f"{settings['select-seed']}; score = mean over tiers of each tier's mean over the last "
        f"{settings['last-k']} validation evaluations (`lr-selection.json`).",
        "",
        "| method | lr | " + " | ".join(f"val % β={t}" for t in tiers) + " | mean % | chosen |",
        "|---|---|" + "---|" * len(tiers) + "---|---|",
    ]
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    for method in sorted(methods, key=lambda m: (order.get(m, len(order)), m)):
        for entry in methods[method]["grid"]:
            chosen = entry["lr"] == methods[method]["lr"]
            lr = f"**{entry['lr']:g}**" if chosen else f"{entry['lr']:g}"
            if "failed" in entry:
                cells = ["–"] * len(tiers) + [f"failed: {entry['failed'][:80]}"]
            else:
                acc = entry["val-accuracy"]
                cells = [f"{100 * acc[t]:.2f}" if t in acc else "–" for t in tiers]
                cells.append(f"{100 * entry['mean']:.2f}")
            lines.append(
                f"| {method} | {lr} | " + " | ".join(cells) + f" | {'✓' if chosen else ''} |"
            )
    return "\n".join(lines)


def provenance_section(runs: Sequence[Run], commit: str) -> str:
    """Which command and code commit trained which rounds of which run."""
    lines = [f"Report written at commit `{commit or 'unknown'}`.", ""]
    lines += ["| run | rounds | command | commit |", "|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: r.folder.name):
        record = run.record
        last = run.rows[-1]["round"] if run.rows else 0
        if not record or not record.get("invocations"):
            lines.append(f"| {run.folder.name} | 1–{last} | unknown (no {RECORD}) | unknown |")
            continue
        calls = record["invocations"]
        for i, call in enumerate(calls):
            first = call["from-round"]
            end = calls[i + 1]["from-round"] - 1 if i + 1 < len(calls) else last
            if end < first:
                continue  # an invocation that recorded no round (failed, or stopped early)
            lines.append(
                f"| {run.folder.name} | {first}–{end} | `{call['command']}` | {call['commit']} |"
            )
    return "\n".join(lines)


def write_report(
    folders: Iterable[Path | str],
    out_dir: Path | str,
    title: str,
    commit: str = "",
    concurrency: int = 1,
    target: float = 0.8,
    last_k: int = 3,
    selection: dict[str, Any] | None = None,
    bench: Mapping[str, Any] | None = None,
    paired_against: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/report.md``, its PNGs, ``results.csv`` and ``summary.csv`` (the headline
    per run and tier, :func:`summary_frame`); return the report's path.

    Parameters
    ----------
    folders : Iterable[Path | str]
        Run folders, each with ``config.json`` and ``metrics.jsonl`` (and the harness's
        ``harness.json`` naming the commands and commits that trained it).
    out_dir : Path | str
        Where report.md, the plots and results.csv go (created if needed).
    title : str
        The report's heading.
    commit : str
        The code commit the report is written at.
    concurrency : int
        Clients that trained at the same time (for the time table).
    target : float
        Accuracy whose virtual time-to-reach the time table reports.
    last_k : int
        The headline accuracy of a run is its mean over its last ``last_k`` evaluations.
    selection : dict | None
        The harness's ``lr-selection.json`` (an lr sweep), shown as a table when given.
    bench : mapping | None
        ``simulations.bench``'s saved figures (``bench.json``): when given, the report gains a
        time axis (measured step time per tier, accuracy against it).
    paired_against : Sequence[str]
        Method labels to compare every other method against seed by seed
        (:mod:`simulations.paired`: mean difference per tier, its 95 % interval, a verdict).
    """
    runs = load_runs(folders)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_frame(runs).to_csv(out / "results.csv", index=False)
    summary = summary_frame(runs, last_k)
    summary.to_csv(out / "summary.csv", index=False)
    paired = paired_section(summary, paired_against) if paired_against else ""
    plot_accuracy_per_round(runs, out / "accuracy-per-round.png")
    plot_accuracy_vs_macs(runs, out / "accuracy-vs-macs.png", last_k)
    plot_accuracy_vs_bytes(runs, out / "accuracy-vs-bytes.png", last_k)
    plot_bytes_per_round(runs, out / "bytes-per-round.png")
    plot_accuracy_vs_virtual_time(runs, out / "accuracy-vs-virtual-time.png")
    compute = matched_compute_section(runs, out, last_k)
    time_axis = (compute + "\n\n") if compute else ""
    if bench is not None:
        time_axis += time_axis_section(runs, bench) + "\n\n"
        if not time_axis.startswith("No time axis"):
            plot_accuracy_vs_step_time(runs, bench, out / STEP_TIME_PLOT, last_k)
    profile = phase_profile_table(runs)
    if profile:
        profile = (
            "Where a training phase goes, per worker process (the clients' own timestamps; "
            "before the first client: the server building and sending the instructions and "
            "Flower/Ray dispatch; between clients: dispatch and (de)serialisation; after the "
            f"last: waiting for the other workers' clients and for the pull):\n\n{profile}\n\n"
        )
    seeds = ", ".join(f"{m}: {[r.seed for r in group]}" for m, group in _by_method(runs).items())
    figures = "\n\n".join(f"![{caption}]({name})" for name, caption in PLOTS.items())
    text = (
        f"# {title}\n\n"
        f"{provenance_section(runs, commit)}\n\n"
        f"Runs: {len(runs)} (seeds per method: {seeds}).\n\n"
        f"{comparison_table(runs, last_k)}\n\n"
        + (f"{paired}\n\n" if paired else "")
        + (f"{selection_table(selection)}\n\n" if selection else "")
        + f"{timing_table(runs, concurrency, target)}\n\n"
        + profile
        + time_axis
        + "Accuracy is on the centralized test set: each run's mean over its last "
        f"{last_k} evaluations (one evaluation alone moves by a few pp between neighbouring "
        "evaluations), then the mean over the n seeds; ± is the sample standard deviation over "
        "the seeds. The per-round plot's bands span the lowest to the highest seed. MACs and "
        "params are those of each method's model at that tier. Virtual time comes from assumed "
        "device profiles (server/profiles.py), not measurements. Time: client compute is "
        f"the clients' train-seconds summed and divided by the {concurrency} clients that "
        "trained at once, client setup their handler time around training so divided; "
        "dispatch and waiting are a worker process's idle time in the training phase before "
        "and between its clients, and after its last one (the round waiting for the slowest "
        "worker); evaluation is the server's plus the federated phase; overhead is the wall "
        "time less compute, evaluation, aggregation and waiting; * marks a target not reached "
        "by every seed. "
        "Every number per run, round and tier: `results.csv`; the headline per run and tier "
        "(method, beta, seed, accuracy %, lr, MACs, params, bytes per client per round): "
        "`summary.csv`. Error bars in the accuracy-against-cost plots: ± the std over seeds.\n\n"
        f"{figures}\n"
    )
    path = out / "report.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """``python -m simulations.report PATH... [--csv FILE] [--summary FILE] [--report DIR]``: the
    tidy CSV of any runs, optionally their headline per run and tier, and a whole report;
    ``prog`` names the command in help and errors."""
    import argparse

    p = argparse.ArgumentParser(
        prog=prog or "python -m simulations.report",
        description="Write the tidy CSV (one row per run × evaluated round × tier) of any runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, help="run folders or harness --out folders")
    p.add_argument("--csv", type=Path, default=Path("results.csv"), help="CSV file to write")
    p.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="also write the headline per run × tier (method, beta, seed, accuracy %%, ...) here",
    )
    p.add_argument(
        "--last-evals", type=int, default=3, help="headline = mean of this many last evaluations"
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="also write report.md with its plots, results.csv and summary.csv in this folder "
        "(harness --out folders run in parallel report as one; their lr sweeps must match)",
    )
    p.add_argument("--title", default="", help="report.md's heading (default: the paths)")
    p.add_argument(
        "--bench",
        type=Path,
        default=None,
        help="with --report: simulations.bench's bench.json, for a time axis (step time per tier)",
    )
    p.add_argument(
        "--paired-against",
        type=method_list,
        default=[],
        help="with --report: comma list of method labels; every other method is compared with "
        "each seed by seed (mean difference per tier, 95%% interval, verdict)",
    )
    args = p.parse_args(argv)
    if args.last_evals < 1:
        p.error(f"--last-evals must be ≥ 1, got {args.last_evals}")
    folders = run_folders(args.paths)
    if args.report is not None:
        try:
            selection = merged_selection(args.paths)
        except ValueError as err:
            p.error(str(err))
        from simulations.provenance import git_commit

        title = args.title or "Runs of " + ", ".join(map(str, args.paths))
        root = Path(__file__).resolve().parents[1]
        bench = json.loads(args.bench.read_text()) if args.bench else None
        path = write_report(
            folders,
            args.report,
            title,
            git_commit(root),
            last_k=args.last_evals,
            selection=selection,
            bench=bench,
            paired_against=args.paired_against,
        )
        print(f"report: {path}")
    runs = load_runs(folders)
    frame = runs_frame(runs)
    frame.to_csv(args.csv, index=False)
    print(f"{len(frame)} rows from {len(runs)} runs: {args.csv}")  # names repeat across folders
    if args.summary is not None:
        summary_frame(runs, args.last_evals).to_csv(args.summary, index=False)
        print(f"headline per run and tier: {args.summary}")


if __name__ == "__main__":
    main()
