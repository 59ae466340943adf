"""Small helpers every layer shares: the error type, the registry, atomic file writes, hashing,
seeding, and the run folder's lock.

Every long job writes its state through :func:`atomic_write_bytes` (write to a temp file in the same
folder, fsync, ``os.replace``) so that a kill at any moment leaves the old or the new file, never a
torn one.

:class:`Registry` is the one way a YAML (or the command line) chooses something by name: strategies,
selectors, oracles, label formats, data kinds, model presets, annotation formats, transforms and
commands are each a ``Registry``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

import numpy as np
from filelock import FileLock, Timeout


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class AlodError(RuntimeError):
    """An error the user can fix (bad input, missing file, wrong order of stages).

    The CLIs print its message without a traceback.
    """


T = TypeVar("T")
_MISSING = object()


class Registry(Generic[T]):
    """Names a config or the command line may choose, each mapped to one entry (a function, a class,
    a description).

    ``kind`` names what is registered in messages ("strategy", "selector", ...). Entries keep their
    registration order (``names()``; the label formats' auto-detection relies on it)::

        STRATEGIES = Registry("strategy")

        @STRATEGIES.register("entropy")
        def entropy(dets, *, aggregate="sum"): ...

        STRATEGIES.get("entropy")  # AlodError listing the choices for an unknown name
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """Register ``entry`` under ``name`` (returns it), or as a decorator when ``entry`` is left out.

        Raises:
            ValueError: ``name`` is taken (two entries under one name is a programming error).
        """
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def get(self, name: str, default: Any = _MISSING, *, where: str = "") -> T:
        """The entry of ``name``; ``default`` when given and ``name`` is not registered (as ``dict.get``).

        Raises:
            AlodError: ``"<where>: unknown <kind> 'x'; choose one of a, b"`` (sorted choices).
        """
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        if default is not _MISSING:
            return default
        prefix = f"{where}: " if where else ""
        raise AlodError(f"{prefix}unknown {self.kind} {name!r}; choose one of {', '.join(sorted(self._entries))}")

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def copy(self) -> Registry[T]:
        """A registry with the same entries (tests add toy entries to a copy)."""
        out: Registry[T] = Registry(self.kind)
        out._entries = dict(self._entries)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    # Item assignment and deletion exist for ``monkeypatch.setitem`` in tests (which also restores
    # an overwritten entry); code registers with ``register``, which refuses a taken name.
    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def values(self) -> list[T]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask applies).
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    """Deterministic JSON (sorted keys) written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temp file + ``os.replace``."""
    import torch  # why: keeps torch out of config loading and the light commands

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch_file(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """``torch.load`` that never runs code from the file (``weights_only=True``).

    Checkpoints and weight files may come from someone else; unpickling arbitrary objects can run
    any code, so only tensors and plain containers (dict, list, str, numbers) are accepted. A file
    that needs more is refused with a message saying how to re-save it.

    Raises:
        AlodError: missing file, a file that needs arbitrary objects, or one that is not a torch file.
    """
    import torch  # why: keeps torch out of config loading and the light commands

    path = Path(path)
    if not path.is_file():
        raise AlodError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # a class or function reference: an object, not data
            raise AlodError(
                f"{what} {path} holds Python objects besides tensors and plain values; alod does not load such "
                "files because unpickling them can run code. Re-save only the state dict: "
                "torch.save(model.state_dict(), path)"
            ) from None
        raise AlodError(f"{what} {path} cannot be read as a torch file ({e})") from None
    except Exception as e:  # zip errors, truncated files, wrong magic numbers
        raise AlodError(f"{what} {path} cannot be read as a torch file ({type(e).__name__}: {e})") from None


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def sha256_strings(items) -> str:
    """Hash of an ordered sequence of strings (newline separated)."""
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch. Callers pass ``seed + rank`` per process."""
    import torch  # why: keeps torch out of config loading and the light commands

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------- the run folder lock
# One command at a time on a run folder.
#
# One command at a time on a run folder.
#
# Two commands writing the same ``runs/<run>/`` would interleave checkpoints, shards and state files.
# Each stage takes an exclusive lock on ``runs/<run>/.lock`` (:class:`alod.layout.RunLayout`) for as long as it runs (main process
# only; the other processes of an ``accelerate launch`` follow the main one). A second command on the
# same run is refused with a message naming the process that holds the lock.
#
# The lock is an OS file lock (``filelock``: ``flock`` on Linux and macOS), which the kernel releases
# when its process dies, so a lock left by a killed command is never stale: the next command takes it
# over and says so. Who holds it is written to ``runs/<run>/.lock.owner.json`` (pid, host, command,
# start time) for the message. Network file systems that do not support ``flock`` are not covered.


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
