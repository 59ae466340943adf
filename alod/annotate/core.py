"""What every annotation format shares: the export task, the import result, problems, the format type.

Coordinates everywhere here are pixels of the original image, ``x1, y1, x2, y2`` (``float64``);
labels are ``1..C`` indexing ``classes[label - 1]`` (the dataset's class names, in order). Each
format converts to and from its own convention (Label Studio: percent of the image size; COCO:
``[x, y, w, h]``; CVAT, LabelMe and VOC: corner points; YOLO: centre and size divided by the
image's size). Every box then goes through :class:`ImportBuilder`, so the checks (category,
bounds, degenerate, duplicate and sub-pixel boxes) and their problem kinds are the same for all.

Adding a format: one module that defines an :class:`AnnotationFormat` (``name``, ``export``,
``read``, ``sniff``) and one entry in the registry :data:`alod.annotate.formats.ANNOTATION_FORMATS`,
plus a round-trip test and a test on the real tool's files in ``../shared/data/annotation_samples/``.
"""
from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ExportImage:
    """One image to annotate.

    Attributes:
        name: the image's name in the dataset (relative path under the image root; the key that
            comes back on import).
        path: where the image file is now (absolute), to copy or link into the export folder.
        width, height: pixels.
        boxes: ``float64[N, 4]`` pre-annotations (the model's detections above the threshold), or
            an empty array.
        labels: ``int64[N]`` in ``1..C``.
        scores: ``float64[N]`` the detections' confidences.
        priority: the selection strategy's score of the image (higher = label first), or ``None``.
    """

    name: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    priority: float | None = None


@dataclass(frozen=True)
class ExportTask:
    """A cycle's images for annotators: ``images`` in the order they should be labeled, ``classes``
    (``classes[k - 1]`` names label ``k``), the cycle number and the run name (for file names and
    the tools' project titles)."""

    images: list[ExportImage]
    classes: tuple[str, ...]
    cycle: int
    run: str


@dataclass(frozen=True)
class ImportProblem:
    """One thing wrong in an annotation file: ``file``, ``where`` (image / object, as the tool names
    it), ``kind`` (one of :data:`PROBLEM_KINDS`) and ``detail`` (what was found, what to do)."""

    file: str
    where: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.kind}: {self.detail}"


#: Every kind of problem an import reports. Objects with a problem are not imported; the rest of
#: the file is (the caller decides whether problems stop the import: see ``alod import``).
PROBLEM_KINDS = (
    "not_this_format",      # the file is not what it claims (or what was detected)
    "unknown_category",     # a label name that is not one of the dataset's classes
    "degenerate_box",       # zero or negative width or height, or non-finite coordinates
    "box_outside_image",    # more than a small tolerance outside the image (slightly outside is clipped)
    "not_a_box",            # a polygon, polyline, point... (only axis-aligned rectangles are labels)
    "rotated_box",          # a rectangle with a rotation: its axis-aligned hull is taken, and noted
    "image_not_asked_for",  # an image that was not in the export
    "image_missing",        # an exported image that has no entry in the answer
    "duplicate_image",      # the same image answered twice (several annotators): the first is kept
    "unsafe_image_name",    # a name that leaves the image folder (absolute, '..')
    "duplicate_box",        # the same class and coordinates twice in one image: one is kept
    "tiny_box",             # under one pixel wide or high (more than zero): kept, noted
    "rejected_annotation",  # a Label Studio annotation a reviewer rejected: not a label
)

#: A box narrower or lower than this (pixels, after clipping) but not empty is ``tiny_box``.
TINY_BOX_PX = 1.0


@dataclass
class ImportResult:
    """What an annotation file says about the exported images.

    Attributes:
        boxes: image name -> ``float64[K, 4]`` pixel boxes (``K`` may be 0: an image the annotator
            saw and found empty).
        labels: image name -> ``int64[K]`` in ``1..C``.
        problems: everything that was skipped, converted or missing, in file order.
        format: the format name that read the file.
    """

    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    problems: list[ImportProblem] = field(default_factory=list)
    format: str = ""


#: How far outside the image a corner may lie and still be clipped (pixels, or this share of the
#: side, whichever is larger): annotation tools let a drag end a pixel past the border.
CLIP_TOLERANCE_PX = 2.0
CLIP_TOLERANCE_FRACTION = 0.01


class ImportBuilder:
    """Collects one file's boxes with the checks every format shares; formats call it per object.

    ``image(name, where)`` opens an image (refusing names that were not exported, unsafe names and
    repeats), ``box(...)`` adds one axis-aligned box in pixels (checking category, degeneracy and
    bounds; clipping within tolerance; exact duplicates and sub-pixel boxes, see :meth:`box`),
    ``problem(...)`` records anything else, ``finish()`` adds an ``image_missing`` problem for
    every exported image the file did not answer.
    """

    def __init__(self, task: ExportTask, file: str | Path, fmt: str):
        self.task = task
        self.file = str(file)
        self.result = ImportResult(format=fmt)
        self._sizes = {im.name: (im.width, im.height) for im in task.images}
        self._label_of = {c: k + 1 for k, c in enumerate(task.classes)}
        self._rows: dict[str, list] = {}
        self._seen: dict[str, set] = {}  # name -> the (x1, y1, x2, y2, label) already added

    def problem(self, where: str, kind: str, detail: str) -> None:
        assert kind in PROBLEM_KINDS, kind
        self.result.problems.append(ImportProblem(self.file, where, kind, detail))

    def image(self, name: str, where: str) -> bool:
        """Start collecting ``name``; ``False`` (and a problem recorded) when it must be skipped."""
        norm = posixpath.normpath(str(name).replace("\\", "/")) if name else ""
        if not name or norm.startswith("/") or norm == ".." or norm.startswith("../") or "\x00" in str(name):
            self.problem(where, "unsafe_image_name", f"image name {name!r} leaves the image folder; skipped")
            return False
        if name not in self._sizes:
            self.problem(where, "image_not_asked_for", f"{name!r} was not in this cycle's export; skipped")
            return False
        if name in self._rows:
            self.problem(where, "duplicate_image", f"{name!r} is answered more than once; the first answer is kept")
            return False
        self._rows[name] = []
        return True

    def box(self, name: str, where: str, category: str, x1: float, y1: float, x2: float, y2: float) -> None:
        """Add a box of image ``name`` (opened with :meth:`image`); corners in any order, pixels.

        After clipping: no area is ``degenerate_box`` (skipped); the same class and coordinates as
        a box already added to the image is ``duplicate_box`` (skipped: one is kept); narrower or
        lower than :data:`TINY_BOX_PX` is ``tiny_box`` (kept, see :meth:`_add`).
        """
        label = self._label_of.get(category)
        if label is None:
            self.problem(where, "unknown_category",
                         f"category {category!r} is not one of the dataset's classes ({', '.join(self.task.classes)})")
            return
        xs = [x1, y1, x2, y2]
        try:  # float() of an integer too large for a double raises OverflowError
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) for v in xs)
        except OverflowError:
            ok = False
        if not ok:
            self.problem(where, "degenerate_box", f"non-numeric or non-finite coordinates {xs}")
            return
        x1, x2 = sorted((float(x1), float(x2)))
        y1, y2 = sorted((float(y1), float(y2)))
        w, h = self._sizes[name]
        tx = max(CLIP_TOLERANCE_PX, CLIP_TOLERANCE_FRACTION * w)
        ty = max(CLIP_TOLERANCE_PX, CLIP_TOLERANCE_FRACTION * h)
        if x1 < -tx or y1 < -ty or x2 > w + tx or y2 > h + ty:
            self.problem(where, "box_outside_image",
                         f"box {[x1, y1, x2, y2]} lies outside the {w}x{h} image; skipped")
            return
        x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
        y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            self.problem(where, "degenerate_box", f"box {[x1, y1, x2, y2]} has no area; skipped")
            return
        self._add(name, where, (x1, y1, x2, y2, label))

    def _add(self, name: str, where: str, row: tuple) -> None:
        """Store ``row`` ``(x1, y1, x2, y2, label)`` unless the image has it already.

        Exact duplicates come from tools that save a box twice (a double click on "add", a copy
        pasted in place): two identical targets only double one object's weight, so one is kept.
        A box under one pixel (0.11 px high was seen in a real export) is kept by the rule the
        label readers apply to zero-area boxes (:mod:`alod.data.problems`: kept and noted, never
        dropped silently): what the annotator drew is stored as drawn, and the note says so.
        """
        seen = self._seen.setdefault(name, set())
        x1, y1, x2, y2, label = row
        if row in seen:
            self.problem(where, "duplicate_box", f"{self.task.classes[label - 1]!r} box {[x1, y1, x2, y2]} is "
                         "already in this image with the same class and coordinates; one is kept")
            return
        seen.add(row)
        if x2 - x1 < TINY_BOX_PX or y2 - y1 < TINY_BOX_PX:
            self.problem(where, "tiny_box", f"box {[x1, y1, x2, y2]} is {x2 - x1:.3g} x {y2 - y1:.3g} px, under one "
                         "pixel; kept, by the label readers' rule for zero-area boxes: kept and noted, never dropped "
                         "silently (evaluation keeps such boxes; training drops only targets without positive width "
                         "and height, so this one is trained on). If it is a slip of the mouse, delete it in the "
                         "tool and import again")
        self._rows[name].append(row)

    def finish(self) -> ImportResult:
        for im in self.task.images:
            if im.name not in self._rows:
                self.problem(im.name, "image_missing", "exported but not in this file")
        for name, rows in self._rows.items():
            a = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
            self.result.boxes[name] = a[:, :4]
            self.result.labels[name] = a[:, 4].astype(np.int64)
        return self.result


@dataclass(frozen=True)
class AnnotationFormat:
    """One annotation tool's file format.

    Attributes:
        name: as the command line spells it (``--format``).
        export: ``(task, out_dir, *, copy_images: bool) -> list[Path]``: write the task files (and
            copy or symlink the images) under ``out_dir``; returns the files a user opens or uploads.
        read: ``(path, task) -> ImportResult``: read an annotation file (or folder) back, validated
            against ``task`` (its image names and sizes, its classes).
        sniff: ``(path) -> bool``: whether ``path`` looks like this format (for ``--format auto``).
        version: the format version written and read, named in the docs (e.g. "CVAT for images 1.1").
        suffixes: the endings of the files ``read`` takes from a folder: what ``alod import``
            hashes to know a folder again (images never count).
    """

    name: str
    export: Callable
    read: Callable
    sniff: Callable[[Path], bool]
    version: str
    suffixes: tuple[str, ...] = (".json", ".xml")
