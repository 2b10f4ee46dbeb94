"""The README's result tables, made from committed headline CSVs and checked against them.

A headline CSV holds one row per (method, β, seed) with its accuracy in % (the harness's
``summary.csv``: ``label`` and ``accuracy-pct``; older committed ones in ``docs/results/``:
``method`` and ``accuracy``). :func:`results_table` turns one
or several such files into a Markdown table: a row per method, a column per tier, each cell the
mean over seeds ± half its two-sided 95 % Student-t interval, "–" for the spread of one seed, and
the seeds counted. A dense method (one accuracy for every tier) gets one cell in every column.

The README marks each generated table so that a test can make it again and compare::

    <!-- results-table: docs/results/a.csv docs/results/b.csv | maestro,fjord -->
    | method | β = 0.2 | ... |
    <!-- end results-table -->

``python -m simulations.results_table CSV [CSV ...] --methods m1,m2`` prints a table;
``--check README.md`` remakes every marked table of the file and exits 1 naming the first that
differs.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from simulations.paired import t_quantile

MARK = re.compile(
    r"<!-- results-table: (?P<csvs>[^|]+?) \| (?P<methods>[^ ]+) -->\n"
    r"(?P<table>.*?)"
    r"<!-- end results-table -->",
    re.S,
)


def _cell(values: Sequence[float]) -> str:
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return f"{mean:.1f} ± –"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return f"{mean:.1f} ± {half:.1f}"


def read_headlines(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The rows of several headline CSVs as one frame (method, beta, seed, accuracy in %)."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        # Today's summaries: accuracy-pct, and `label` naming a method with its variant; older
        # committed ones: accuracy (already in %) and the label in `method`.
        frame = frame.rename(columns={"accuracy-pct": "accuracy"})
        if "label" in frame.columns:
            frame = frame.drop(columns="method").rename(columns={"label": "method"})
        missing = {"method", "beta", "seed", "accuracy"} - set(frame.columns)
        if missing:
            raise ValueError(
                f"{path}: missing columns {sorted(missing)} (a headline CSV holds method or "
                "label, beta, seed and accuracy-pct or accuracy)"
            )
        frames.append(frame[["method", "beta", "seed", "accuracy"]])
    rows = pd.concat(frames, ignore_index=True)
    twice = rows.duplicated(["method", "beta", "seed"])
    if twice.any():
        first = rows[twice].iloc[0]
        raise ValueError(
            f"({first.method}, β={first.beta}, seed {first.seed}) is given twice; "
            "pass each seed's rows once"
        )
    return rows


def results_table(paths: Sequence[str | Path], methods: Sequence[str]) -> str:
    """A Markdown table: a row per method, a column per tier (mean ± 95 % half-width, %)."""
    rows = read_headlines(paths)
    unknown = [m for m in methods if m not in set(rows["method"])]
    if unknown:
        known = ", ".join(sorted(set(rows["method"])))
        raise ValueError(f"no rows for method(s) {unknown}; the files hold: {known}")
    betas = sorted(set(rows["beta"]))
    head = "| method | " + " | ".join(f"β = {b:g}" for b in betas) + " | seeds |"
    lines = [head, "|---" * (len(betas) + 2) + "|"]
    for method in methods:
        mine = rows[rows["method"] == method]
        cells = []
        for beta in betas:
            values = mine[mine["beta"] == beta].sort_values("seed")["accuracy"].tolist()
            cells.append(_cell(values) if values else "–")
        seeds = ",".join(str(s) for s in sorted(set(mine["seed"])))
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines) + "\n"


def check_file(path: str | Path, root: str | Path = ".") -> list[str]:
    """Each marked table of ``path`` that differs from its CSVs, as a message (empty: all match).

    CSV paths in a mark are relative to ``root`` (the repository root)."""
    text = Path(path).read_text(encoding="utf-8")
    problems = []
    marks = list(MARK.finditer(text))
    if not marks:
        return [f"{path}: no results-table mark"]
    for mark in marks:
        csvs = [Path(root) / p for p in mark["csvs"].split()]
        want = results_table(csvs, mark["methods"].split(","))
        if mark["table"] != want:
            problems.append(
                f"{path}: the table from {mark['csvs'].strip()} differs from its CSVs; "
                f"it should read:\n{want}"
            )
    return problems


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("csvs", nargs="*", help="headline CSVs (method, beta, seed, accuracy %%)")
    parser.add_argument("--methods", default="", help="comma list, in the table's order")
    parser.add_argument("--check", help="a Markdown file whose marked tables are remade")
    args = parser.parse_args(argv)
    if args.check:
        problems = check_file(args.check)
        for problem in problems:
            print(problem, file=sys.stderr)
        sys.exit(1 if problems else 0)
    if not args.csvs or not args.methods:
        parser.error("give CSVs and --methods (or --check FILE)")
    try:
        print(results_table(args.csvs, args.methods.split(",")), end="")
    except (ValueError, OSError) as err:
        parser.exit(2, f"{parser.prog}: {err}\n")


if __name__ == "__main__":
    main()
