"""What every label-format module shares: the reader's result, the format entry, value helpers.

Neutral ground so that the format modules (:mod:`alod.data.bdd100k`, :mod:`alod.data.coco`, and any
new one) can define their :class:`LabelFormat` entry without importing each other or the registry
(:mod:`alod.data.readers`), which imports them.
"""
from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from alod.data.index import DetectionIndex
from alod.data.problems import BOX_CLIPPED, BOX_OUTSIDE_IMAGE, INVERTED_BOX, NON_FINITE, NOTE_KINDS, Problem, ProblemLog
from alod.utils import AlodError

#: The file name endings taken for images when a folder is listed (``data.kind: folder``, the YOLO
#: reader), compared in lower case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: How far a box may stick out of the image and still be clipped to it (a note) rather than
#: refused (``box_outside_image``): ``max(BOX_SLACK_PX, BOX_SLACK_FRACTION * side)`` on each side,
#: i.e. 12.8 px horizontally and 7.2 px vertically on a 1280x720 frame, 2 px on a small image.
#: Annotation tools let a drag end a little past the border, and rounding does the rest; a box
#: farther out was drawn for another image size (a wrong ``data.image_size``) or is garbage.
BOX_SLACK_PX = 2.0
BOX_SLACK_FRACTION = 0.01


def problem_reporter(problems: ProblemLog, file: str):
    """``problem(kind, frame, name, label, label_id, detail, skipped)``: adds one :class:`Problem`
    about ``file`` to ``problems`` (a note kind as a note that skips nothing). The readers' one way
    to report a record."""
    def problem(kind, frame, name, label, label_id, detail, skipped):
        if kind in NOTE_KINDS:
            problems.add(Problem(kind, file, frame, name, label, label_id, detail, "nothing", severity="note"))
        else:
            problems.add(Problem(kind, file, frame, name, label, label_id, detail, skipped))

    return problem


def box_slack(side: float) -> float:
    """The tolerance in pixels for an image side of ``side`` px (see :data:`BOX_SLACK_PX`)."""
    return max(BOX_SLACK_PX, BOX_SLACK_FRACTION * side)


def check_box(x1: float, y1: float, x2: float, y2: float, width: float, height: float):
    """Classify a box of an image of ``width`` x ``height`` px: ``(kind, detail, box)``.

    Readers call it for the (rare) boxes their fast path did not accept as lying inside
    ``[0, width] x [0, height]``. The coordinates are numbers (type checks are the caller's).

    Returns:
        * ``(None, "", (x1, y1, x2, y2))``: a good box, unchanged;
        * ``(BOX_CLIPPED, detail, clipped)``: outside by at most :func:`box_slack`, clipped to
          the image (a note: keep ``clipped``);
        * ``(NON_FINITE | INVERTED_BOX | BOX_OUTSIDE_IMAGE, detail, None)``: a bad box.
    """
    xs = (x1, y1, x2, y2)
    coords = f"x1={x1!r}, y1={y1!r}, x2={x2!r}, y2={y2!r}"
    try:
        xs = tuple(float(v) for v in xs)
    except OverflowError:  # an integer beyond float64
        return NON_FINITE, f"a coordinate is too large for a float ({coords})", None
    if not all(math.isfinite(v) for v in xs):
        return NON_FINITE, f"a coordinate is NaN or infinite ({coords})", None
    x1, y1, x2, y2 = xs
    if x2 < x1 or y2 < y1:
        return INVERTED_BOX, f"x2 < x1 or y2 < y1 ({coords})", None
    sx, sy = box_slack(width), box_slack(height)
    if x1 < -sx or y1 < -sy or x2 > width + sx or y2 > height + sy:
        return (BOX_OUTSIDE_IMAGE, f"box ({coords}) lies outside the {width}x{height} image by more than "
                f"{sx:g} px horizontally or {sy:g} px vertically", None)
    clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
               min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    if clipped != xs:
        cx1, cy1, cx2, cy2 = clipped
        return (BOX_CLIPPED, f"box ({coords}) sticks out of the {width}x{height} image; clipped to "
                f"x1={cx1!r}, y1={cy1!r}, x2={cx2!r}, y2={cy2!r}", clipped)
    return None, "", xs


def is_number(v) -> bool:
    """A JSON number: ``int`` or ``float`` but not ``bool`` (``true`` is no coordinate)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class ParsedLabels:
    """What a reader returns.

    Attributes:
        index: the images and boxes that passed the checks.
        frame_index: ``int64[N]``; ``frame_index[i]`` is the position in the label file of image
            ``i`` of ``index`` (frames that were skipped leave gaps), for problem messages.
        num_frames: number of frames (COCO: image records) in the file, skipped ones included.
        layout: the name of the label format read (``"bdd100k"``, ``"bdd100k_2018"``, ``"coco"``;
            for ``"auto"``: what was detected).
    """

    index: DetectionIndex
    frame_index: np.ndarray
    num_frames: int
    layout: str


@dataclass(frozen=True)
class LabelFormat:
    """One label format, as the registry :data:`alod.data.readers.LABEL_FORMATS` lists it.

    Attributes:
        name: the name ``data.format`` and ``alod evaluate --format`` use.
        family: formats of one family share their prediction files and are told apart only by
            the reader (BDD100K det_20 and 2018 are both ``"bdd100k"``); ``alod evaluate`` reports
            it as ``data_format``.
        read: ``read(path, *, image_root: str, image_size: (width, height) px,
            problems: ProblemLog) -> ParsedLabels`` (plus ``classes=`` where ``accepts_classes``);
            ``image_size`` is for formats whose files
            carry no sizes (others ignore it), bad records go to ``problems``. A reader checks
            image names with :func:`alod.data.problems.image_name_problem` and boxes against the
            image size with :func:`check_box`, and stores boxes as float64 (the file's values).
        sniff: ``sniff(head: bytes) -> bool``: does a file starting with ``head`` (its first
            4096 bytes, byte-order mark and leading whitespace removed) belong to this format?
            ``None``: never chosen by ``fmt="auto"`` (BDD100K 2018 is told from det_20 by
            ``read_detected``, not by the file head).
        read_detected: the reader used when ``fmt="auto"`` chose this format (same signature as
            ``read``); ``None``: ``read``. BDD100K's accepts both layouts and reports which it saw.
        read_predictions: ``read_predictions(path, gt: DetectionIndex, *, gt_path) ->
            (detections, counts)`` for ``alod evaluate``: ``detections[i]`` belongs to
            ``gt.names[i]`` (``boxes float64[N, 4]`` x1, y1, x2, y2 px, ``labels int64[N]`` in
            ``1..C``, ``scores float64[N]``), ``counts`` has ``frames``, ``detections`` and
            ``missing_frames``; ``gt_path`` is the label file ``gt`` was read from. Raises
            :class:`~alod.utils.AlodError` naming the file and record. ``None``: ``alod evaluate``
            cannot read predictions of this format.
        box_convention: the default of ``alod evaluate --box-convention`` for this format
            (``"bdd100k"``: ``w = x2 - x1 + 1``; ``"coco"``: ``w = x2 - x1``).
        description: one line for help texts.
        reads_folders: ``path`` may be a folder (VOC: a folder of XML files); ``load_index``
            refuses a folder for the other formats.
        fingerprint: ``fingerprint(path) -> str``, a sha256 hex of everything ``read`` reads for
            ``path`` (for the index cache key); ``None``: the sha256 of the file's bytes. Needed
            where ``path`` stands for several files (a folder, a list of ids).
        accepts_classes: ``read`` takes ``classes: Sequence[str] | None``, the class names in
            label order (``data.classes``; other names are ``unknown_category`` problems), for
            formats whose files carry no class list; ``None`` there: the sorted names found.
        needs_images: ``read`` needs ``image_root`` (YOLO: the frames are the image files, their
            sizes come from the image headers). ``load_index`` refuses ``image_root=None`` for it
            and calls ``fingerprint(path, image_root=...)``, so that the cache key also covers
            the image files (names, sizes, mtimes).
    """

    name: str
    family: str
    read: Callable[..., ParsedLabels]
    sniff: Callable[[bytes], bool] | None = None
    read_detected: Callable[..., ParsedLabels] | None = None
    read_predictions: Callable[..., tuple[list[dict], dict]] | None = None
    box_convention: str = "coco"
    description: str = ""
    reads_folders: bool = False
    fingerprint: Callable[[str | os.PathLike], str] | None = None
    accepts_classes: bool = False
    needs_images: bool = False


# ----------------------------------------------------------------------------- value helpers
def array_to_numpy(a: array, dtype) -> np.ndarray:
    """Copy a typed ``array.array`` into a 1-d numpy array of ``dtype`` (``frombuffer`` refuses
    empty buffers, so an empty array gets ``np.zeros(0, dtype)``)."""
    return np.frombuffer(a, dtype=dtype).copy() if len(a) else np.zeros(0, dtype=dtype)


def json_type_name(v) -> str:
    """The JSON name of a decoded value's type (``object``, ``array``, ``string``, ``number``,
    ``boolean``, ``null``), for messages such as "frame is a JSON array, not an object"."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__
    )


def short_json(v, n: int = 80) -> str:
    """A value as JSON, cut to ``n`` characters, for messages."""
    try:
        s = json.dumps(v, allow_nan=True)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def rows_to_detections(rows: list[tuple]) -> dict:
    """One image's prediction rows ``(x1, y1, x2, y2, score, label)`` -> the detection dict of
    :func:`alod.evaluation.evaluate_detections`: ``boxes float64[N, 4]`` px, ``labels int64[N]``,
    ``scores float64[N]`` (empty arrays for no rows)."""
    if not rows:
        return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}
    a = np.asarray(rows, dtype=np.float64)
    return {"boxes": a[:, :4], "labels": a[:, 5].astype(np.int64), "scores": a[:, 4]}


# ----------------------------------------------------------------------------- image folders
def list_image_names(root: str | os.PathLike) -> list[str]:
    """Relative ``/``-separated names of the image files under ``root`` (recursive, sorted).

    An image is a file whose name ends in one of :data:`IMAGE_EXTENSIONS` (any case). Files and
    folders whose name starts with ``.`` are left out (hidden files, such as macOS ``._x.jpg``
    resource forks, and tool folders such as ``.thumbnails``); symbolic links to files are listed,
    links to folders are not descended into (no cycles). Sorted, so that an index does not depend
    on the order the file system lists files in.

    Raises:
        AlodError: a folder under ``root`` cannot be listed.
    """
    def fail(e: OSError) -> None:
        raise AlodError(f"image folder {root}: cannot list {e.filename!r} ({e.strerror or e}); "
                        "check its permissions") from None

    names = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.startswith(".") or os.path.splitext(f)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            names.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
    return sorted(names)


def image_header_size(path: str | os.PathLike) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` px from the image header, or ``(None, why)`` in words.

    PIL opens lazily: only the header is read, nothing is decoded (a fraction of a millisecond per
    file), so sizes for a whole folder are cheap.
    """

    p = os.fspath(path)
    try:
        with Image.open(p) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - not an image, truncated header, decompression bomb, I/O error
        return None, f"image file {p!r}: its header cannot be read ({type(e).__name__}: {e})"
    if w <= 0 or h <= 0:
        return None, f"image file {p!r}: its header gives the size {w}x{h}"
    return (int(w), int(h)), None
