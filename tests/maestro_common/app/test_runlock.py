"""One writer per folder: the lock refuses a second writer, names the holder, and dies with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from maestro_common.app.runlock import LOCK, FolderLock, FolderLockedError, read_holder

ROOT = Path(__file__).resolve().parents[3]

HOLD = """
import sys, time
from maestro_common.app.runlock import FolderLock
FolderLock(sys.argv[1], "test holder").acquire()
print("held", flush=True)
time.sleep(300)
"""


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "run"  # created by the lock
    with FolderLock(folder, "first writer"):
        holder = read_holder(folder)
        assert holder is not None and holder.pid == os.getpid()
        assert holder.host == socket.gethostname() and holder.role == "first writer"
        with pytest.raises(FolderLockedError) as err:
            FolderLock(folder, "second writer").acquire()
        message = str(err.value)
        assert f"first writer (pid {os.getpid()} on host {socket.gethostname()}" in message
        assert str(folder) in message and "second writer refused" in message
    with FolderLock(folder, "second writer"):  # released: free again
        assert read_holder(folder).role == "second writer"


def test_the_lock_dies_with_its_holder_even_by_sigkill(tmp_path):
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=rf"test holder \(pid {proc.pid} "):
            FolderLock(folder, "me").acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # The stale record still names the dead holder, but only a live holder blocks.
        assert read_holder(folder).pid == proc.pid
        with FolderLock(folder, "me"):
            assert read_holder(folder).pid == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def test_an_unreadable_record_still_refuses(tmp_path):
    folder = tmp_path / "run"
    with FolderLock(folder, "holder"):
        (folder / LOCK).write_text("garbage")  # the record is only a note; the flock decides
        assert read_holder(folder) is None
        with pytest.raises(FolderLockedError, match="its record is unreadable"):
            FolderLock(folder, "me").acquire()
