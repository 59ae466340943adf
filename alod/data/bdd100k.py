"""BDD100K box labels (det_20 and the 2018 ``bdd100k_labels_images_*.json``) -> :class:`DetectionIndex`.

Both layouts are a JSON list of Scalabel frames::

    [{"name": "b1c66a42-6f7d68ca.jpg", "attributes": {...}?, "timestamp": 10000?,
      "labels": [{"id": "0" | 0, "category": "car", "attributes": {...}?,
                  "box2d": {"x1": ..., "y1": ..., "x2": ..., "y2": ...}}, ...] | null?}, ...]

The 2018 file uses ``person``, ``bike`` and ``motor`` and also carries ``drivable area`` and
``lane`` labels with ``poly2d`` and no ``box2d``; those are not boxes and are skipped silently.
Category names follow the official det config (``bdd100k/configs/det.toml``, used by
``scalabel.eval.detect``): its name mapping (``person``, ``bike``, ``motor``, ``caravan``, ``van``)
is applied in both layouts, as the official evaluation does, and its ignore mapping turns
``other person``, ``other vehicle`` and ``trailer`` into ignored (crowd) regions of the class they
map to.

The label files carry no image sizes; every frame gets ``image_size`` (1280x720 for BDD100K).

Speed and memory: the file is decoded one frame at a time (:func:`iter_json_array`) and boxes go
straight into typed arrays (``array.array``), so no per-box Python objects outlive their frame. On a
generated 70k-frame, 1.3M-box, 460 MB det_20 file this took about 3 s and 85 MB above the
interpreter, against 8 s and 1.6 GB for a bare ``json.load`` (``benchmarks/results/label_parse.json``):
``json.load`` keeps ~5M dicts alive, and the cyclic garbage collector re-walks them as they pile
up (about half its time); per-frame objects die young instead.
"""
from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from alod.data.index import DetectionIndex
from alod.data.problems import (
    BAD_COORDINATES,
    BAD_RECORD,
    DUPLICATE_NAME,
    INVERTED_BOX,
    MISSING_NAME,
    NON_FINITE,
    UNKNOWN_CATEGORY,
    LabelFileError,
    Problem,
    ProblemLog,
    malformed_json_error,
    note_zero_area_boxes,
)

#: Label ids 1..10, in the order of the official det config.
BDD100K_CLASSES: tuple[str, ...] = (
    "pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
    "traffic light", "traffic sign",
)  # fmt: skip

#: Names of the 2018 file and the det config's extra aliases -> det_20 class.
NAME_MAPPING: dict[str, str] = {
    "person": "pedestrian",
    "bike": "bicycle",
    "motor": "motorcycle",
    "caravan": "car",
    "van": "car",
}
#: Ignored (crowd) regions -> the class they count as in evaluation.
IGNORE_MAPPING: dict[str, str] = {
    "other person": "pedestrian",
    "other vehicle": "car",
    "trailer": "truck",
}
#: Non-box labels of the 2018 file (``poly2d``), skipped without a problem record.
POLY_CATEGORIES_2018 = frozenset({"drivable area", "lane"})
#: Names that only the 2018 file uses / only det_20 uses (for :func:`detect_bdd_layout`).
_ONLY_2018 = frozenset({"person", "bike", "motor"}) | POLY_CATEGORIES_2018
_ONLY_DET20 = frozenset({"pedestrian", "bicycle", "motorcycle"})

LAYOUTS = ("bdd100k", "bdd100k_2018", "auto")

# Every accepted category name gets a small code; codes index these tables, so the per-box loop
# stores one byte and the name -> (label, ignore) lookup happens once, vectorised, at the end.
_VOCAB: tuple[str, ...] = BDD100K_CLASSES + tuple(NAME_MAPPING) + tuple(IGNORE_MAPPING)
_CODE = {name: i for i, name in enumerate(_VOCAB)}
_LABEL_OF_CODE = np.array(
    [BDD100K_CLASSES.index(NAME_MAPPING.get(n, IGNORE_MAPPING.get(n, n))) + 1 for n in _VOCAB], dtype=np.int64
)
_IGNORE_OF_CODE = np.array([n in IGNORE_MAPPING for n in _VOCAB], dtype=bool)

# Coordinates must fit float32 (the index dtype): beyond this they would silently become inf.
# Also excludes NaN (every comparison with NaN is false) and infinities.
_BIG = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ParsedLabels:
    """What a reader returns.

    Attributes:
        index: the images and boxes that passed the checks.
        frame_index: ``int64[N]``; ``frame_index[i]`` is the position in the label file of image
            ``i`` of ``index`` (frames that were skipped leave gaps), for problem messages.
        num_frames: number of frames (COCO: image records) in the file, skipped ones included.
        layout: ``"bdd100k"``, ``"bdd100k_2018"`` or ``"coco"`` (for ``"auto"``: what was detected).
    """

    index: DetectionIndex
    frame_index: np.ndarray
    num_frames: int
    layout: str


# ----------------------------------------------------------------------------- streaming JSON
def iter_json_array(path: str | os.PathLike, *, chunk_chars: int = 1 << 20) -> Iterator[object]:
    """Yield the elements of a file whose top level is a JSON array, decoding one at a time.

    Reads ``chunk_chars`` characters at a time, so memory stays at one chunk plus one element
    whatever the file size. Raises :class:`LabelFileError` with the file, line and column for
    malformed JSON, and when the top level is not an array.
    """
    return _JsonArrayStream(os.fspath(path), chunk_chars).elements()


class _JsonArrayStream:
    """State of :func:`iter_json_array`: a window ``buf`` onto the file and a cursor ``pos`` in it."""

    def __init__(self, path: str, chunk_chars: int) -> None:
        self.path = path
        self.chunk = chunk_chars
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line0, self.col0 = 1, 1  # line and column of buf[0], so errors point into the file

    def elements(self) -> Iterator[object]:
        with open(self.path, encoding="utf-8-sig") as self.f:  # -sig: tolerate a byte-order mark
            self._refill()
            c = self._skip_ws()
            if c != "[":
                if c == "":
                    raise self._fail("Expecting value (the file is empty)")
                what = "an object" if c == "{" else "not a list"
                raise LabelFileError(
                    f"{self.path}: the top level is {what}; a BDD100K label file is a JSON list of "
                    "frames. Is this a COCO file (use fmt='coco'), or a Scalabel dataset with a "
                    "'frames' field (save its 'frames' list on its own)?"
                )
            self.pos += 1
            if self._skip_ws() == "]":
                self.pos += 1
            else:
                while True:
                    yield self._decode_one()
                    c = self._skip_ws()
                    if c == ",":
                        self.pos += 1
                        if self._skip_ws() == "]":
                            raise self._fail("Expecting value (trailing comma)")
                        continue
                    if c == "]":
                        self.pos += 1
                        break
                    raise self._fail("Expecting ',' delimiter" if c else "Expecting ',' delimiter (file ends early)")
            if self._skip_ws() != "":
                raise self._fail("Extra data")

    def _decode_one(self) -> object:
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # An element cut by the chunk boundary fails within a few characters of the buffer
                # end (a cut literal or escape), or as an unterminated string (reported at its
                # start): read more and retry. Any other failure is a real error in the file.
                cut = e.pos >= len(self.buf) - 8 or e.msg.startswith("Unterminated string")
                if self.eof or not cut:
                    raise self._fail(e.msg, e.pos) from None
                self._refill()
                continue
            if end >= len(self.buf) and not self.eof:
                self._refill()  # a bare number or literal may go on in the next chunk
                continue
            self.pos = end
            return obj

    def _refill(self) -> None:
        """Drop the consumed part of the buffer and append the next chunk of the file."""
        done = self.buf[: self.pos]
        nl = done.count("\n")
        if nl:
            self.line0 += nl
            self.col0 = len(done) - done.rfind("\n")
        else:
            self.col0 += len(done)
        try:
            more = self.f.read(self.chunk)
        except UnicodeDecodeError as e:
            raise LabelFileError(
                f"{self.path}: not UTF-8 text after line {self.line0} ({e.reason}). "
                "Re-export the file as UTF-8 JSON."
            ) from None
        self.eof = not more
        self.buf = self.buf[self.pos :] + more
        self.pos = 0

    def _skip_ws(self) -> str:
        """Advance past whitespace; return the next character ('' at the end of the file)."""
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in " \t\n\r":
                pos += 1
            self.pos = pos
            if pos < len(buf):
                return buf[pos]
            if self.eof:
                return ""
            self._refill()

    def _fail(self, msg: str, pos: int | None = None) -> LabelFileError:
        pos = self.pos if pos is None else pos
        nl = self.buf.count("\n", 0, pos)
        line = self.line0 + nl
        col = pos - self.buf.rfind("\n", 0, pos) if nl else self.col0 + pos
        return malformed_json_error(self.path, json.JSONDecodeError(msg, self.buf, pos), line=line, column=col)


# ----------------------------------------------------------------------------- layout
def detect_bdd_layout(category_names: Iterable[str]) -> str | None:
    """Which BDD100K layout uses these category names.

    Returns ``"bdd100k_2018"`` if any name only the 2018 file uses appears (``person``, ``bike``,
    ``motor``, ``drivable area``, ``lane``), else ``"bdd100k"`` if any det_20-only name appears
    (``pedestrian``, ``bicycle``, ``motorcycle``), else ``None`` (both layouts read such a file the
    same way).
    """
    names = set(category_names)
    if names & _ONLY_2018:
        return "bdd100k_2018"
    if names & _ONLY_DET20:
        return "bdd100k"
    return None


# ----------------------------------------------------------------------------- reader
def read_bdd100k(
    path: str | os.PathLike,
    *,
    layout: str = "auto",
    image_size: tuple[int, int] = (1280, 720),
    image_root: str | os.PathLike = "",
    problems: ProblemLog | None = None,
) -> ParsedLabels:
    """Parse a BDD100K box label file.

    Args:
        path: ``det_{train,val}.json`` (det_20) or ``bdd100k_labels_images_{train,val}.json`` (2018).
        layout: ``"bdd100k"`` (det_20), ``"bdd100k_2018"``, or ``"auto"``: accept both (their
            only difference is that 2018 ``drivable area`` / ``lane`` polygons are skipped silently;
            in det_20 they are unknown categories) and report the layout seen.
        image_size: ``(width, height)`` in pixels given to every frame.
        image_root: stored in the index; images are not checked here (see ``load_index``).
        problems: where bad records go; default ``ProblemLog(strict=True)`` (raise on the first).

    Returns:
        :class:`ParsedLabels` whose index has ``classes == BDD100K_CLASSES``, boxes ``float32[M, 4]``
        x1, y1, x2, y2 pixels, ignored regions flagged in ``ignore``.
    """
    if layout not in LAYOUTS:
        raise LabelFileError(f"unknown BDD100K layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    problems = ProblemLog(strict=True) if problems is None else problems
    file = os.fspath(path)
    allow_poly = layout != "bdd100k"
    width, height = (int(v) for v in image_size)

    code_of = _CODE
    names: list[str] = []
    seen_names: set[str] = set()
    frame_pos = array("q")
    counts = array("q")
    # x1, y1, x2, y2 per box as float32 (the index dtype; the fast path bounds values to its range):
    # 16 bytes a box instead of ~130 for four Python floats in a list.
    coords = array("f")
    codes = array("B")
    label_pos = array("I")  # position of each kept box in its frame's labels, for notes
    poly_seen: set[str] = set()
    n_frames = 0

    def problem(kind, frame, name, label, label_id, detail, skipped):
        problems.add(Problem(kind, file, frame, name, label, label_id, detail, skipped))

    for fi, frame in enumerate(iter_json_array(path)):
        n_frames += 1
        if type(frame) is not dict:
            problem(BAD_RECORD, fi, None, None, None, f"frame is a JSON {_json_type(frame)}, not an object", "frame")
            continue
        name = frame.get("name")
        if not isinstance(name, str) or not name:
            problem(MISSING_NAME, fi, None, None, None, f"frame has no image name (name={_short(name)})", "frame")
            continue
        if name in seen_names:
            problem(DUPLICATE_NAME, fi, name, None, None, f"image name {name!r} appears again", "frame")
            continue
        labels = frame.get("labels")
        if labels is None:  # missing or null: a frame without boxes
            labels = ()
        elif type(labels) is not list:
            problem(BAD_RECORD, fi, name, None, None, f"'labels' is a JSON {_json_type(labels)}, not a list", "frame")
            continue
        seen_names.add(name)
        names.append(name)
        frame_pos.append(fi)
        start = len(codes)
        for j, lab in enumerate(labels):
            # Fast path for a well-formed label; anything unusual (missing key, wrong type, NaN,
            # inverted box, unknown or non-box category) falls to _slow_label, which says what.
            try:
                b = lab["box2d"]
                x1 = b["x1"]
                y1 = b["y1"]
                x2 = b["x2"]
                y2 = b["y2"]
                code = code_of[lab["category"]]
                ok = -_BIG < x1 <= x2 < _BIG and -_BIG < y1 <= y2 < _BIG
            except (KeyError, TypeError):
                ok = False
            if ok:
                coords.extend((x1, y1, x2, y2))
                codes.append(code)
                label_pos.append(j)
            else:
                kind, detail, box = _slow_label(lab, allow_poly=allow_poly, poly_seen=poly_seen)
                if kind is not None:
                    label_id = lab.get("id") if type(lab) is dict else None
                    problem(kind, fi, name, j, label_id, detail, "box")
                elif box is not None:  # nothing wrong after all: never drop a good box
                    coords.extend(box[:4])
                    codes.append(box[4])
                    label_pos.append(j)
        counts.append(len(codes) - start)

    code_arr = _as_numpy(codes, np.uint8)
    boxes = _as_numpy(coords, np.float32).reshape(-1, 4)
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(_as_numpy(counts, np.int64), out=offsets[1:])
    frame_index = _as_numpy(frame_pos, np.int64)

    index = DetectionIndex(
        image_root=os.fspath(image_root),
        names=np.asarray(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
        widths=np.full(len(names), width, dtype=np.int32),
        heights=np.full(len(names), height, dtype=np.int32),
        offsets=offsets,
        boxes=boxes,
        labels=_LABEL_OF_CODE[code_arr],
        ignore=_IGNORE_OF_CODE[code_arr],
        classes=BDD100K_CLASSES,
        source=file,
    )
    note_zero_area_boxes(index, frame_index=frame_index, label_pos=_as_numpy(label_pos, np.uint32),
                         problems=problems, file=file)

    if layout == "auto":
        seen = {_VOCAB[c] for c in np.unique(code_arr)} | poly_seen
        layout = detect_bdd_layout(seen) or "bdd100k"
    return ParsedLabels(index=index, frame_index=frame_index, num_frames=n_frames, layout=layout)


def _slow_label(lab, *, allow_poly: bool, poly_seen: set[str]):
    """Classify a label the fast path rejected: ``(kind, detail, box)``.

    ``kind`` is a problem kind (``box`` is then ``None``), or ``None`` with ``box`` either ``None``
    (skip silently: a 2018 polygon) or ``(x1, y1, x2, y2, code)`` (a usable box after all).
    """
    if type(lab) is not dict:
        return BAD_RECORD, f"label is a JSON {_json_type(lab)}, not an object", None
    cat = lab.get("category")
    if not isinstance(cat, str):
        return BAD_RECORD, f"label has no category (category={_short(cat)})", None
    if cat in POLY_CATEGORIES_2018 and allow_poly:
        poly_seen.add(cat)
        return None, "", None
    if cat not in _CODE:
        known = ", ".join(BDD100K_CLASSES + tuple(IGNORE_MAPPING))
        return UNKNOWN_CATEGORY, f"unknown category {cat!r} (known: {known})", None
    b = lab.get("box2d")
    if type(b) is not dict:
        return BAD_COORDINATES, f"label has no box2d object (box2d={_short(b)})", None
    xs = [b.get(k) for k in ("x1", "y1", "x2", "y2")]
    if not all(isinstance(v, (int, float)) for v in xs):
        return BAD_COORDINATES, f"box2d coordinates must be numbers (got {_short(b)})", None
    if not all(-_BIG < v < _BIG for v in xs):
        return NON_FINITE, f"box2d has a coordinate that is NaN, infinite or beyond float32 ({_short(b)})", None
    x1, y1, x2, y2 = (float(v) for v in xs)
    if x2 < x1 or y2 < y1:
        return INVERTED_BOX, f"box2d has x2 < x1 or y2 < y1 (x1={x1}, y1={y1}, x2={x2}, y2={y2})", None
    return None, "", (x1, y1, x2, y2, _CODE[cat])


def _as_numpy(a: array, dtype) -> np.ndarray:
    """Copy a typed ``array.array`` into numpy (``frombuffer`` refuses empty buffers)."""
    return np.frombuffer(a, dtype=dtype).copy() if len(a) else np.zeros(0, dtype=dtype)


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _short(v, n: int = 80) -> str:
    """A value as JSON, cut to ``n`` characters, for messages."""
    try:
        s = json.dumps(v, allow_nan=True)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."
