"""One command at a time on a run folder.

Two commands writing the same ``runs/<run>/`` would interleave checkpoints, shards and state files.
Each stage takes an exclusive lock on ``runs/<run>/.lock`` (:class:`alod.layout.RunLayout`) for as long as it runs (main process
only; the other processes of an ``accelerate launch`` follow the main one). A second command on the
same run is refused with a message naming the process that holds the lock.

The lock is an OS file lock (``filelock``: ``flock`` on Linux and macOS), which the kernel releases
when its process dies, so a lock left by a killed command is never stale: the next command takes it
over and says so. Who holds it is written to ``runs/<run>/.lock.owner.json`` (pid, host, command,
start time) for the message. Network file systems that do not support ``flock`` are not covered.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from alod.utils import AlodError, atomic_write_json


class RunLock:
    """Exclusive lock on a run folder: ``path`` is the lock file, ``owner_path`` says who holds it.

    Use as a context manager or ``acquire``/``release``.
    """

    def __init__(self, path: str | os.PathLike, *, owner_path: str | os.PathLike,
                 log: Callable[[str], object] = print):
        self.path = Path(path)
        self.owner_path = Path(owner_path)
        self.root = self.path.parent
        self.log = log
        self._lock = None

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.owner_path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            owner = self._owner() or {}
            who = (f"pid {owner.get('pid')} on {owner.get('host')} ({' '.join(owner.get('command', []))!r}, "
                   f"since {owner.get('started')})" if owner else "another process")
            raise AlodError(
                f"run folder {self.root} is in use by {who}; wait for it to finish, stop it, or use another "
                "run.name (--set run.name=...)"
            ) from None
        stale = self._owner()
        if stale is not None:
            self.log(f"{self.root}: taking over the lock left by pid {stale.get('pid')} "
                     f"({' '.join(stale.get('command', []))!r}), which is no longer running")
        atomic_write_json(self.owner_path, {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": list(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            self.owner_path.unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
