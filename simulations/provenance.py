"""What produced a run: its full request (run config, federation, environment) and the commands
and code commits that trained it, kept beside its results as ``harness.json``.

The harness skips or resumes a run only when the stored request equals the new one; anything else
is refused with the differences named (:func:`differences`), so a report never mixes results of
different settings or quotes a command that did not produce them.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maestro_common.app.config import RunConfig, as_current
from maestro_common.app.removed import without_removed_defaults

RECORD = "harness.json"
# Keys that legitimately differ between invocations of the same run: `resume` is the harness's own
# switch, and `output-dir` only says where the run's folder lies (a moved or copied --out folder
# holds the same runs). num-rounds may grow too (a resume continues a run to more rounds).
VOLATILE = ("resume", "output-dir")


def git_commit(root: Path) -> str:
    """``<sha>`` of the checkout at ``root``, ``<sha>-dirty`` with uncommitted changes to tracked
    files, or ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The machine's CPU model (Linux's ``model name``), else what :mod:`platform` says.

    Floating-point results can differ between CPUs (their vector kernels round differently), so
    a figure is only comparable with another from the same model: every record names it.
    """
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def make_request(
    run_config: Mapping[str, Any],
    federation: Mapping[str, Any],
    tuning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full request of one run: every run-config key (defaults filled in), the federation
    settings (SuperNodes, resources per client, malloc tuning) and, for a run whose lr was chosen
    by a sweep, the sweep's settings (:func:`simulations.lr_sweep.settings`)."""
    full = RunConfig.from_run_config(run_config).to_run_config()
    for key in VOLATILE:
        full.pop(key, None)
    request = {"run-config": full, "federation": dict(federation)}
    if tuning is not None:
        request["lr-selection"] = dict(tuning)
    return request


def _flatten(request: Mapping[str, Any]) -> dict[str, Any]:
    """``section.key`` -> value, without the volatile run-config keys (older records hold them).

    A run-config key missing from a request (a record written before the key existed) reads as
    its default: every new key's default keeps the behaviour the code had before it.
    """
    sections = dict(request)
    if "run-config" in sections:
        sections["run-config"] = as_current(sections["run-config"])
    return {
        f"{section}.{k}": v
        for section, keys in sections.items()
        for k, v in keys.items()
        if not (section == "run-config" and k in VOLATILE)
    }


def differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: tuple[str, ...] = ()
) -> list[str]:
    """``"key: old -> new"`` for every setting that differs (keys as ``section.key``)."""
    a, b = _flatten(old), _flatten(new)
    return [
        f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
        for k in sorted(set(a) | set(b))
        if k not in ignore and a.get(k) != b.get(k)
    ]


def read_record(folder: Path) -> dict[str, Any] | None:
    """The run's stored record, or None when the folder has none.

    An older record's run config holds the keys of removed variants at their defaults: those are
    dropped, so its request still equals a new one of the same settings
    (:mod:`maestro_common.app.removed`); a removed key set otherwise stays, and differs.
    """
    path = folder / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); move the run folder away") from err
    request = record.get("request") if isinstance(record, dict) else None
    if isinstance(request, dict) and isinstance(request.get("run-config"), dict):
        request["run-config"] = without_removed_defaults(request["run-config"])
    return record


def write_record(
    folder: Path, request: Mapping[str, Any], command: str, commit: str, first_round: int
) -> None:
    """Store the request and add this invocation (command, commit, first round it trains, CPU)."""
    record = read_record(folder) or {"request": dict(request), "invocations": []}
    record["request"] = dict(request)
    record["invocations"].append(
        {"command": command, "commit": commit, "from-round": first_round, "cpu": cpu_model()}
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
