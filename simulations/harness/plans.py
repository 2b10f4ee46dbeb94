"""What to do with each requested run, decided from what its folder already holds: new, resumed
(same request, ``num-rounds`` may grow) or skipped; anything else is refused with the
differences named, and other runs of the folder must share the request's settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulations import provenance
from simulations.harness.configs import run_dir, total_rounds
from simulations.harness.errors import HarnessError
from simulations.harness.progress import checked_rows


@dataclass(frozen=True)
class Plan:
    """What to do with one requested run: ``new``, ``resume`` (after ``done`` rounds), ``skip``."""

    action: str
    done: int


def plan_run(folder: Path, request: Mapping[str, Any], total: int) -> Plan:
    """Decide whether a requested run is new, resumed or skipped; refuse anything else.

    Raises
    ------
    HarnessError
        When the folder holds results of another request (the differing settings are named),
        more rounds than requested, or results the harness did not record.
    """
    done = len(checked_rows(folder))
    record = provenance.read_record(folder)
    if done == 0 and not (folder / "checkpoint.npz").exists():
        return Plan("new", 0)
    if record is None:
        raise HarnessError(
            f"{folder} holds results without a {provenance.RECORD} (not written by this harness "
            "version), so what produced them is unknown: use another --out"
        )
    diff = provenance.differences(record["request"], request, ignore=("run-config.num-rounds",))
    if diff:
        raise HarnessError(
            f"{folder} holds results of another request; differing settings: {'; '.join(diff)}. "
            "Use another --out for another experiment (or the same settings to resume)"
        )
    if done > total:
        raise HarnessError(
            f"{folder} holds {done} rounds but num-rounds={total} was asked: a report would show "
            "rounds this command did not ask for; use another --out"
        )
    return Plan("skip", done) if done == total else Plan("resume", done)


def check_folder(
    runs_dir: Path, request: Mapping[str, Any], requested: set[str], tuned_lr: bool = False
) -> None:
    """Runs in the folder that this call does not run must share its settings (all but method,
    seed, run name and, when ``tuned_lr``, the lr each method's sweep chose), so the report over
    the folder compares like with like."""
    if not runs_dir.exists():
        return
    ignore = ("run-config.method", "run-config.seed", "run-config.run-name")
    ignore += ("run-config.lr",) if tuned_lr else ()
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if folder.name in requested or not (folder / "metrics.jsonl").exists():
            continue
        record = provenance.read_record(folder)
        if record is None:
            raise HarnessError(
                f"{folder} was not recorded by this harness version; use another --out"
            )
        diff = provenance.differences(record["request"], request, ignore=ignore)
        if diff:
            raise HarnessError(
                f"run {folder.name} in this --out has other settings ({'; '.join(diff)}): the "
                "report would compare unlike runs. Run it with these settings too, or use "
                "another --out"
            )


def plan_runs(configs: Sequence[dict], requests: Mapping[str, dict]) -> dict[str, Plan]:
    """Every run's :class:`Plan` (HarnessError when one is refused)."""
    return {
        c["run-name"]: plan_run(run_dir(c), requests[c["run-name"]], total_rounds(c))
        for c in configs
    }
