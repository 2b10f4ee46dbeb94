"""The managed local SuperLink each harness invocation runs its ``flwr run`` calls through."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from simulations.harness.errors import HarnessError
from simulations.procs import MARKER, marked, stop

ROOT = Path(__file__).resolve().parents[2]  # the repository: the Flower app `flwr run` runs
BIN = Path(sys.executable).parent

# glibc returns freed memory to the kernel eagerly and maps big blocks afresh each step; these
# keep it (see docs/results.md for the measured effect on training steps).
FAST_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSuperLink:
    """A managed local SuperLink of our own for `flwr run`; stopped with all it started on exit.

    The harness starts it itself, with the command `flwr run` would use for its managed local
    SuperLink (same ports, same FLWR_HOME paths), and waits up to ``startup_timeout`` seconds for
    it: `flwr run` gives up after 15 s, too short on a loaded machine, and then finds it running
    and uses it. Everything started with ``env`` carries a marker in its environment, so on exit
    the SuperLink and whatever it started (flwr-simulation, Ray) are found and stopped even after
    they were detached and re-parented.
    """

    def __init__(
        self,
        home: Path,
        fast_malloc: bool,
        base_env: Mapping[str, str] | None = None,
        startup_timeout: float = 300.0,
        threads: int = 1,
    ) -> None:
        base = dict(os.environ if base_env is None else base_env)
        self.marker = base.setdefault(MARKER, os.urandom(16).hex())
        self.home = home
        self.http_port = free_port()
        self.control_port = free_port()
        self.startup_timeout = startup_timeout
        self.log_path = home / "local-superlink" / "superlink.log"
        self.env = {
            **base,
            "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            # Run in this environment instead of `uv sync`-ing the requirements per run.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            # Torch threads per process, pinned whatever the caller's environment says: the
            # thread count changes a client's floating-point results (and so a run's figures),
            # and more threads than reserved cores oversubscribe the machine.
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            # Without an address Ray joins the last cluster `ray start` made on this machine
            # (/tmp/ray/ray_current_cluster), even a dead one, and the simulation then hangs:
            # start a local instance unless the caller names a cluster (docs/scale.md).
            "RAY_ADDRESS": base.get("RAY_ADDRESS") or "local",
            # Ray starts its workers (the simulated clients) at niceness 15, below the
            # simulation engine, whose loop polls the link state for every node and keeps a
            # core busy: on 2 cores the clients then trained on what was left (docs/scale.md).
            "RAY_worker_niceness": base.get("RAY_worker_niceness") or "0",
        }
        if fast_malloc:
            self.env.update(FAST_MALLOC)

    def _healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http_port}/health"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except OSError:
            return False

    def __enter__(self) -> LocalSuperLink:
        runtime = self.log_path.parent
        runtime.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--control-api-address",
            f"127.0.0.1:{self.control_port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.http_port),
            "--database",
            str(runtime / "state.db"),
            "--log-file",
            str(self.log_path),
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise HarnessError(
                    f"the local SuperLink did not start within {self.startup_timeout:.0f} s "
                    f"(exit code {self.proc.poll()}); see {self.log_path}"
                )
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        stop(marked(self.marker))
