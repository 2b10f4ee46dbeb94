"""ProcessGuard stops what the harness started, also detached and re-parented descendants."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from simulations.procs import MARKER, ProcessGuard, TreeMemory, marked


def _detached_sleeper(env: dict) -> int:
    # The shell starts a sleeper in a new session and exits at once: the sleeper is orphaned,
    # as the managed SuperLink is when `flwr run` exits.
    out = subprocess.run(
        ["bash", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def _after_exec(pid: int, argv: list[str], timeout: float = 10.0) -> psutil.Process:
    # `echo $!` prints the pid while the child may still be inside execve, when its
    # /proc/PID/environ reads empty; wait until it runs the program it was started as.
    proc = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while proc.cmdline() != argv:
        assert time.monotonic() < deadline, f"pid {pid} never became {argv}: {proc.cmdline()}"
        time.sleep(0.01)
    return proc


def test_guard_stops_detached_descendants():
    with ProcessGuard(grace=2.0) as guard:
        pid = _detached_sleeper(guard.env)
        sleeper = _after_exec(pid, ["sleep", "300"])
        assert sleeper.environ()[MARKER] == guard.marker
        assert [p.pid for p in marked(guard.marker)] == [pid]
    gone = not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE
    assert gone, f"pid {pid} survived the guard"
    assert marked(guard.marker) == []


def test_tree_memory_follows_processes_that_come_and_go():
    # A child holds 300 MiB of its own pages for a moment; the peak counts them, once.
    code = (
        "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        with TreeMemory(lambda: [psutil.Process(), *psutil.Process().children()], every=0.2) as mem:
            child.wait(timeout=60)
    finally:
        child.kill()
    assert mem.samples >= 3
    assert 300 < mem.peak_mb < 2000 and mem.peak_processes == 2
