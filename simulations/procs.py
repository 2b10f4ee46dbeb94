"""Every process the harness starts ends with it, whatever ends the harness.

`flwr run` starts a detached SuperLink, which starts `flwr-simulation`, which starts Ray (GCS,
raylet, workers). Detached processes leave the harness's process group and are re-parented when
their parent exits, so neither a process-group kill nor a walk of the harness's children finds
them. Two mechanisms do:

- the harness becomes a *child subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``), so orphaned
  descendants are re-parented to it instead of to init and stay in its process tree;
- every child gets an environment marker (``MAESTRO_HARNESS_ID``), inherited by everything they
  start, so a process that escaped the tree anyway is still found by its environment.

:class:`ProcessGuard` installs handlers for SIGTERM, SIGHUP and SIGINT that stop that whole set of
processes (SIGTERM, then SIGKILL after a grace period) and exit with 128 + the signal number, and
an ``atexit`` fallback for any other exit. Only SIGKILL of the harness itself cannot be handled:
for that case the harness records its marker and its processes in its folder
(:func:`record_processes`), and the next harness of the same folder finds and stops what is left
of them (:func:`stop_orphans`) before it writes anything.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import psutil

MARKER = "MAESTRO_HARNESS_ID"
PR_SET_CHILD_SUBREAPER = 36
HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def become_subreaper(on: bool = True) -> bool:
    """Adopt orphaned descendants (``on``) or stop adopting them (Linux only); False where not
    supported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def marked(marker: str) -> list[psutil.Process]:
    """Processes (other than this one) whose environment carries ``MARKER=marker``."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
    return found


def stop(procs: list[psutil.Process], grace: float = 5.0) -> list[psutil.Process]:
    """SIGTERM every process, SIGKILL those alive after ``grace`` seconds; return survivors."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(alive, timeout=grace)
    return alive


class ProcessGuard:
    """Marks the environment of everything the harness starts and stops it all on exit.

    Use as a context manager around the harness's work; ``env`` is what children must get.
    """

    def __init__(self, grace: float = 5.0) -> None:
        self.marker = uuid.uuid4().hex
        self.grace = grace
        self.env = {**os.environ, MARKER: self.marker}
        self._previous: dict[int, object] = {}
        self._done = False

    def descendants(self) -> list[psutil.Process]:
        """Every live process the harness started: its process tree plus the marked ones."""
        me = psutil.Process()
        procs = {p.pid: p for p in me.children(recursive=True)}
        for p in marked(self.marker):
            procs.setdefault(p.pid, p)
        return list(procs.values())

    def cleanup(self) -> None:
        """Stop every descendant (twice over: a dying parent may have started one more)."""
        for _ in range(2):
            procs = self.descendants()
            if not procs:
                break
            stop(procs, self.grace)
        self._done = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Ignore repeats while cleaning up (a second Ctrl-C must not cut the cleanup short).
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_IGN)
        print(f"harness: got {signal.Signals(signum).name}; stopping its processes", flush=True)
        self.cleanup()
        os._exit(128 + signum)

    def __enter__(self) -> ProcessGuard:
        become_subreaper()
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        atexit.register(self._atexit)
        return self

    def _atexit(self) -> None:
        if not self._done:
            self.cleanup()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        atexit.unregister(self._atexit)
        become_subreaper(False)


class TreeMemory:
    """Peak memory of a set of processes while in the ``with`` block, sampled in a thread.

    Each sample sums the processes' proportional set size (PSS: a page shared by n processes
    counts 1/n in each, so the torch and Ray libraries every worker maps are counted once) and,
    where PSS cannot be read, their RSS. ``procs`` gives the processes at each sample, so those
    started or ended in between are followed.
    """

    def __init__(self, procs: Callable[[], list[psutil.Process]], every: float = 2.0) -> None:
        self.procs = procs
        self.every = every
        self.peak_mb = 0.0
        self.peak_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _mb(proc: psutil.Process) -> float:
        try:
            return proc.memory_full_info().pss / 2**20
        except (psutil.AccessDenied, AttributeError):
            return proc.memory_info().rss / 2**20

    def sample(self) -> float:
        """The set's memory now, in MiB; the peak is updated."""
        total, count = 0.0, 0
        for proc in self.procs():
            with contextlib.suppress(psutil.Error):
                total += self._mb(proc)
                count += 1
        self.samples += 1
        if total > self.peak_mb:
            self.peak_mb, self.peak_processes = total, count
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# ----- orphans of an earlier harness of the same folder ------------------------------------

RECORD = "processes.json"


def record_processes(folder: Path, marker: str, procs: list[psutil.Process]) -> None:
    """Write ``<folder>/processes.json``: this host, the marker every process the harness starts
    carries, and ``procs`` (the harness, its SuperLink) with their start times, atomically."""
    entries = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            entries.append(
                {"pid": proc.pid, "start": proc.create_time(), "cmd": " ".join(proc.cmdline())}
            )
    record = {"host": socket.gethostname(), "marker": marker, "processes": entries}
    tmp = folder / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, folder / RECORD)


def orphans(folder: Path) -> list[psutil.Process]:
    """Live processes of the harness recorded in ``<folder>/processes.json`` (none when there is
    no record or it was written on another host).

    A process counts only if it provably belongs to that run: its environment carries the run's
    marker (a random 128-bit id), or it is a recorded pid whose start time is the recorded one
    (a pid reused by an unrelated process has another start time and is left alone). This
    process is never one.
    """
    try:
        record = json.loads((folder / RECORD).read_text())
        marker, host = str(record["marker"]), str(record["host"])
        recorded = [(int(p["pid"]), float(p["start"])) for p in record["processes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if host != socket.gethostname() or not marker:
        return []
    found = {p.pid: p for p in marked(marker)}
    for pid, start in recorded:
        if pid == os.getpid() or pid in found:
            continue
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if abs(proc.create_time() - start) < 0.01:
                found[pid] = proc
    return [p for pid, p in found.items() if pid != os.getpid()]


def stop_orphans(folder: Path, grace: float = 5.0) -> list[str]:
    """Stop the :func:`orphans` of an earlier harness of ``folder`` (SIGTERM, then SIGKILL);
    returns a line per process stopped (pid and command)."""
    procs = orphans(folder)
    described = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            described.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:120]}")
    stop(procs, grace)
    return described
