"""One writer per folder: an advisory lock on a file inside it that names its holder.

The writer of a run folder (the ServerApp) or of an experiment folder (the harness) holds an
exclusive ``flock`` on ``<folder>/writer.lock`` while it writes, and records in that file who it
is: pid, host, process start time, role and when it took the lock. A second writer is refused
with a :class:`FolderLockedError` naming the holder. The kernel releases the lock when the
holder's process ends, however it ends (SIGKILL included), so a stale file never blocks anyone:
only a live holder does.

The lock is advisory: it binds the programs that take it (every writer here), not a person with
a shell. On network file systems ``flock`` is only as good as the server's lock support.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

LOCK = "writer.lock"


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock; the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a folder's lock."""

    pid: int
    host: str
    role: str
    process_start: float  # the holder process's start time (psutil), to tell a reused pid
    locked_at: str  # when it took the lock, UTC

    def describe(self) -> str:
        return (
            f"{self.role} (pid {self.pid} on host {self.host}, process started "
            f"{_utc(self.process_start)}, holding the lock since {self.locked_at})"
        )


def read_holder(folder: Path) -> Holder | None:
    """The holder recorded in ``folder``'s lock file (None: no file or no readable record).

    The record says who took the lock last; whether it still holds it only the lock tells.
    """
    try:
        data = json.loads((Path(folder) / LOCK).read_text())
        return Holder(
            int(data["pid"]),
            str(data["host"]),
            str(data["role"]),
            float(data["process-start"]),
            str(data["locked-at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class FolderLock:
    """An exclusive advisory lock on ``<folder>/writer.lock``, taken without waiting.

    Use as a context manager (or :meth:`acquire` and :meth:`release`); the folder is created if
    needed. The lock's file descriptor is not inherited by child processes.
    """

    def __init__(self, folder: Path, role: str) -> None:
        self.folder = Path(folder)
        self.role = role
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK

    def acquire(self) -> FolderLock:
        """Take the lock and record this process as its holder.

        Raises
        ------
        FolderLockedError
            If another live process holds it (named, with its pid, host and start time).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            holder = read_holder(self.folder)
            who = holder.describe() if holder else "another process (its record is unreadable)"
            raise FolderLockedError(
                f"{self.folder} is being written by {who}; one writer per folder: wait for it to "
                f"finish, stop it, or use another folder ({self.role} refused)"
            ) from err
        me = psutil.Process()
        record: dict[str, Any] = {
            "pid": me.pid,
            "host": socket.gethostname(),
            "role": self.role,
            "process-start": me.create_time(),
            "locked-at": _utc(time.time()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record, indent=1) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays, naming its last holder)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
