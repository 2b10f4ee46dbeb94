"""A SuperExec for ``flower-supernode --isolation process`` that keeps torch imported.

Flower 1.41 starts one ``flwr-clientapp`` process per message: in the default ``subprocess``
isolation the SuperNode's own ``flower-superexec`` launches it, and with ``--isolation process``
an operator-started ``flower-superexec`` does, in the same way. Every query, train and evaluate
message therefore pays for a new interpreter that imports torch and Flower before it does any
work (seconds on a small board). Flower 1.41's only pre-started ("warm") executors are Kubernetes
pods.

This module is that operator-started SuperExec with one change: it imports torch and Flower's
ClientApp runtime once, then serves each ClientApp task in a ``fork`` of itself. The child runs
Flower's own ``run_clientapp`` (token, FAB install, app loading and reply exactly as
``flwr-clientapp`` does) and exits; the app's code is imported in the child from the FAB, never
from this process, so what runs is what ``flwr run`` sent. Run it beside the SuperNode::

    flower-supernode --isolation process --insecure --superlink HOST:PORT --port 9094 ...
    python -m client.warm_superexec --insecure --runtime-api-address 127.0.0.1:9094

It accepts ``flower-superexec``'s flags. It relies on two flwr 1.41 internals
(``flwr.supercore.superexec.run_superexec.get_executor`` and
``flwr.supernode.runtime.run_clientapp.run_clientapp``) and refuses to start, naming them, when
they are missing; plain ``flower-superexec`` is the drop-in fallback. POSIX only (``os.fork``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

# Imported once here so that every forked ClientApp starts with them loaded: this is the point.
import numpy  # noqa: F401
import torch

# torch.optim imports torch._dynamo when it builds its first optimizer: 8 s per ClientApp on a
# slow 2-core machine (docs/deployment.md). It starts no thread, so it is safe across fork. (Not
# so `datasets`, which the partitioners need: pyarrow starts a thread at import. A node's
# partition is cached on disk instead, client.local_data.)
import torch._dynamo  # noqa: F401

try:
    import flwr.clientapp  # noqa: F401
    import flwr.supercore.superexec.run_superexec as superexec_loop
    from flwr.supercore.cli.flower_superexec import flower_superexec
    from flwr.supercore.constant import TaskType
    from flwr.supercore.exit import exit_handler, signal_handler
    from flwr.supercore.superexec.executor import LaunchResult, SubprocessExecutor
    from flwr.supercore.superexec.executor.types import ExecutionSpec
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp
except ImportError as err:  # a Flower release whose internals moved
    raise SystemExit(
        f"client.warm_superexec needs flwr 1.41's SuperExec internals ({err}); "
        "use `flower-superexec` with the same flags instead"
    ) from err


class ForkExecutor(SubprocessExecutor):
    """Run ClientApp tasks in a fork of this (warm) process; other task types as subprocesses."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._children: set[int] = set()

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        """Fork a child that runs Flower's ``run_clientapp`` for ``spec.token``."""
        if spec.task_type != TaskType.CLIENT_APP:
            return super().launch(spec)
        self.reconcile()
        pid = os.fork()
        if pid == 0:  # child: never returns
            _run_task_and_exit(spec)
        self._children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished children (called by the SuperExec loop on every poll)."""
        for pid in list(self._children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
            self._children.discard(pid)

    def close(self) -> None:
        """Stop running ClientApps when the SuperExec stops (only in the parent)."""
        if os.getpid() != self._pid:
            return
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _run_task_and_exit(spec: ExecutionSpec) -> None:
    """In the forked child: forget the parent's exit handlers, run the task, ``_exit``."""
    code = 1
    try:
        # The parent's handlers close the parent's Runtime API client and executor: never here.
        exit_handler.registered_exit_handlers.clear()
        for sig in signal_handler.SIGNAL_TO_EXIT_CODE:
            signal.signal(sig, signal.SIG_DFL)
        _forget_own_package()
        certificates = validate_and_resolve_root_certificates(
            spec.root_certificates_path, spec.insecure
        )
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=certificates,
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
        code = 0
    except SystemExit as exc:  # run_clientapp ends with flwr_exit -> sys.exit
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # anything else must not unwind into the parent's loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _forget_own_package() -> None:
    """Drop this module's package from ``sys.modules``.

    Flower imports the app from the FAB's folder only for modules not imported yet: without this,
    ``client.client_app`` would come from the package this module was started from.
    """
    package = __name__.split(".")[0]
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        del sys.modules[name]


def _fork_executor(*_args: Any, **_kwargs: Any) -> ForkExecutor:
    return ForkExecutor()


def main() -> None:
    """``flower-superexec`` with ClientApp tasks forked from this warm process."""
    if "--executor" in sys.argv:
        raise SystemExit("client.warm_superexec chooses its own executor: drop --executor")
    if not callable(getattr(superexec_loop, "get_executor", None)):
        raise SystemExit(
            "client.warm_superexec: flwr's SuperExec loop has no get_executor to replace; "
            "use `flower-superexec` with the same flags instead"
        )
    superexec_loop.get_executor = _fork_executor
    flower_superexec()


if __name__ == "__main__":
    main()
