"""Small helpers every stage shares: atomic file writes, hashing, seeding.

Every long job writes its state through :func:`atomic_write_bytes` (write to a temp file in the same
folder, fsync, ``os.replace``) so that a kill at any moment leaves the old or the new file, never a
torn one.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class AlodError(RuntimeError):
    """An error the user can fix (bad input, missing file, wrong order of stages).

    The CLIs print its message without a traceback.
    """


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
    import io

    import torch

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
    import pickle

    import torch

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
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
