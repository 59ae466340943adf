"""Bad records in label files: what counts as one, how it is reported, and what ``strict`` does.

Every reader hands each problem it finds to a :class:`ProblemLog`:

* ``strict=True`` (the default): the first *error* raises :class:`LabelFileError` (an
  :class:`~alod.utils.AlodError`) whose message names the file, the frame index, the frame name, the
  label, what is wrong and what to do.
* ``strict=False``: the bad box is skipped (or the whole frame, when the frame itself is bad: no
  name, a duplicate name, a name outside the image folder, a missing or unreadable image), the
  problem is kept, and at the end
  :meth:`ProblemLog.report` prints one line per kind with its count and :meth:`ProblemLog.write_jsonl`
  writes every problem as one JSON object per line. Nothing is dropped without a record.

Some input is fatal whatever ``strict`` says, because nothing sensible can be skipped: malformed
JSON (the message carries the file, line and column), JSON nested beyond Python's recursion limit,
a file whose top level has the wrong shape (a BDD100K file that is not a list of frames, a COCO
file without ``images``, ``annotations`` or ``categories``) and a broken COCO ``categories`` list.
Readers raise :class:`LabelFileError` for those directly.

The README's "Bad records" table lists every kind below with what each mode does; keep the two
in step.

*Notes* (``severity="note"``, the kinds in :data:`NOTE_KINDS`) are counted in the report and
written to the problems file, but never raised on and nothing is skipped:

* Zero-area boxes (``x2 == x1`` or ``y2 == y1``) are *kept*: they are legal in both formats, the
  official BDD100K evaluation (``w = x2 - x1 + 1``) counts them as 1-pixel-wide ground truth, and
  dropping them would change mAP. Training code must drop them from targets itself (torchvision's
  detection models reject boxes without positive width and height), as torchvision's
  ``references/detection`` does for COCO.
* Boxes a little outside the image (by at most :func:`alod.data.common.box_slack` of the side:
  2 px or 1 %, whichever is more) are clipped to the image. Farther out is an error
  (``box_outside_image``): such a box belongs to another image size or is garbage.

Image names come from the label file, which may come from a stranger, so they are confined to
the image folder before any file is opened (:func:`confine_image_name`; kind
``image_outside_root``). The rule is lexical: a name must be a relative path without ``..``
components, NUL bytes, backslashes or a drive letter. Symbolic links *inside* the image folder are
followed wherever they point: they were put there by whoever set the folder up (the user), not by
the label file, and linking a dataset's images from elsewhere is a common, legitimate layout (the
repository's own tests do it). A label file alone therefore cannot make alod open a file outside
the image folder. ``follow_symlinks=False`` gives the stricter rule for callers that want it.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from alod.utils import AlodError, atomic_write_text

if TYPE_CHECKING:
    from alod.data.index import DetectionIndex

# ----------------------------------------------------------------------------- kinds
INVERTED_BOX = "inverted_box"
NON_FINITE = "non_finite"
BAD_COORDINATES = "bad_coordinates"
UNKNOWN_CATEGORY = "unknown_category"
MISSING_NAME = "missing_name"
DUPLICATE_NAME = "duplicate_name"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
BAD_RECORD = "bad_record"
UNKNOWN_IMAGE_ID = "unknown_image_id"
ZERO_AREA = "zero_area_box"
IMAGE_OUTSIDE_ROOT = "image_outside_root"
BOX_OUTSIDE_IMAGE = "box_outside_image"
BOX_CLIPPED = "box_clipped"

#: Kinds recorded with ``severity="note"``: counted and written, never raised on, nothing skipped.
NOTE_KINDS = frozenset({ZERO_AREA, BOX_CLIPPED})

#: kind -> (what it is, in words; what to do about it). The report prints the first, every problem
#: record carries both.
KINDS: dict[str, tuple[str, str]] = {
    INVERTED_BOX: (
        "box with x2 < x1 or y2 < y1 (COCO: negative width or height)",
        "fix the coordinates in the label file or delete the label",
    ),
    NON_FINITE: (
        "box coordinate is NaN or infinite",
        "fix the coordinates in the label file or delete the label",
    ),
    BAD_COORDINATES: (
        "box coordinates missing or not numbers",
        "give box2d numeric x1, y1, x2, y2 (COCO: bbox = [x, y, w, h] numbers; VOC: <bndbox> with "
        "<xmin>, <ymin>, <xmax>, <ymax>; YOLO: numeric cx cy w h) or delete the label",
    ),
    UNKNOWN_CATEGORY: (
        "category not in the class list",
        "fix the category name, or map it to a known class before loading",
    ),
    MISSING_NAME: (
        "frame without an image name",
        "give every frame a non-empty 'name' (COCO: 'file_name'; VOC: <filename>)",
    ),
    DUPLICATE_NAME: (
        "image name already used by an earlier frame",
        "merge the two frames' labels into one frame or rename the image",
    ),
    IMAGE_OUTSIDE_ROOT: (
        "image name is not a plain relative path inside the image folder (absolute, '..', NUL byte, "
        "backslash or drive letter)",
        "write image names relative to the image folder with '/' separators, or remove the frame",
    ),
    MISSING_IMAGE: (
        "image file does not exist",
        "check image_root and the frame name, or remove the frame from the label file",
    ),
    UNREADABLE_IMAGE: (
        "image file is empty, not a regular file, or (with verify_images) does not decode",
        "re-download or re-extract the image, or remove the frame from the label file",
    ),
    BAD_RECORD: (
        "record has the wrong type or shape",
        "make frames and labels JSON objects with the fields the format expects (VOC: a parseable XML "
        "file per image with <annotation>, <size> and complete <object>s; YOLO: UTF-8 lines "
        "'class_id cx cy w h' with an integer class id)",
    ),
    UNKNOWN_IMAGE_ID: (
        "annotation refers to an image id that is not in 'images'",
        "add the image record or delete the annotation",
    ),
    BOX_OUTSIDE_IMAGE: (
        "box lies outside the image by more than the tolerance (2 px or 1% of the side)",
        "fix the coordinates, or the image size (BDD100K: data.image_size; COCO: the image "
        "record's width and height; VOC: <size>)",
    ),
    ZERO_AREA: (
        "zero-area box (x2 == x1 or y2 == y1)",
        "nothing needed; training drops such targets, evaluation keeps them as 1-pixel boxes",
    ),
    BOX_CLIPPED: (
        "box a little outside the image, clipped to it",
        "nothing needed; the clipped box is used for training and evaluation",
    ),
}


class LabelFileError(AlodError):
    """A label file that cannot be used as it is (bad record in strict mode, malformed JSON, ...)."""


@dataclass(frozen=True)
class Problem:
    """One bad record.

    Attributes:
        kind: one of the keys of :data:`KINDS`.
        file: the label file.
        frame: 0-based position of the frame in the file (COCO: of the record in ``images``);
            ``None`` when the problem is not tied to a frame.
        name: the frame's image name, if it has one.
        label: 0-based position of the label in the frame's ``labels`` (COCO: of the annotation in
            ``annotations``); ``None`` for frame-level problems.
        label_id: the label's ``id`` field as written in the file, if any.
        detail: what exactly is wrong with this record, in words (values included).
        skipped: what the non-strict reader dropped because of it: ``"box"``, ``"frame"`` or
            ``"nothing"`` (notes).
        severity: ``"error"`` (raises in strict mode) or ``"note"`` (never raises, nothing dropped).
    """

    kind: str
    file: str
    frame: int | None
    name: str | None
    label: int | None
    label_id: str | int | None
    detail: str
    skipped: str
    severity: str = "error"

    @property
    def action(self) -> str:
        """What to do about it, in words."""
        return KINDS[self.kind][1]

    def where(self) -> str:
        parts = [self.file]
        if self.frame is not None:
            parts.append(f"frame {self.frame}" + (f" ({self.name!r})" if self.name else " (no name)"))
        if self.label is not None:
            parts.append(f"label {self.label}" + (f" (id {self.label_id!r})" if self.label_id is not None else ""))
        return ", ".join(parts)

    def describe(self) -> str:
        """One line: where, what is wrong, what to do."""
        return f"{self.where()}: {self.detail}. To fix: {self.action}."

    def to_json(self) -> dict:
        d = asdict(self)
        d["action"] = self.action
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Problem":
        d = dict(d)
        d.pop("action", None)
        return cls(**d)


class ProblemLog:
    """Collects :class:`Problem` s; raises on the first error when ``strict``.

    Readers call :meth:`add` and skip the record when it returns; with ``strict=True`` it never
    returns for an error.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self.problems: list[Problem] = []

    def add(self, problem: Problem) -> None:
        if problem.kind not in KINDS:
            raise ValueError(f"unknown problem kind {problem.kind!r}")
        if self.strict and problem.severity == "error":
            raise LabelFileError(
                problem.describe() + " Or set data.strict: false (load_index(strict=False)) to skip "
                "such records; they are then listed in the problems file."
            )
        self.problems.append(problem)

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def counts(self) -> dict[str, int]:
        """``{kind: number of problems}`` in first-seen order."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def report(
        self,
        *,
        source: str,
        log: Callable[[str], object] = print,
        problems_path: str | os.PathLike | None = None,
        examples: int = 5,
    ) -> None:
        """Print one line per kind of problem (nothing when there are none).

        Without a ``problems_path`` the first ``examples`` problems are printed in full, so a
        skipped record is never invisible.
        """
        if not self.problems:
            return
        n_box = sum(p.skipped == "box" for p in self.problems)
        n_frame = sum(p.skipped == "frame" for p in self.problems)
        where = f"full list in {problems_path}" if problems_path else "pass problems_path to keep the full list"
        log(f"{source}: {len(self.problems)} label problem(s); "
            f"skipped {n_box} box(es) and {n_frame} frame(s) ({where})")
        plural = {"box": "boxes", "frame": "frames", "nothing": "nothing"}
        for kind, n in self.counts().items():
            units = sorted({p.skipped for p in self.problems if p.kind == kind})
            effect = "kept" if units == ["nothing"] else "skipped the " + " / ".join(plural[u] for u in units)
            log(f"  {kind}: {n} -- {KINDS[kind][0]}; {effect}")
        if not problems_path:
            for p in self.problems[:examples]:
                log(f"  e.g. {p.describe()}")

    def write_jsonl(self, path: str | os.PathLike) -> None:
        """Write every problem as one JSON object per line, atomically (an empty file if none)."""
        text = "".join(json.dumps(p.to_json(), sort_keys=True) + "\n" for p in self.problems)
        atomic_write_text(Path(path), text)


# ----------------------------------------------------------------------------- image names
def image_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an image name relative to an image folder, or ``None`` if it can.

    Purely lexical (no file is touched), so readers call it while parsing and any future importer
    of annotation files can reuse it. Refused: an empty name; a NUL byte; a backslash (a Windows
    separator, or part of a drive or UNC form: refused on every OS so that a name means the same
    file everywhere); an absolute path (``/...``); a drive letter (``C:...``); a ``..`` component;
    a name that is only ``.`` and ``/`` (the folder itself); a name the file system cannot encode
    (a lone surrogate). ``.`` components and repeated ``/`` are harmless and allowed.
    """
    if not name:
        return "the image name is empty"
    if "\x00" in name:
        return f"image name {name!r} contains a NUL byte"
    if "\\" in name:
        return f"image name {name!r} contains a backslash (use '/' to separate folders; drive and UNC paths are refused)"
    if name[0] == "/":
        return f"image name {name!r} is an absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        return f"image name {name!r} starts with a drive letter"
    # The common name ("b1c66a42-6f7d68ca.jpg") passes the checks below without a split or an
    # encode: readers call this once per frame.
    if ".." in name and ".." in name.split("/"):
        return f"image name {name!r} has a '..' component"
    if not name.strip("./") and all(part in ("", ".") for part in name.split("/")):
        return f"image name {name!r} names the image folder itself, not a file"
    if not name.isascii():
        try:
            os.fsencode(name)
        except UnicodeError:
            return f"image name {name!r} cannot be encoded as a file name"
    return None


def confine_image_name(
    root: str | os.PathLike, name: str, *, follow_symlinks: bool = True
) -> tuple[Path | None, str | None]:
    """The path of image ``name`` under ``root``, if the name keeps it there.

    The one place that turns an image name from a label file into a path; every reader and
    :func:`alod.data.loading.load_index` go through it (readers through :func:`image_name_problem`).

    Rule: the name must pass :func:`image_name_problem` (a relative path without ``..``, NUL,
    backslash or drive letter), so ``root / name`` stays inside ``root`` lexically. Symbolic links
    inside ``root`` are followed wherever they point (``follow_symlinks=True``, the default): they
    are part of the image folder the user set up, not of the label file, and linking images in
    from elsewhere is a normal layout. With ``follow_symlinks=False`` the fully resolved path must
    also lie inside the resolved ``root`` (one ``realpath`` per image).

    Args:
        root: the image folder.
        name: the image name as the label file writes it.
        follow_symlinks: see above.

    Returns:
        ``(path, None)`` with ``path = root / name``, or ``(None, why)`` with the reason in words.
    """
    if not isinstance(name, str):
        return None, f"image name {name!r} is not a string"
    why = image_name_problem(name)
    if why is not None:
        return None, why
    path = os.path.join(os.fspath(root), name)
    if not follow_symlinks:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            return None, f"image {name!r} resolves to {real!r}, outside the image folder {real_root!r}"
    return Path(path), None


# ----------------------------------------------------------------------------- image files
#: What ``verify`` decodes, recorded with cached results so that a change of method re-checks.
VERIFY_METHOD = "pil-decode/1"


def stat_image_file(path: str | os.PathLike) -> tuple[os.stat_result | None, tuple[str, str] | None]:
    """``(stat, None)`` if ``path`` is a non-empty regular file (after following symbolic links),
    else ``(None, (kind, detail))``. One ``stat`` call."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None, (MISSING_IMAGE, f"image file {p!r} does not exist")
    except (OSError, ValueError) as e:  # ValueError: a path the OS cannot take (never a confined name)
        return None, (UNREADABLE_IMAGE, f"image file {p!r} cannot be read ({getattr(e, 'strerror', None) or e})")
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, pipe or socket)"
        return None, (UNREADABLE_IMAGE, f"image path {p!r} is {what}")
    if st.st_size == 0:
        return None, (UNREADABLE_IMAGE, f"image file {p!r} is empty (0 bytes)")
    return st, None


def check_image_file(path: str | os.PathLike, *, verify: bool = False) -> tuple[str, str] | None:
    """``None`` if the image looks usable, else ``(kind, detail)``.

    Always checks that the path exists, is a regular file (after following symbolic links) and is
    not empty (:func:`stat_image_file`). With ``verify=True`` it also decodes the image
    (:func:`decode_check`), which catches truncated downloads and non-image files.
    :func:`alod.data.loading.load_index` does the same for a whole index, with a cache of decode
    results and several threads.
    """
    _, bad = stat_image_file(path)
    if bad is not None:
        return bad
    if verify:
        why = decode_check(path)
        if why is not None:
            return UNREADABLE_IMAGE, why
    return None


def decode_check(path: str | os.PathLike) -> str | None:
    """Decode the image at ``path``; ``None`` if it decodes, else what went wrong, in words.

    Depth: a full decode, because PIL's ``Image.verify()`` reads only the header of a JPEG and lets a
    truncated file pass. JPEGs are decoded in draft mode (the inverse DCT at 1/8 scale): every
    byte of the compressed data is still read, so truncation is caught exactly as by a full
    decode, at about half its cost (about 2 ms against 4 ms for a 1280x720 BDD100K frame on one
    core of our shared 2-core machine, measured on the 50 real frames). Corruption that libjpeg
    only warns about (a damaged block in the middle) passes either way. Other formats are decoded
    fully.
    """
    p = os.fspath(path)
    try:
        with Image.open(p) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as e:  # noqa: BLE001 - whatever PIL raises, the image is unusable
        return f"image file {p!r} does not decode ({type(e).__name__}: {e})"
    return None


def malformed_json_error(file: str | os.PathLike, err: json.JSONDecodeError, *, line: int | None = None,
                         column: int | None = None) -> LabelFileError:
    """The always-fatal error for a file that is not valid JSON (line and column 1-based)."""
    line = err.lineno if line is None else line
    column = err.colno if column is None else column
    return LabelFileError(
        f"{os.fspath(file)}: line {line}, column {column}: not valid JSON ({err.msg}). "
        "The file is probably truncated or was edited by hand: re-download or re-export it."
    )


def note_zero_area_boxes(
    index: "DetectionIndex",
    *,
    frame_index: np.ndarray,
    label_pos: np.ndarray,
    problems: ProblemLog,
    file: str,
    label_ids: list | None = None,
) -> None:
    """Record each zero-area box of ``index`` as a note (the box is kept).

    Args:
        frame_index: ``int64[N]`` position in the label file of each image of ``index``.
        label_pos: ``int64[M]`` position of each box's label in the file (per frame for BDD100K,
            in ``annotations`` for COCO).
        label_ids: optional ``[M]`` ids of the labels as written in the file.
    """
    b = index.boxes
    rows = np.flatnonzero((b[:, 2] == b[:, 0]) | (b[:, 3] == b[:, 1]))
    if not len(rows):
        return
    img = np.searchsorted(index.offsets, rows, side="right") - 1
    for r, i in zip(rows.tolist(), img.tolist()):
        x1, y1, x2, y2 = b[r].tolist()
        problems.add(Problem(
            ZERO_AREA, file, int(frame_index[i]), str(index.names[i]), int(label_pos[r]),
            None if label_ids is None else label_ids[r],
            f"zero-area box (x1={x1}, y1={y1}, x2={x2}, y2={y2})", "nothing", severity="note",
        ))


def load_json_file(path: str | os.PathLike):
    """``json.load`` whose errors name the file, line and column (:class:`LabelFileError`)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise malformed_json_error(path, e) from None
    except UnicodeDecodeError as e:
        raise LabelFileError(f"{os.fspath(path)}: not UTF-8 text ({e.reason}); re-export it as UTF-8 JSON") from None
    except RecursionError:
        raise LabelFileError(f"{os.fspath(path)}: arrays or objects are nested too deeply to decode "
                             "(beyond Python's recursion limit); this is no label file an exporter writes") from None
