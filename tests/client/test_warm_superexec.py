"""client.warm_superexec: ClientApp tasks run in a reaped fork, other tasks as subprocesses."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import LaunchResult, SubprocessExecutor
from flwr.supercore.superexec.executor.types import ExecutionSpec

from client import warm_superexec


def _spec(task_type: TaskType, token: str = "token-1") -> ExecutionSpec:
    return ExecutionSpec(
        task_type=task_type,
        runtime_api_address="127.0.0.1:1",
        token=token,
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=None,
        suppress_output=False,
        task_id=1,
    )


def test_clientapp_task_runs_in_a_forked_child_that_exits_with_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"

    def fake_run_clientapp(**kwargs) -> None:
        # Runs in the child only: the parent never writes this file.
        marker.write_text(f"{kwargs['token']} {kwargs['runtime_api_address']} {os.getpid()}")
        raise SystemExit(3)  # as flwr_exit ends run_clientapp

    monkeypatch.setattr(warm_superexec, "run_clientapp", fake_run_clientapp)
    executor = warm_superexec.ForkExecutor()
    result = executor.launch(_spec(TaskType.CLIENT_APP))
    assert result == LaunchResult.accepted()
    (pid,) = executor._children
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    token, address, child = marker.read_text().split()
    assert (token, address) == ("token-1", "127.0.0.1:1")
    assert int(child) == pid != os.getpid()
    executor.reconcile()  # an already reaped child is forgotten, not an error
    assert executor._children == set()


def test_other_task_types_are_launched_as_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    launched = []
    monkeypatch.setattr(
        SubprocessExecutor, "launch", lambda self, spec: launched.append(spec.task_type)
    )
    executor = warm_superexec.ForkExecutor()
    executor.launch(_spec(TaskType.SERVER_APP))
    assert launched == [TaskType.SERVER_APP] and executor._children == set()


def test_the_child_forgets_this_package_so_the_fab_code_is_imported() -> None:
    saved = {k: v for k, v in sys.modules.items() if k == "client" or k.startswith("client.")}
    assert "client.warm_superexec" in saved
    try:
        warm_superexec._forget_own_package()
        assert not [k for k in sys.modules if k == "client" or k.startswith("client.")]
    finally:
        sys.modules.update(saved)


def test_main_refuses_an_executor_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["warm_superexec", "--executor", "kubernetes"])
    with pytest.raises(SystemExit, match="drop --executor"):
        warm_superexec.main()


def test_the_parent_holds_torch_dynamo_which_starts_no_thread() -> None:
    # What a forked ClientApp would otherwise import at its first optimizer, once per message:
    # a top-level import of this module, so every fork inherits it.
    tree = ast.parse(Path(warm_superexec.__file__).read_text())
    top = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    assert "torch._dynamo" in top
    # fork copies only the calling thread: a thread started at import would be missing in the
    # child while its locks were copied. Count the process's threads around the import, in a
    # fresh interpreter (this one has imported torch._dynamo already).
    threads = "len(os.listdir('/proc/self/task'))"
    code = f"import os, torch; n = {threads}; import torch._dynamo; print(n, {threads})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = done.stdout.split()
    assert before == after
