"""summary.md and PNG plots of a run, from its metrics.jsonl rows."""

from __future__ import annotations

from collections.abc import Sequence
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.common.logger import log


def _last_eval(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    evaluated = [r for r in rows if r.get("tiers")]
    return evaluated[-1] if evaluated else None


def tier_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the last evaluated round: one line per tier budget."""
    last = _last_eval(rows)
    if last is None:
        return "(no evaluated round yet)"
    fed = last.get("federated", {})
    lines = [
        f"Round {last['round']}: centralized test set (federated: clients' local splits)",
        "",
        "| tier β | accuracy % | loss | params | MACs | bytes down/up | federated acc % |",
        "|---|---|---|---|---|---|---|",
    ]
    for beta, m in sorted(last["tiers"].items(), key=lambda kv: float(kv[0])):
        f_acc = f"{100 * fed[beta]['accuracy']:.2f}" if beta in fed else "–"
        lines.append(
            f"| {beta} | {100 * m['accuracy']:.2f} | {m['loss']:.4f} | {m['params']:,} "
            f"| {m['macs']:,} | {m['bytes-down']:,} | {f_acc} |"
        )
    return "\n".join(lines)


def val_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the last round evaluated on the validation split ("" without one)."""
    evaluated = [r for r in rows if r.get("val-tiers")]
    if not evaluated:
        return ""
    last = evaluated[-1]
    lines = [
        f"Round {last['round']}: server-side validation split (val-size held-out training "
        "examples)",
        "",
        "| tier β | val accuracy % | val loss |",
        "|---|---|---|",
    ]
    for beta, m in sorted(last["val-tiers"].items(), key=lambda kv: float(kv[0])):
        lines.append(f"| {beta} | {100 * m['accuracy']:.2f} | {m['loss']:.4f} |")
    return "\n".join(lines)


def write_summary(folder: Path, rows: Sequence[dict[str, Any]], title: str) -> str:
    """Write summary.md and return its table (the test table, then the validation table)."""
    val = val_table(rows)
    test = tier_table(rows) if _last_eval(rows) is not None or not val else ""
    table = "\n\n".join(t for t in (test, val) if t)
    wall = sum(r.get("wall-seconds", 0.0) for r in rows)
    agg = sum(r.get("aggregate-seconds", 0.0) for r in rows)
    text = (
        f"# {title}\n\n{table}\n\n"
        f"Rounds recorded: {len(rows)}; wall time {wall:.1f} s "
        f"({wall / max(len(rows), 1):.2f} s per round); aggregation {agg:.2f} s "
        f"({100 * agg / wall if wall else 0:.2f} % of round time).\n"
    )
    empty = [r["round"] for r in rows if r.get("no-valid-reply")]
    if empty:
        text += (
            f"\n**Rounds with no valid reply** (the global model was kept unchanged): "
            f"{', '.join(map(str, empty))} of {len(rows)}"
            + (": this run never trained.\n" if len(empty) == len(rows) else ".\n")
        )
    (folder / "summary.md").write_text(text)
    return table


def plot_accuracy(folder: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """accuracy.png: test accuracy per round for every tier (None without matplotlib)."""
    evaluated = [r for r in rows if r.get("tiers")]
    if not evaluated:
        return None
    try:
        # Optional (the `plots` extra), so that a light install can run the ServerApp.
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and CI
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        log(WARNING, "accuracy.png skipped: matplotlib is not installed (extra `plots`)")
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    betas = sorted({b for r in evaluated for b in r["tiers"]}, key=float)
    for beta in betas:
        pts = [
            (r["round"], 100 * r["tiers"][beta]["accuracy"])
            for r in evaluated
            if beta in r["tiers"]
        ]
        ax.plot(*zip(*pts, strict=True), marker=".", label=f"β={beta}")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    # Beside the axes, not over the curves; "tight" keeps it in the file.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    fig.tight_layout()
    path = folder / "accuracy.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
