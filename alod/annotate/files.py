"""What the JSON formats (COCO, Label Studio) share beyond :mod:`alod.annotate.core`.

Reading a JSON file with an error that names the file and what was expected; checking an
:class:`~alod.annotate.core.ExportTask` before anything is written; placing the images into an export
folder under their dataset names; and matching the image reference a tool wrote (a URL, a path
relative to wherever the tool found the image, a name the tool renamed on upload) to an exported
image name. None of this reads an image: imports only ever open the annotation file they are given.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alod.annotate.core import ExportImage, ExportTask
from alod.utils import AlodError

#: The folder of an export that holds the images, under their dataset names.
IMAGES_DIR = "images"

# Label Studio stores an uploaded file as "<8 hex digits>-<original name>".
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?=.)")


def read_json(path: Path, expected: str):
    """The parsed content of the JSON file ``path``.

    Raises :class:`AlodError` naming ``path`` and ``expected`` (what the caller wanted, e.g.
    "a COCO instances JSON file") when the file is missing, a folder, not UTF-8 or not JSON.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AlodError(f"{path}: no such file; expected {expected}") from None
    except IsADirectoryError:
        raise AlodError(f"{path}: is a folder; expected {expected}") from None
    except OSError as e:
        raise AlodError(f"{path}: cannot be read ({e.strerror or e}); expected {expected}") from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise AlodError(f"{path}: not UTF-8 text; expected {expected}") from None
    except json.JSONDecodeError as e:
        raise AlodError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                        f"expected {expected}") from None
    except RecursionError:
        raise AlodError(f"{path}: JSON nested too deeply to be an annotation file; expected {expected}") from None
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise AlodError(f"{path}: unreadable JSON ({e}); expected {expected}") from None


def is_number(v) -> bool:
    """A finite JSON number (not a bool, not an integer too large for a float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _finite(v) -> bool:
    try:
        return not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError, OverflowError):
        return False


def is_id(v) -> bool:
    """A usable record id: an int (not bool) or a string."""
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def ref_segments(ref: str) -> list[str] | None:
    """The path segments of an image reference (``/`` or ``\\`` separated; empty and ``.`` dropped),
    or ``None`` when a segment is ``..`` or the reference holds a NUL (it could leave a folder)."""
    if "\x00" in ref:
        return None
    segs = [s for s in ref.replace("\\", "/").split("/") if s not in ("", ".")]
    return None if ".." in segs else segs


def is_safe_relative(name: str) -> bool:
    """Whether ``name`` is a relative path that stays inside its folder (no ``..``, not absolute,
    no drive letter, not empty)."""
    segs = ref_segments(name) if isinstance(name, str) else None
    return bool(segs) and not name.startswith(("/", "\\")) and not re.match(r"^[A-Za-z]:", name)


class NameMatcher:
    """Finds the exported image an outside reference means.

    An exact dataset name wins. Otherwise the candidates are the exported images with the
    reference's file name (after removing Label Studio's ``<8 hex>-`` upload prefix if nothing
    matched with it), and the one whose path agrees with the reference over the most trailing
    folders is taken; a tie is ambiguous and matches nothing. So ``images/sub/a.jpg``,
    ``/data/upload/3/1a2b3c4d-a.jpg`` and ``a.jpg`` all find ``sub/a.jpg`` when it is the only
    exported ``a.jpg``.
    """

    def __init__(self, names: Iterable[str]):
        self._names = set(names)
        self._by_file = defaultdict(list)
        for n in self._names:
            self._by_file[n.rsplit("/", 1)[-1]].append(n)

    def match(self, segments: list[str]) -> tuple[str | None, str]:
        """``(name, "")`` or ``(None, why)`` for the reference split into ``segments``."""
        if not segments:
            return None, "the reference names no file"
        joined = "/".join(segments)
        if joined in self._names:
            return joined, ""
        last = segments[-1]
        for file in dict.fromkeys((last, _UPLOAD_PREFIX.sub("", last))):
            ref = segments[:-1] + [file]
            scored = []
            for name in self._by_file.get(file, ()):
                parts = name.split("/")
                k = 0
                while k < min(len(parts), len(ref)) and parts[-1 - k] == ref[-1 - k]:
                    k += 1
                scored.append((k, name))
            if scored:
                best = max(k for k, _ in scored)
                top = sorted(n for k, n in scored if k == best)
                if len(top) == 1:
                    return top[0], ""
                return None, (f"matches several exported images ({', '.join(top[:5])}); "
                              "name the image by its full dataset name")
        return None, "no exported image has this file name"


@dataclass(frozen=True)
class ExportRow:
    """One image of an export, checked: boxes clipped to the image (boxes with no area left are
    dropped), ``scores`` ``None`` when the task gave none."""

    image: ExportImage
    boxes: np.ndarray   # float64[N, 4] x1, y1, x2, y2 pixels
    labels: np.ndarray  # int64[N] in 1..C
    scores: np.ndarray | None  # float64[N]


def export_rows(task: ExportTask) -> list[ExportRow]:
    """Check ``task`` before anything is written (:class:`AlodError` naming the image otherwise)."""
    seen = set()
    n_classes = len(task.classes)
    rows = []
    for im in task.images:
        if not is_safe_relative(im.name):
            raise AlodError(f"image name {im.name!r} is not a relative path inside the image root; "
                            "it cannot be exported")
        if im.name in seen:
            raise AlodError(f"image {im.name!r} is listed twice in the export task")
        seen.add(im.name)
        if not (int(im.width) > 0 and int(im.height) > 0):
            raise AlodError(f"image {im.name!r}: size {im.width}x{im.height} is not positive")
        try:
            boxes = np.asarray(im.boxes, dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(im.labels, dtype=np.int64).reshape(-1)
            scores = np.asarray(im.scores, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise AlodError(f"image {im.name!r}: pre-annotations are not boxes [N, 4], labels [N], "
                            f"scores [N] ({e})") from None
        if len(labels) != len(boxes) or len(scores) not in (0, len(boxes)):
            raise AlodError(f"image {im.name!r}: {len(boxes)} boxes, {len(labels)} labels and {len(scores)} "
                            "scores; they must be as many")
        if len(labels) and (labels.min() < 1 or labels.max() > n_classes):
            raise AlodError(f"image {im.name!r}: labels must be in 1..{n_classes} (the classes), "
                            f"got {sorted(set(labels.tolist()))}")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise AlodError(f"image {im.name!r}: non-finite box coordinates or scores")
        if im.priority is not None and not _finite(im.priority):
            raise AlodError(f"image {im.name!r}: priority {im.priority!r} is not a finite number")
        boxes = boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, int(im.width))
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, int(im.height))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        rows.append(ExportRow(im, boxes[keep], labels[keep], scores[keep] if len(scores) else None))
    return rows


def place_images(task: ExportTask, out_dir: Path, *, copy_images: bool) -> Path:
    """Copy (or symlink, absolute target) every image to ``out_dir/images/<name>``; returns that
    folder. Call after :func:`export_rows` (names checked)."""
    root = Path(out_dir) / IMAGES_DIR
    missing = [str(im.path) for im in task.images if not Path(im.path).is_file()]
    if missing:
        raise AlodError(f"{len(missing)} image(s) to export not found, e.g. {missing[0]}")
    root.mkdir(parents=True, exist_ok=True)
    for im in task.images:
        dest = root / im.name
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            if copy_images:
                shutil.copyfile(im.path, dest)
            else:
                os.symlink(Path(im.path).resolve(), dest)
        except OSError as e:
            raise AlodError(f"{dest}: cannot place image {im.name!r} there ({e.strerror or e})") from None
    return root
