"""ProcessGuard stops what the harness started, also detached and re-parented descendants."""

from __future__ import annotations

import json
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


# ----- orphans of an earlier harness of the same folder -----------------------------------


def _sleeper(env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "300"], env=env)


def test_stop_orphans_stops_marked_and_verified_processes_only(tmp_path):
    import os

    from simulations.procs import RECORD, orphans, record_processes, stop_orphans

    marker = "m" + os.urandom(8).hex()
    tagged = _sleeper({**os.environ, MARKER: marker})  # found by its environment
    recorded = _sleeper()  # no marker: found by its recorded pid and start time
    unrelated = _sleeper()  # recorded with the wrong start time: a reused pid, left alone
    try:
        _after_exec(tagged.pid, ["sleep", "300"])
        record_processes(tmp_path, marker, [psutil.Process(recorded.pid)])
        record = json.loads((tmp_path / RECORD).read_text())
        record["processes"].append({"pid": unrelated.pid, "start": 1.0, "cmd": "sleep 300"})
        record["processes"].append({"pid": os.getpid(), "start": psutil.Process().create_time()})
        (tmp_path / RECORD).write_text(json.dumps(record))
        assert sorted(p.pid for p in orphans(tmp_path)) == sorted([tagged.pid, recorded.pid])
        stopped = stop_orphans(tmp_path, grace=2.0)
        assert len(stopped) == 2 and all("sleep 300" in s for s in stopped)
        assert tagged.wait(timeout=10) is not None and recorded.wait(timeout=10) is not None
        assert unrelated.poll() is None  # never signalled
    finally:
        for proc in (tagged, recorded, unrelated):
            proc.kill()
            proc.wait()


def test_no_orphans_without_a_record_or_from_another_host(tmp_path):
    from simulations.procs import RECORD, orphans, record_processes

    assert orphans(tmp_path) == []
    (tmp_path / RECORD).write_text("{not json")
    assert orphans(tmp_path) == []
    sleeper = _sleeper()
    try:
        record_processes(tmp_path, "x" * 32, [psutil.Process(sleeper.pid)])
        record = json.loads((tmp_path / RECORD).read_text())
        (tmp_path / RECORD).write_text(json.dumps({**record, "host": "elsewhere"}))
        assert orphans(tmp_path) == []  # its pids mean nothing here
    finally:
        sleeper.kill()
        sleeper.wait()
