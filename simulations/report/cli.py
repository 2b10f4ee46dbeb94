"""``python -m simulations.report`` (and ``maestro-fl report``): the tidy CSV of any runs, their
headline per run and tier, and a whole report."""

from __future__ import annotations

import json
from pathlib import Path

from simulations.labels import method_list
from simulations.report.document import write_report
from simulations.report.frames import runs_frame, summary_frame
from simulations.report.runs import load_runs, merged_selection, run_folders


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
        help="also write the headline per run × tier (method, beta, seed, accuracy-pct, ...) here",
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
        "each seed by seed (mean difference per tier, 95%% interval, verdict; and "
        "paired-differences.png, the differences per tier)",
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
        root = Path(__file__).resolve().parents[2]
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
