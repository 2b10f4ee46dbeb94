"""Flower processes on 127.0.0.1 for the deployment tests: free ports, one FLWR_HOME each.

Shared by tests/test_deployment.py and tests/test_fleet_proxy.py; the ``processes`` fixture
(tests/conftest.py) stops everything a test started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent  # the virtualenv's bin folder, if pytest runs from one
STARTUP_TIMEOUT = 60.0  # seconds for the SuperLink to accept connections
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL at teardown


def executable(name: str) -> str | None:
    """``name`` from PATH, else from the interpreter's bin folder (an unactivated venv)."""
    return shutil.which(name) or shutil.which(name, path=str(BIN_DIR))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"flower-superlink exited with {proc.returncode}:\n{tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"flower-superlink did not listen on {port} within {timeout}s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name}: no log)"
    text = path.read_text(errors="replace").splitlines()
    return f"--- {path.name} ---\n" + "\n".join(text[-lines:])


class Processes:
    """Processes started by the test; ``stop`` ends them and everything they started."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one at teardown
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def stop(self, only: subprocess.Popen | None = None) -> None:
        """End every process started here (or ``only`` that one) and all their descendants."""
        procs = self.procs if only is None else [only]
        # SuperExec, flwr-serverapp and flwr-clientapp run in sessions of their own: collect
        # every descendant before the parents go, then signal groups and stragglers alike.
        found: dict[int, psutil.Process] = {}
        for proc in procs:
            try:
                parent = psutil.Process(proc.pid)
                for p in [parent, *parent.children(recursive=True)]:
                    found[p.pid] = p
            except psutil.NoSuchProcess:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
            for p in found.values():
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
            _, alive = psutil.wait_procs(list(found.values()), timeout=STOP_TIMEOUT)
            if not alive and all(proc.poll() is not None for proc in procs):
                break
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)

    def tails(self) -> str:
        return "\n".join(tail(log) for log in self.logs)


def flower_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
            "FLWR_HOME": str(home),
            # Never `uv sync` the app's dependencies at run time: they are installed already.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "OMP_NUM_THREADS": "1",  # three ClientApps and a ServerApp share a few cores
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_superlink(
    processes: Processes, port: int, database: Path, log: Path, env: dict[str, str]
) -> subprocess.Popen:
    # Fleet, Control and Runtime APIs on one HTTP port (--port); state in the --database file.
    link = processes.start(
        [
            executable("flower-superlink") or "flower-superlink",
            "--insecure",
            "--disable-runtime-dependency-installation",
            "--database",
            str(database),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log,
        env,
    )
    wait_for_port(port, link, log, STARTUP_TIMEOUT)
    return link
