"""The report itself: ``report.md`` with its sections, CSVs and figures (:func:`write_report`).

The headline accuracy of a run is the mean over its last K evaluations (one evaluation is noisy:
a few pp between neighbouring evaluations is common with non-IID clients), then mean ± sample std
over seeds ("–" for one seed). Tier labels are the tiers' budgets as strings ("0.2" .. "1") and
are the same for every method; the MACs and params behind a label differ per method (a width
prefix for FjORD/HeteroFL, a rank prefix for Maestro, the whole model for FedAvg).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.client_compute import passes_per_step
from simulations.paired import paired_rows, paired_section
from simulations.report.frames import runs_frame, summary_frame
from simulations.report.plots import (
    COMPUTE_PLOT,
    PAIRED_PLOT,
    PLOTS,
    STEP_TIME_PLOT,
    VECTOR_FORMAT,
    plot_accuracy_per_round,
    plot_accuracy_vs_bytes,
    plot_accuracy_vs_cost,
    plot_accuracy_vs_macs,
    plot_accuracy_vs_step_time,
    plot_accuracy_vs_virtual_time,
    plot_bytes_per_round,
    plot_paired_differences,
)
from simulations.report.runs import (
    Run,
    by_method,
    final_accuracy,
    group_compute,
    load_runs,
    mean_std,
    model_of,
    tier_labels,
    tiers_without_clients,
)
from simulations.report.tables import (
    comparison_table,
    mean_spread,
    phase_profile_table,
    provenance_section,
    selection_table,
    timing_table,
)
from simulations.time_axis import factored_kind, time_axis_table


def _timed_kinds(runs: Sequence[Run]) -> dict[str, tuple[str, str]]:
    """Label -> (method, benchmark kind) of each method or variant the runs ran."""
    return {
        label: (str(group[0].config["method"]), factored_kind(group[0].config))
        for label, group in by_method(runs).items()
    }


def time_axis_section(runs: Sequence[Run], bench: Mapping[str, Any]) -> str:
    """The report's time axis: per tier and method the measured step time beside the MAC ratio,
    and the plot of accuracy against it; a line saying why when the benchmark cannot serve."""
    passes = {
        label: {
            float(t): k for t in tier_labels(group) if (k := passes_per_step(group[0].config, t))
        }
        for label, group in by_method(runs).items()
    }
    try:
        table = time_axis_table(bench, model_of(runs), _timed_kinds(runs), passes)
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
    for method, group in by_method(runs).items():
        for tier in tier_labels(runs):
            accs, cost = final_accuracy(group, tier, last_k), group_compute(group, tier)
            if not accs or cost is None:
                continue
            mean, std = mean_std(accs)
            ratio = (
                f"{cost.train_macs / cost.match_train_macs:.2f}" if cost.match_train_macs else "–"
            )
            lines.append(
                f"| {method} | {tier} | {mean_spread(mean, std)} | {len(accs)} "
                f"| {cost.step_macs:,.0f} | {cost.steps:.1f} | {cost.train_macs:,.0f} | {ratio} |"
            )

    def train_macs(group: Sequence[Run], tier: str) -> float | None:
        cost = group_compute(group, tier)
        return cost.train_macs if cost else None

    plot_accuracy_vs_cost(
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


def unassigned_tier_warnings(runs: Sequence[Run]) -> list[str]:
    """One line per method with a tier it evaluated that no client of its runs was ever sent
    work at (:func:`~simulations.report.runs.tiers_without_clients`)."""
    lines = []
    for method, group in by_method(runs).items():
        empty = tiers_without_clients(group)
        if empty:
            tiers = ", ".join(f"β={t}" for t in empty)
            lines.append(
                f"{method}: no client of tier {tiers} took part in any round (seeds "
                f"{[r.seed for r in group]}); that tier's accuracy is of a sub-model no device "
                "of the tier trained (check tier-shares, tier-availability and the node count)."
            )
    return lines


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
    """Write ``out_dir/report.md``, its figures (PNG and PDF), ``results.csv`` and
    ``summary.csv`` (the headline per run and tier, :func:`summary_frame`); return the report's
    path. A tier no client took part in is named in the report and on stderr.

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
        (:mod:`simulations.paired`: mean difference per tier, its 95 % interval, a verdict),
        with a plot of the differences per tier (``paired-differences.png``).
    """
    runs = load_runs(folders)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_frame(runs).to_csv(out / "results.csv", index=False)
    summary = summary_frame(runs, last_k)
    summary.to_csv(out / "summary.csv", index=False)
    paired = paired_section(summary, paired_against) if paired_against else ""
    if paired:
        rows = paired_rows(summary, paired_against)[0]
        if plot_paired_differences(rows, out / PAIRED_PLOT):
            paired += (
                "\n\n![Paired difference per tier, method − reference: mean and 95 % interval "
                f"over the shared seeds]({PAIRED_PLOT})"
            )
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
    warnings = unassigned_tier_warnings(runs)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    seeds = ", ".join(f"{m}: {[r.seed for r in group]}" for m, group in by_method(runs).items())
    figures = "\n\n".join(f"![{caption}]({name})" for name, caption in PLOTS.items())
    text = (
        f"# {title}\n\n"
        f"{provenance_section(runs, commit)}\n\n"
        f"Runs: {len(runs)} (seeds per method: {seeds}).\n\n"
        + "".join(f"**Warning:** {line}\n\n" for line in warnings)
        + f"{comparison_table(runs, last_k)}\n\n"
        + (f"{paired}\n\n" if paired else "")
        + (f"{selection_table(selection)}\n\n" if selection else "")
        + f"{timing_table(runs, concurrency, target)}\n\n"
        + profile
        + time_axis
        + "Accuracy is on the centralized test set: each run's mean over its last "
        f"{last_k} evaluations (one evaluation alone moves by a few pp between neighbouring "
        "evaluations), then the mean over the n seeds; ± is the sample standard deviation over "
        "the seeds (– for a single seed, whose spread is undefined). The per-round plot's bands "
        "span the lowest to the highest seed. MACs and "
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
        "(method, beta, seed, accuracy-pct, lr, MACs, params, bytes per client per round, the "
        "variant and its settings): `summary.csv`. Error bars in the accuracy-against-cost "
        "plots: ± the std over seeds (none for one seed). Every figure is also written as "
        f"{VECTOR_FORMAT.upper()} beside its PNG.\n\n"
        f"{figures}\n"
    )
    path = out / "report.md"
    path.write_text(text)
    return path
