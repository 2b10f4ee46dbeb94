"""The report's markdown tables: accuracy per method and tier, time, the lr sweep, provenance."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simulations.report.runs import (
    RECORD,
    Run,
    by_method,
    bytes_per_client_round,
    final_accuracy,
    mean_std,
    method_rank,
    tier_cost,
    tier_labels,
)
from simulations.time_to_accuracy import time_to_accuracy


def mean_spread(mean: float, std: float | None) -> str:
    """``mean ± std`` of fractions, in % with two decimals; ``± –`` for a single seed (whose
    spread is undefined, not zero)."""
    return f"{100 * mean:.2f} ± " + ("–" if std is None else f"{100 * std:.2f}")


def comparison_table(runs: Sequence[Run], last_k: int = 1) -> str:
    """Markdown table: one line per method × tier.

    Columns: test accuracy (each run's mean over its last ``last_k`` evaluations, then mean ±
    sample std over n seeds, in %), the method's forward MACs and params at that tier, and the
    mean bytes down + up per participating client per round.
    """
    head = "final accuracy" if last_k == 1 else f"accuracy, mean of last {last_k} evals,"
    lines = [
        f"| method | tier β | {head} % (mean ± std over seeds; – for one seed) | n | MACs | params "
        "| bytes/client/round (down+up) |",
        "|---|---|---|---|---|---|---|",
    ]
    tiers = tier_labels(runs)
    for method, group in by_method(runs).items():
        for tier in tiers:
            accs = final_accuracy(group, tier, last_k)
            if not accs:
                continue
            mean, std = mean_std(accs)
            cost = tier_cost(group, tier)
            macs, params = (f"{cost[0]:,}", f"{cost[1]:,}") if cost else ("–", "–")
            nbytes = bytes_per_client_round(group, tier)
            shown_bytes = f"{nbytes:,.0f}" if nbytes is not None else "– (no client)"
            lines.append(
                f"| {method} | {tier} | {mean_spread(mean, std)} | {len(accs)} "
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
    tiers = tier_labels(runs)
    per = max(concurrency, 1)
    for method, group in by_method(runs).items():
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
    for method, group in by_method(runs).items():
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
    for method in sorted(methods, key=method_rank):
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
