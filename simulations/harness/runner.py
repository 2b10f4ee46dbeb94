"""Planned runs carried out: one ``flwr run`` each on the invocation's local SuperLink, its
output copied to ``<out>/logs/``, its progress printed, its peak memory recorded."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from simulations import provenance
from simulations.harness.configs import run_dir, total_rounds
from simulations.harness.errors import HarnessError
from simulations.harness.plans import Plan, plan_run
from simulations.harness.progress import checked_rows, never_trained, progress_line, read_rows
from simulations.harness.superlink import BIN, ROOT, LocalSuperLink
from simulations.procs import ProcessGuard, TreeMemory, record_processes

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
POLL_SECONDS = 2.0
STARTUP_EVERY = 30.0  # seconds between start-up progress lines
TAIL_LINES = 8  # lines of each log shown when a run fails


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of a log, without colour codes; [] if it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    kept = [ANSI_RE.sub("", line).rstrip() for line in text.splitlines() if line.strip()]
    return kept[-lines:]


def failure_context(name: str, logs: Mapping[str, Path]) -> str:
    """How each log of a failed run ends, so the cause shows without opening the files."""
    parts = []
    for what, path in logs.items():
        tail = log_tail(path)
        shown = "\n".join(f"    {line}" for line in tail) if tail else "    (empty or missing)"
        parts.append(f"[{name}] {what} ({path}) ends:\n{shown}")
    return "\n".join(parts)


def copy_output(stream, log_path: Path) -> None:
    """Copy the child's output to the log file, without terminal colour codes."""
    with open(log_path, "a") as log:
        for line in stream:
            log.write(ANSI_RE.sub("", line))
            log.flush()


def run_one(link: LocalSuperLink, cfg: dict, out_dir: Path, federation: str, plan: Plan) -> Path:
    """One `flwr run` with progress read off its metrics.jsonl; returns the run folder."""
    name = cfg["run-name"]
    folder = run_dir(cfg)
    total = total_rounds(cfg)
    if plan.action == "resume":
        cfg = {**cfg, "resume": True}
        print(f"[{name}] resuming after round {plan.done}", flush=True)
    conf_path = out_dir / "configs" / f"{name}.toml"
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(tomli_w.dumps(cfg))
    log_path = out_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BIN / "flwr"),
        "run",
        str(ROOT),
        "--stream",
        "--run-config",
        str(conf_path),
        "--federation-config",
        federation,
    ]
    start, shown, shown_at = time.monotonic(), "", -STARTUP_EVERY
    with subprocess.Popen(
        cmd, cwd=ROOT, env=link.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        copier = threading.Thread(target=copy_output, args=(proc.stdout, log_path), daemon=True)
        copier.start()
        while True:
            finished = proc.poll() is not None
            now = time.monotonic() - start
            line = progress_line(name, read_rows(folder), total, plan.done, now)
            starting = "starting up" in line
            # Rounds are shown on every change, the start-up phase every STARTUP_EVERY seconds.
            if (starting and now - shown_at >= STARTUP_EVERY) or (not starting and line != shown):
                print(line, flush=True)
                shown, shown_at = line, now
            if finished:
                break
            time.sleep(POLL_SECONDS)
        copier.join(timeout=10)
    rows = checked_rows(folder)
    if len(rows) < total:
        logs = {"the run's log": log_path, "the SuperLink's log": link.log_path}
        print(failure_context(name, logs), flush=True)
        raise HarnessError(f"{name}: {len(rows)} of {total} rounds recorded; see {log_path}")
    if never_trained(rows):
        raise HarnessError(
            f"{name}: no round had a valid reply (the model was never trained); see {log_path}"
        )
    print(f"[{name}] done in {(time.monotonic() - start) / 60:.1f} min", flush=True)
    return folder


def write_memory(folder: Path, memory: TreeMemory) -> None:
    """The run's ``memory.json``: peak PSS of the harness's process tree while it trained."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "peak-tree-pss-mib": round(memory.peak_mb, 1),
        "processes-at-peak": memory.peak_processes,
        "samples": memory.samples,
        "every-seconds": memory.every,
    }
    (folder / "memory.json").write_text(json.dumps(record, indent=1) + "\n")


def run_planned(
    link: LocalSuperLink,
    cfg: dict,
    out_dir: Path,
    flwr_federation: str,
    plan: Plan,
    request: Mapping[str, Any],
    invocation: tuple[str, str],
) -> str | None:
    """Skip, start or resume one run as planned; the failure message, or None.

    ``invocation`` is (command, commit), recorded with the run before it trains.
    """
    name = cfg["run-name"]
    if plan.action == "skip":
        print(f"[{name}] {plan.done} rounds already finished (same request): skipped", flush=True)
        return None
    command, commit = invocation
    provenance.write_record(run_dir(cfg), request, command, commit, plan.done + 1)
    try:
        run_one(link, cfg, out_dir, flwr_federation, plan)
    except HarnessError as err:
        return str(err)
    return None


def run_with_retries(
    attempt: Callable[[Plan], str | None],
    replan: Callable[[], Plan],
    plan: Plan,
    retries: int,
    name: str,
    before_retry: Callable[[], None] = lambda: None,
) -> str | None:
    """``attempt(plan)`` (the failure message, or None), tried again after a failure up to
    ``retries`` times: resumed from its checkpoint after a try that recorded a new round, and
    once in all after a try that recorded none.

    A run that stops early (for instance Flower's SuperLink ending it after a missed heartbeat
    when the machine paused) keeps its finished rounds and its checkpoint; ``replan`` reads them
    back, and ``before_retry`` (a fresh SuperLink) runs before each new try. A try that recorded
    nothing new gets one more try: a start-up can fail for a passing cause (seen once in 43
    runs here: no round and no error after the app's install), and a second such try means the
    cause stays. ``FAILED:`` is printed once, for the failure that is returned; a try that
    is retried prints why it stopped.
    """
    failure = attempt(plan)
    fruitless_retried = False  # a try that recorded no new round got its one more try
    for retry in range(1, retries + 1):
        if failure is None:
            break
        try:
            again = replan()
        except HarnessError:
            break
        if again.action == "skip":
            break
        if again.done > plan.done:
            what = f"stopped after round {again.done} ({failure}); resuming from its checkpoint"
        elif fruitless_retried:
            break
        else:
            fruitless_retried = True
            where = (
                f"after round {again.done} with no new round" if again.done else "before round 1"
            )
            what = f"stopped {where} ({failure}); trying once more on a fresh SuperLink"
        print(f"[{name}] {what} (retry {retry} of {retries})", flush=True)
        try:
            before_retry()
        except HarnessError as err:
            failure = f"{failure}; the retry could not start: {err}"
            break
        plan = again
        failure = attempt(plan)
    if failure is not None:
        print(f"FAILED: {failure}", flush=True)
    return failure


class Runner:
    """Runs planned runs on one local SuperLink, started only when a run needs training.

    Before the first run that trains, the stale report of the folder is removed (what follows
    changes the runs). A SuperLink that fails to start fails every run after it.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        out_dir: Path,
        flwr_federation: str,
        invocation: tuple[str, str],
    ) -> None:
        self.args, self.out_dir = args, out_dir
        self.flwr_federation, self.invocation = flwr_federation, invocation
        self.stack = contextlib.ExitStack()
        self.link: LocalSuperLink | None = None
        self.guard: ProcessGuard | None = None
        self.broken: str | None = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _start(self) -> LocalSuperLink:
        for stale in ("report.md", "results.csv", "summary.csv"):
            (self.out_dir / stale).unlink(missing_ok=True)
        guard = self.guard = self.stack.enter_context(ProcessGuard())
        # Recorded before and after the SuperLink starts, so that a harness killed with SIGKILL
        # leaves enough behind for the next one of this folder to stop what it started.
        record_processes(self.out_dir, guard.marker, [psutil.Process()])
        link = self.stack.enter_context(
            LocalSuperLink(
                self.out_dir / ".flwr-home",
                self.args.malloc == "fast",
                guard.env,
                threads=self.args.cpus_per_client,
            )
        )
        record_processes(
            self.out_dir, guard.marker, [psutil.Process(), psutil.Process(link.proc.pid)]
        )
        return link

    def _restart(self) -> None:
        """Stop the SuperLink and every process under it (a stuck ServerApp, Ray), start anew."""
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.link = None
        try:
            self.link = self._start()
        except HarnessError as err:
            self.broken = str(err)
            raise

    def run(self, cfg: dict, plan: Plan, request: Mapping[str, Any]) -> str | None:
        """Skip, start or resume one run as planned; the failure message, or None."""
        if plan.action != "skip" and self.link is None and self.broken is None:
            try:
                self.link = self._start()
            except HarnessError as err:
                self.broken = str(err)
        if plan.action != "skip" and self.broken is not None:
            print(f"FAILED: [{cfg['run-name']}] {self.broken}", flush=True)
            return f"{cfg['run-name']}: {self.broken}"
        # The harness and everything it started (SuperLink, simulation, Ray and its workers).
        memory = TreeMemory(lambda: [psutil.Process(), *self.guard.descendants()])
        trains = plan.action != "skip"
        total = total_rounds(cfg)
        with memory if trains else contextlib.nullcontext():
            failure = run_with_retries(
                lambda p: run_planned(
                    self.link,  # type: ignore[arg-type]  (None only for a skipped run)
                    cfg,
                    self.out_dir,
                    self.flwr_federation,
                    p,
                    request,
                    self.invocation,
                ),
                lambda: plan_run(run_dir(cfg), request, total),
                plan,
                self.args.retries,
                cfg["run-name"],
                self._restart,
            )
        if trains:
            write_memory(run_dir(cfg), memory)
            print(
                f"[{cfg['run-name']}] peak memory of the harness's process tree: "
                f"{memory.peak_mb:.0f} MiB PSS ({memory.peak_processes} processes)",
                flush=True,
            )
        return failure
