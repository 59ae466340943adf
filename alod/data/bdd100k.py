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

The label files carry no image sizes; every frame gets ``image_size`` (1280x720 for BDD100K), and
boxes are checked against it (:func:`alod.data.common.check_box`: a little outside is clipped and
noted, farther out is a ``box_outside_image`` problem). Image names are checked with
:func:`alod.data.problems.image_name_problem` (``image_outside_root``). Boxes are stored as float64,
exactly the file's values.

Speed and memory: the file is decoded one frame at a time (:func:`iter_json_array`) and boxes go
straight into typed arrays (``array.array``), so no per-box Python objects outlive their frame. On a
generated 70k-frame, 1.3M-box, 460 MB det_20 file this took about 3 s and 85 MB above the
interpreter, against 8 s and 1.6 GB for a bare ``json.load`` (``benchmarks/results/label_parse.json``):
``json.load`` keeps ~5M dicts alive, and the cyclic garbage collector re-walks them as they pile
up (about half its time); per-frame objects die young instead.

For ``alod evaluate`` the module also reads BDD100K prediction frames
(:func:`read_bdd100k_predictions`). :data:`BDD100K_FORMAT` (det_20) and :data:`BDD100K_2018_FORMAT` are
this module's entries in the registry :data:`alod.data.readers.LABEL_FORMATS`.
"""
from __future__ import annotations

import functools
import json
import math
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from alod.data.common import (
    LabelFormat,
    ParsedLabels,
    array_to_numpy,
    check_box,
    is_number,
    json_type_name,
    problem_reporter,
    rows_to_detections,
    short_json,
)
from alod.data.index import DetectionIndex
from alod.data.problems import (
    BAD_COORDINATES,
    BAD_RECORD,
    DUPLICATE_NAME,
    IMAGE_OUTSIDE_ROOT,
    MISSING_NAME,
    UNKNOWN_CATEGORY,
    LabelFileError,
    ProblemLog,
    image_name_problem,
    malformed_json_error,
    note_zero_area_boxes,
)
from alod.utils import AlodError

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
            except RecursionError:
                raise self._fail("Too deeply nested (arrays or objects inside each other "
                                 "beyond Python's recursion limit)") from None
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
        image_size: ``(width, height)`` in pixels given to every frame; boxes are checked
            against it.
        image_root: stored in the index; images are not checked here (see ``load_index``).
        problems: where bad records go; default ``ProblemLog(strict=True)`` (raise on the first).

    Returns:
        :class:`ParsedLabels` whose index has ``classes == BDD100K_CLASSES``, boxes ``float64[M, 4]``
        x1, y1, x2, y2 pixels (the file's values; clipped to the image where they stick out a
        little), ignored regions flagged in ``ignore``.
    """
    if layout not in LAYOUTS:
        raise LabelFileError(f"unknown BDD100K layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    problems = ProblemLog(strict=True) if problems is None else problems
    file = os.fspath(path)
    width, height = (int(v) for v in image_size)
    problem = problem_reporter(problems, file)
    acc = _Parsed()
    for fi, frame in enumerate(iter_json_array(path)):
        acc.n_frames += 1
        checked = _frame_labels(fi, frame, acc.seen_names, problem)
        if checked is None:
            continue
        name, labels = checked
        acc.seen_names.add(name)
        acc.names.append(name)
        acc.frame_pos.append(fi)
        start = len(acc.codes)
        _add_labels(acc, fi, name, labels, width=width, height=height, allow_poly=layout != "bdd100k",
                    problem=problem)
        acc.counts.append(len(acc.codes) - start)
    index, code_arr = _bdd_index(acc, width=width, height=height, image_root=image_root, file=file)
    frame_index = array_to_numpy(acc.frame_pos, np.int64)
    note_zero_area_boxes(index, frame_index=frame_index, label_pos=array_to_numpy(acc.label_pos, np.uint32),
                         problems=problems, file=file)
    if layout == "auto":
        seen = {_VOCAB[c] for c in np.unique(code_arr)} | acc.poly_seen
        layout = detect_bdd_layout(seen) or "bdd100k"
    return ParsedLabels(index=index, frame_index=frame_index, num_frames=acc.n_frames, layout=layout)


@dataclass
class _Parsed:
    """What the reader keeps while it walks the frames, in file order."""

    names: list[str] = field(default_factory=list)
    seen_names: set[str] = field(default_factory=set)
    frame_pos: array = field(default_factory=lambda: array("q"))
    counts: array = field(default_factory=lambda: array("q"))  # boxes per kept frame
    # x1, y1, x2, y2 per box as float64 (the index dtype: the file's doubles, exactly): 32 bytes a
    # box instead of ~130 for four Python floats in a list.
    coords: array = field(default_factory=lambda: array("d"))
    codes: array = field(default_factory=lambda: array("B"))
    label_pos: array = field(default_factory=lambda: array("I"))  # each kept box's position in its frame
    poly_seen: set[str] = field(default_factory=set)
    n_frames: int = 0


def _frame_labels(fi: int, frame, seen_names: set[str], problem) -> tuple[str, Sequence] | None:
    """``(name, labels)`` of a usable frame record, or ``None`` (the problem reported)."""
    if type(frame) is not dict:
        problem(BAD_RECORD, fi, None, None, None, f"frame is a JSON {json_type_name(frame)}, not an object", "frame")
        return None
    name = frame.get("name")
    if not isinstance(name, str) or not name:
        problem(MISSING_NAME, fi, None, None, None, f"frame has no image name (name={short_json(name)})", "frame")
        return None
    outside = image_name_problem(name)
    if outside is not None:
        problem(IMAGE_OUTSIDE_ROOT, fi, name, None, None, outside, "frame")
        return None
    if name in seen_names:
        problem(DUPLICATE_NAME, fi, name, None, None, f"image name {name!r} appears again", "frame")
        return None
    labels = frame.get("labels")
    if labels is None:  # missing or null: a frame without boxes
        return name, ()
    if type(labels) is not list:
        problem(BAD_RECORD, fi, name, None, None, f"'labels' is a JSON {json_type_name(labels)}, not a list", "frame")
        return None
    return name, labels


def _add_labels(acc: _Parsed, fi: int, name: str, labels: Sequence, *, width: int, height: int, allow_poly: bool,
                problem) -> None:
    """Append frame ``fi``'s usable boxes to ``acc``; report the others."""
    code_of, coords, codes, label_pos = _CODE, acc.coords, acc.codes, acc.label_pos
    for j, lab in enumerate(labels):
        # Fast path for a well-formed label inside the image; anything unusual (missing key,
        # wrong type, NaN, inverted box, a box sticking out, unknown or non-box category)
        # falls to _slow_label, which says what. The chained comparisons also reject NaN
        # (every comparison with NaN is false); a bool is a number to Python, not to JSON.
        try:
            b = lab["box2d"]
            x1 = b["x1"]
            y1 = b["y1"]
            x2 = b["x2"]
            y2 = b["y2"]
            code = code_of[lab["category"]]
            ok = (0.0 <= x1 <= x2 <= width and 0.0 <= y1 <= y2 <= height
                  and type(x1) is not bool and type(y1) is not bool
                  and type(x2) is not bool and type(y2) is not bool)
        except (KeyError, TypeError):
            ok = False
        if ok:
            coords.extend((x1, y1, x2, y2))
            codes.append(code)
            label_pos.append(j)
            continue
        kind, detail, box = _slow_label(lab, allow_poly=allow_poly, poly_seen=acc.poly_seen, width=width,
                                        height=height)
        if kind is not None:
            label_id = lab.get("id") if type(lab) is dict else None
            problem(kind, fi, name, j, label_id, detail, "box")
        if box is not None:  # a good box after all, or clipped (a note): never drop it
            coords.extend(box[:4])
            codes.append(box[4])
            label_pos.append(j)


def _bdd_index(acc: _Parsed, *, width: int, height: int, image_root, file: str) -> tuple[DetectionIndex, np.ndarray]:
    """``(index, codes uint8[M])``: the :class:`DetectionIndex` of the kept frames, every frame
    ``width`` x ``height`` px, and each box's vocabulary code."""
    names = acc.names
    code_arr = array_to_numpy(acc.codes, np.uint8)
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(array_to_numpy(acc.counts, np.int64), out=offsets[1:])
    index = DetectionIndex(
        image_root=os.fspath(image_root),
        names=np.asarray(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
        widths=np.full(len(names), width, dtype=np.int32),
        heights=np.full(len(names), height, dtype=np.int32),
        offsets=offsets,
        boxes=array_to_numpy(acc.coords, np.float64).reshape(-1, 4),
        labels=_LABEL_OF_CODE[code_arr],
        ignore=_IGNORE_OF_CODE[code_arr],
        classes=BDD100K_CLASSES,
        source=file,
    )
    return index, code_arr


def _slow_label(lab, *, allow_poly: bool, poly_seen: set[str], width: int, height: int):
    """Classify a label the fast path rejected: ``(kind, detail, box)``.

    ``kind`` is an error kind (``box`` is then ``None``), a note kind (``box_clipped``: ``box`` is
    the clipped box, to keep), or ``None`` with ``box`` either ``None`` (skip silently: a 2018
    polygon) or ``(x1, y1, x2, y2, code)`` (a usable box after all).
    """
    if type(lab) is not dict:
        return BAD_RECORD, f"label is a JSON {json_type_name(lab)}, not an object", None
    cat = lab.get("category")
    if not isinstance(cat, str):
        return BAD_RECORD, f"label has no category (category={short_json(cat)})", None
    if cat in POLY_CATEGORIES_2018 and allow_poly:
        poly_seen.add(cat)
        return None, "", None
    if cat not in _CODE:
        known = ", ".join(BDD100K_CLASSES + tuple(IGNORE_MAPPING))
        return UNKNOWN_CATEGORY, f"unknown category {cat!r} (known: {known})", None
    b = lab.get("box2d")
    if type(b) is not dict:
        return BAD_COORDINATES, f"label has no box2d object (box2d={short_json(b)})", None
    xs = [b.get(k) for k in ("x1", "y1", "x2", "y2")]
    if not all(is_number(v) for v in xs):
        return BAD_COORDINATES, f"box2d coordinates must be numbers (got {short_json(b)})", None
    kind, detail, box = check_box(*xs, width, height)
    return kind, f"box2d: {detail}" if kind else "", None if box is None else (*box, _CODE[cat])


# ----------------------------------------------------------------------------- evaluation inputs
def read_bdd100k_predictions(
    path: str | os.PathLike, gt: DetectionIndex, *, gt_path: str | os.PathLike | None = None
) -> tuple[list[dict], dict]:
    """Detections from a BDD100K/Scalabel prediction file, aligned with ``gt``.

    The file is a JSON list of frames ``{"name", "labels": [{"category", "box2d": {x1, y1, x2, y2},
    "score"}]}``; det_20 names, the 2018 names (``person``, ``bike``, ``motor``) and the det
    config's other aliases are mapped as the official evaluation maps them. Frames of ``gt``
    missing from the file get no detections.

    Args:
        path: the prediction file.
        gt: the ground truth (BDD100K classes); frames are matched by name.
        gt_path: unused (frames carry their names); accepted so that every format's prediction
            reader has the signature :class:`~alod.data.common.LabelFormat` names.

    Returns:
        ``(detections, counts)``: ``detections[i]`` for ``gt.names[i]`` with ``boxes float64[N, 4]``
        x1, y1, x2, y2 px, ``labels int64[N]``, ``scores float64[N]``; ``counts`` with ``frames``,
        ``detections`` and ``missing_frames``.

    Raises:
        AlodError: malformed JSON (file, line, column), a frame name not in ``gt``, a repeated
            frame, an unknown category, a label without a numeric ``score`` or ``box2d``.
    """
    file = os.fspath(path)
    if set(gt.classes) != set(BDD100K_CLASSES):
        raise AlodError(f"{file}: BDD100K predictions need BDD100K ground truth (the ground truth has classes "
                        f"{', '.join(gt.classes)})")
    label_of = {name: k + 1 for k, name in enumerate(gt.classes)}
    # As bdd100k_to_scalabel: aliases and ignored names become their class (a prediction named
    # "other vehicle" is an ordinary car detection).
    for alias, target in list(NAME_MAPPING.items()) + list(IGNORE_MAPPING.items()):
        label_of[alias] = label_of[target]
    slot_of = gt.name_to_index()
    per_image: list[list | None] = [None] * len(gt)
    n_frames = n_dets = 0
    for fi, frame in enumerate(iter_json_array(file)):
        n_frames += 1
        where = f"{file}: frame {fi}"
        if type(frame) is not dict or not isinstance(frame.get("name"), str):
            if type(frame) is dict and "image_id" in frame:
                raise AlodError(f"{where} looks like a COCO result ({{image_id, category_id, bbox, score}}) but the "
                                "ground truth is BDD100K; give predictions as BDD100K frames")
            raise AlodError(f"{where}: a prediction frame must be an object with a string 'name'")
        name = frame["name"]
        where = f"{where} ({name!r})"
        slot = slot_of.get(name)
        if slot is None:
            raise AlodError(f"{where}: this image is not in the ground truth {gt.source or ''}; "
                            "predict on the ground-truth frames only (check the split)")
        if per_image[slot] is not None:
            raise AlodError(f"{where}: the frame appears more than once; put all its labels in one frame")
        rows = _prediction_rows(frame.get("labels"), where=where, label_of=label_of, classes=gt.classes)
        per_image[slot] = rows
        n_dets += len(rows)
    missing = sum(r is None for r in per_image)
    counts = {"frames": n_frames, "detections": n_dets, "missing_frames": missing}
    return [rows_to_detections(r) for r in per_image], counts


def _prediction_rows(labels, *, where: str, label_of: dict[str, int], classes) -> list[tuple]:
    """``(x1, y1, x2, y2, score, label)`` per prediction of one frame (``where`` names it).

    Raises:
        AlodError: labels that are not a list, a label that is not an object, an unknown category,
            no finite numeric ``score`` or ``box2d``.
    """
    labels = [] if labels is None else labels
    if type(labels) is not list:
        raise AlodError(f"{where}: 'labels' must be a list")
    rows = []
    for j, lab in enumerate(labels):
        lw = f"{where}, label {j}"
        if type(lab) is not dict:
            raise AlodError(f"{lw}: a label must be an object")
        cat = lab.get("category")
        label = label_of.get(cat) if isinstance(cat, str) else None
        if label is None:
            known = ", ".join(list(classes) + list(NAME_MAPPING) + list(IGNORE_MAPPING))
            raise AlodError(f"{lw}: unknown category {cat!r} (known: {known})")
        score = lab.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise AlodError(f"{lw}: a prediction needs a finite numeric 'score' (got {score!r})")
        b = lab.get("box2d")
        xs = [b.get(k) for k in ("x1", "y1", "x2", "y2")] if type(b) is dict else None
        if xs is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and math.isfinite(v) for v in xs):
            raise AlodError(f"{lw}: a prediction needs box2d with finite numeric x1, y1, x2, y2 (got {b!r})")
        rows.append((*xs, float(score), label))
    return rows


# ----------------------------------------------------------------------------- registry entries
def _is_json_list(head: bytes) -> bool:
    return head[:1] == b"["


#: det_20 (``labels/det_20/det_{train,val}.json``). Chosen by ``auto`` for any JSON list; then the
#: reader accepts both layouts and tells them apart by category names.
BDD100K_FORMAT = LabelFormat(
    name="bdd100k",
    family="bdd100k",
    read=functools.partial(read_bdd100k, layout="bdd100k"),
    sniff=_is_json_list,
    read_detected=functools.partial(read_bdd100k, layout="auto"),
    read_predictions=read_bdd100k_predictions,
    box_convention="bdd100k",
    description="BDD100K det_20 frames (a JSON list)",
)

#: The 2018 ``bdd100k_labels_images_{train,val}.json``: same frames, 2018 names, polygons skipped.
BDD100K_2018_FORMAT = LabelFormat(
    name="bdd100k_2018",
    family="bdd100k",
    read=functools.partial(read_bdd100k, layout="bdd100k_2018"),
    sniff=None,  # a JSON list too: "auto" goes through BDD100K_FORMAT.read_detected
    read_predictions=read_bdd100k_predictions,
    box_convention="bdd100k",
    description="BDD100K 2018 frames (person/bike/motor names; drivable area and lane polygons skipped)",
)
