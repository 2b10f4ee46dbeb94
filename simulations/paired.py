"""Two methods' headline accuracies compared seed by seed, per tier, with a 95 % interval.

Seeds change the data partition, the client sampling and the initialisation, so one method's
runs on seeds 0, 1, 2 and another's on the same seeds are pairs: the spread of their
*differences* is much smaller than the spread of either method over seeds. This module turns the
headline rows (``summary.csv``: method, beta, seed, accuracy in %) into, per tier, the mean paired
difference, its sample std, a two-sided 95 % Student-t interval, and a verdict: **ahead** when
the whole interval is above zero, **behind** when it is below, otherwise **not resolved** (the
seeds cannot tell the two apart).

``python -m simulations.paired SUMMARY.csv [...] --method maestro --against fjord,fedavg-fit``
prints the table; several CSVs are read as one (e.g. a headline and later seeds), and
``--where model=cnn`` keeps the rows of one model (``docs/results/centralized-e5.csv``).
``--margin M`` compares against the reference minus M pp (the full-tier aim "≥ fedavg-all −
1 pp" is ``--against fedavg-all --margin 1``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simulations.labels import method_list

COLUMNS = ("method", "beta", "seed", "accuracy")


@functools.cache  # a table asks for the same few quantiles once per row and verdict
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom.

    Bisection on the CDF, itself Simpson's rule over the density from 0; accurate to about 1e-6,
    which is far below any difference of accuracies reported.
    """
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"df must be ≥ 1, got {df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def tail_mass(t: float) -> float:  # P(0 ≤ T ≤ t)
        x = np.linspace(0.0, t, 4001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
        h = t / 4000
        return float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))

    lo, hi = 0.0, 1.0
    while 0.5 + tail_mass(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 + tail_mass(mid) < p else (lo, mid)
    return (lo + hi) / 2


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
    def verdict(self) -> str:
        if self.n < 2:
            return "one seed: no interval"
        if self.mean - self.half_width > 0:
            return "ahead"
        if self.mean + self.half_width < 0:
            return "behind"
        return "not resolved"


def _checked(summary: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """``summary``'s rows of ``methods``, once each; other methods' rows are not looked at."""
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
    table = frame.pivot_table(index="seed", columns=["method", "beta"], values="accuracy")
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
        interval = f"{r.mean:+.2f}" + (f" ± {r.half_width:.2f}" if r.n > 1 else "")
        seeds = ",".join(map(str, r.seeds))
        lines.append(
            f"| {r.method} | {against} | {r.beta:g} | {r.n} | {seeds} | {per_seed} | {interval} "
            f"| {r.verdict} |"
        )
    return "\n".join(lines)


def paired_section(summary: pd.DataFrame, references: Iterable[str], margin: float = 0.0) -> str:
    """Every other method of ``summary`` against each of ``references`` that it shares seeds
    with; empty when no such pair has two seeds. A pair that cannot be compared for another
    reason (a run given twice) is named under the table with why, not left out silently."""
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
    p.add_argument("--method", required=True, help="the method (its label) to judge")
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
            rows += paired_differences(summary, args.method, ref, args.margin)
    except ValueError as err:
        p.error(str(err))
    print(paired_table(rows))


if __name__ == "__main__":
    main()
