"""Two methods' headline accuracies compared seed by seed, per tier, with a 95 % interval.

Seeds change the data partition, the client sampling and the initialisation, so one method's
runs on seeds 0, 1, 2 and another's on the same seeds are pairs: the spread of their
*differences* is much smaller than the spread of either method over seeds. This module turns the
headline rows (``summary.csv``: method, beta, seed, accuracy in %) into, per tier, the mean paired
difference, its sample std, a two-sided 95 % Student-t interval, and a verdict: **ahead** when
the whole interval is above zero, **behind** when it is below, otherwise **not resolved** (the
seeds cannot tell the two apart).

``python -m simulations.paired SUMMARY.csv [...] --method maestro --against fjord,fedavg-fit``
prints the table; several CSVs are read as one (e.g. a headline and later seeds), ``--method``
takes a comma list too, ``--wide`` prints per reference one line per method and one column per
tier (the verdicts at a glance), and ``--where model=cnn`` keeps the rows of one model
(``docs/results/centralized-e5.csv``).
``--margin M`` compares against the reference minus M pp (the full-tier aim "≥ fedavg-all −
1 pp" is ``--against fedavg-all --margin 1``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from simulations.labels import method_list

ACCURACY = "accuracy-pct"
COLUMNS = ("method", "beta", "seed", ACCURACY)
# Summaries written before the unit was in the name call the same percentage "accuracy".
LEGACY_ACCURACY = "accuracy"


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom
    (``scipy.stats.t.ppf``)."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"df must be ≥ 1, got {df}")
    return float(stats.t.ppf(p, df))


class NoSharedSeed(ValueError):
    """Two methods have no seed in common at any tier: there is nothing to pair."""


@dataclass(frozen=True)
class PairedDifference:
    """``method`` − (``reference`` − ``margin``) at one tier, over the seeds both ran (pp)."""

    method: str
    reference: str
    beta: float
    margin: float
    seeds: tuple[int, ...]
    differences: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences))

    @property
    def std(self) -> float:
        return float(np.std(self.differences, ddof=1)) if self.n > 1 else float("nan")

    @property
    def half_width(self) -> float:
        """Half the two-sided 95 % t interval of the mean; NaN with one seed."""
        if self.n < 2:
            return float("nan")
        return t_quantile(0.975, self.n - 1) * self.std / math.sqrt(self.n)

    @property
    def interval(self) -> str:
        """The mean difference ± half its 95 % interval as printed (no ± with one seed)."""
        return f"{self.mean:+.2f}" + (f" ± {self.half_width:.2f}" if self.n > 1 else "")

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "one seed: no interval"
        if self.mean - self.half_width > 0:
            return "ahead"
        if self.mean + self.half_width < 0:
            return "behind"
        return "not resolved"


def labelled(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with its method labels and accuracy column as this module reads them.

    A summary with a ``label`` column (``maestro+warmup``: the base ``method`` and its
    ``variant``) is compared by label: ``method`` takes its value. One without it (written
    before, or a committed results CSV) already holds labels in ``method``, and so do its rows
    when it is read together with a labelled one (their ``label`` is empty). An older summary's
    or a committed CSV's ``accuracy`` (a percentage there too) is read as ``accuracy-pct``,
    also for its rows alone when it is read together with a newer summary.
    """
    out = summary
    if LEGACY_ACCURACY in out.columns:
        legacy = out[LEGACY_ACCURACY]
        merged = out[ACCURACY].fillna(legacy) if ACCURACY in out.columns else legacy
        out = out.drop(columns=[LEGACY_ACCURACY]).assign(**{ACCURACY: merged})
    if "label" in out.columns:
        out = out.assign(method=out["label"].fillna(out["method"]))
    return out


def _checked(summary: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """``summary``'s rows of ``methods``, once each; other methods' rows are not looked at."""
    summary = labelled(summary)
    missing = [c for c in COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(
            f"summary rows lack the columns {missing}; a summary has at least {list(COLUMNS)} "
            "(simulations.report --summary writes one)"
        )
    present = sorted(summary["method"].unique())
    for name in methods:
        if name not in present:
            raise ValueError(f"no rows of method {name!r}; the summary has {present}")
    rows = summary[summary["method"].isin(methods)]
    twice = rows.duplicated(subset=["method", "beta", "seed"], keep=False)
    if twice.any():
        dup = rows.loc[twice, ["method", "beta", "seed"]].drop_duplicates()
        first = dup.iloc[0]
        raise ValueError(
            f"{len(dup)} (method, beta, seed) rows appear more than once, e.g. "
            f"({first['method']}, {first['beta']:g}, {int(first['seed'])}): each run may be "
            "given once (a summary and the runs it came from are the same runs)"
        )
    return rows


def paired_differences(
    summary: pd.DataFrame, method: str, reference: str, margin: float = 0.0
) -> list[PairedDifference]:
    """Per tier of ``method``, its accuracy minus ``reference``'s (less ``margin`` pp) by seed.

    Raises
    ------
    ValueError
        When a column is missing, a (method, beta, seed) row repeats, either method has no rows
        (the methods present are named), or the two share no seed at any tier.
    """
    frame = _checked(summary, (method, reference))
    table = frame.pivot_table(index="seed", columns=["method", "beta"], values=ACCURACY)
    out = []
    for beta in sorted(frame.loc[frame["method"] == method, "beta"].unique()):
        if (reference, beta) not in table.columns:
            continue
        pair = table[[(method, beta), (reference, beta)]].dropna()
        if pair.empty:
            continue
        diffs = pair[(method, beta)] - (pair[(reference, beta)] - margin)
        out.append(
            PairedDifference(
                method=method,
                reference=reference,
                beta=float(beta),
                margin=margin,
                seeds=tuple(int(s) for s in pair.index),
                differences=tuple(float(d) for d in diffs),
            )
        )
    if not out:
        raise NoSharedSeed(f"{method} and {reference} share no seed at any tier")
    return out


def paired_table(rows: Sequence[PairedDifference]) -> str:
    """Markdown: one line per (reference, tier), the per-seed differences and the verdict."""
    lines = [
        "| method | against | β | n | seeds | difference per seed (pp) | mean ± 95 % (pp) "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        against = r.reference + (f" − {r.margin:g} pp" if r.margin else "")
        per_seed = " / ".join(f"{d:+.2f}" for d in r.differences)
        seeds = ",".join(map(str, r.seeds))
        lines.append(
            f"| {r.method} | {against} | {r.beta:g} | {r.n} | {seeds} | {per_seed} | {r.interval} "
            f"| {r.verdict} |"
        )
    return "\n".join(lines)


def wide_table(rows: Sequence[PairedDifference]) -> str:
    """Markdown: per reference, one line per method and one column per tier holding the mean
    difference ± half its 95 % interval, in bold where the interval excludes zero (ahead or
    behind); the verdicts of several rivals against one reference at a glance."""
    tables = []
    for ref in dict.fromkeys(r.reference for r in rows):
        mine = [r for r in rows if r.reference == ref]
        margin = mine[0].margin
        betas = sorted({r.beta for r in mine})
        title = f"{ref}" + (f" − {margin:g} pp" if margin else "")
        lines = [
            f"| method − {title} (pp) | seeds | " + " | ".join(f"β = {b:g}" for b in betas) + " |",
            "|---|---|" + "---|" * len(betas),
        ]
        for method in dict.fromkeys(r.method for r in mine):
            by_beta = {r.beta: r for r in mine if r.method == method}
            cells = []
            for b in betas:
                r = by_beta.get(b)
                if r is None:
                    cells.append("")
                    continue
                resolved = r.verdict in ("ahead", "behind")
                cells.append(f"**{r.interval}**" if resolved else r.interval)
            seeds = sorted({s for r in by_beta.values() for s in r.seeds})
            lines.append(f"| {method} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def paired_rows(
    summary: pd.DataFrame, references: Iterable[str], margin: float = 0.0
) -> tuple[list[PairedDifference], list[str]]:
    """Every other method of ``summary`` against each of ``references`` that it shares seeds
    with, and a line for each pair that cannot be compared for another reason (a run given
    twice) saying why."""
    summary = labelled(summary)
    refs = [r for r in references if r in set(summary["method"])]
    rows: list[PairedDifference] = []
    problems: list[str] = []
    for method in sorted(set(summary["method"]) - set(refs)):
        for ref in refs:
            try:
                rows += paired_differences(summary, method, ref, margin)
            except NoSharedSeed:
                continue
            except ValueError as err:
                problems.append(f"{method} against {ref}: not paired: {err}.")
    return rows, problems


def paired_section(summary: pd.DataFrame, references: Iterable[str], margin: float = 0.0) -> str:
    """The table of :func:`paired_rows` with how to read it; empty when no pair has two seeds.
    A pair that cannot be compared is named under the table with why, not left out silently."""
    rows, problems = paired_rows(summary, references, margin)
    if not any(r.n > 1 for r in rows) and not problems:
        return ""
    return (
        "Paired by seed (the same seed is the same data partition and client sampling): each "
        "method's headline accuracy minus the reference's, per tier; ± is half the two-sided "
        "95 % Student-t interval of the mean difference. *ahead* / *behind*: the whole interval "
        "is above / below zero; *not resolved*: these seeds cannot tell the two apart.\n\n"
        + paired_table(rows)
        + "".join(f"\n\n{line}" for line in problems)
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """``python -m simulations.paired SUMMARY.csv... --method M --against R1,R2 [--margin pp]``;
    ``prog`` names the command in help and errors."""
    import argparse

    p = argparse.ArgumentParser(
        prog=prog or "python -m simulations.paired",
        description="Compare two methods' headline accuracies seed by seed, per tier, with a "
        "95 % t interval.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("summaries", nargs="+", type=Path, help="summary CSVs (read as one)")
    p.add_argument(
        "--method",
        required=True,
        type=method_list,
        help="the method (its label) to judge, or a comma list of them",
    )
    p.add_argument(
        "--against", required=True, type=method_list, help="comma list of reference method labels"
    )
    p.add_argument(
        "--margin", type=float, default=0.0, help="judge against each reference minus this (pp)"
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep only rows whose COLUMN reads VALUE (repeatable), e.g. model=cnn",
    )
    p.add_argument(
        "--wide",
        action="store_true",
        help="one table per reference: a line per method, a column per tier, the mean ± 95 %% "
        "(bold: ahead or behind) instead of a line per tier with every seed's difference",
    )
    args = p.parse_args(argv)
    for path in args.summaries:
        if not path.is_file():
            p.error(f"{path}: no such summary CSV (simulations.report --summary writes one)")
    summary = pd.concat([pd.read_csv(path) for path in args.summaries], ignore_index=True)
    for condition in args.where:
        column, sep, value = condition.partition("=")
        if not sep or column not in summary.columns:
            p.error(
                f"--where {condition!r}: give COLUMN=VALUE with a column of the summary, one of "
                f"{list(summary.columns)}"
            )
        summary = summary[summary[column].astype(str) == value]
    rows: list[PairedDifference] = []
    try:
        for ref in args.against:
            for method in args.method:
                rows += paired_differences(summary, method, ref, args.margin)
    except ValueError as err:
        p.error(str(err))
    print(wide_table(rows) if args.wide else paired_table(rows))


if __name__ == "__main__":
    main()
