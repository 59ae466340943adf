"""COCO instances JSON -> :class:`DetectionIndex`.

* Categories become contiguous labels ``1..C`` in ascending category-id order (COCO's 80 ids run
  1..90 with gaps); :func:`coco_label_map` gives ``{category_id: label}`` so evaluation can write
  results back with the original ids.
* ``bbox = [x, y, w, h]`` becomes ``x1, y1, x2, y2 = x, y, x + w, y + h``.
* ``iscrowd = 1`` becomes ``ignore = True`` (a crowd region in evaluation, never a training target).
* Images keep the order of ``images``; images without annotations are kept with zero boxes; sizes
  come from the image records; names are ``file_name``, checked with
  :func:`alod.data.problems.image_name_problem` (``image_outside_root``).
* Boxes are checked against their image record's ``width`` and ``height``
  (:func:`alod.data.common.check_box`: a little outside is clipped and noted, farther out is a
  ``box_outside_image`` problem) and stored as float64 (``x + w`` computed in float64).

Bad records go to a :class:`~alod.data.problems.ProblemLog` (see :mod:`alod.data.problems`). A broken
``categories`` list is fatal whatever ``strict`` says: without it no label means anything.

For ``alod evaluate`` the module also reads COCO results lists (:func:`read_coco_predictions`).
:data:`COCO_FORMAT` is
this format's entry in the registry :data:`alod.data.readers.LABEL_FORMATS`.
"""
from __future__ import annotations

import math
import os
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
    INVERTED_BOX,
    MISSING_NAME,
    NON_FINITE,
    UNKNOWN_CATEGORY,
    UNKNOWN_IMAGE_ID,
    LabelFileError,
    ProblemLog,
    image_name_problem,
    load_json_file,
    note_zero_area_boxes,
)
from alod.utils import AlodError


def coco_label_map(categories: Sequence[Mapping], *, file: str | os.PathLike | None = None) -> dict[int, int]:
    """``{coco_category_id: label}`` with labels ``1..C`` in ascending category-id order.

    Args:
        categories: the ``categories`` list of a COCO file (``[{"id": int, "name": str}, ...]``).
        file: the file they come from, named in error messages.

    Raises:
        LabelFileError: a category without an integer id or a name, or a repeated id.
    """
    where = f"{os.fspath(file)}: " if file is not None else ""
    ids = []
    for k, c in enumerate(categories):
        if not isinstance(c, Mapping) or type(c.get("id")) is not int or not isinstance(c.get("name"), str):
            raise LabelFileError(
                f"{where}categories[{k}] must be an object with an integer 'id' and a string 'name' "
                f"(got {short_json(c)}); fix the categories list of the label file"
            )
        ids.append(c["id"])
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise LabelFileError(f"{where}category ids {dup} appear more than once in 'categories'; make them unique")
    return {cid: k + 1 for k, cid in enumerate(sorted(ids))}


def coco_classes(categories: Sequence[Mapping]) -> tuple[str, ...]:
    """Class names in label order (``classes[label - 1]``), i.e. sorted by category id."""
    by_id = {c["id"]: c["name"] for c in categories}
    return tuple(by_id[i] for i in sorted(by_id))


def read_coco_label_map(path: str | os.PathLike) -> dict[int, int]:
    """:func:`coco_label_map` of a COCO label file (for evaluation: ``label -> category_id``
    is its inverse)."""
    return coco_label_map(_check_top_level(path, load_json_file(path))["categories"], file=path)


def read_coco(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike = "",
    problems: ProblemLog | None = None,
) -> ParsedLabels:
    """Parse a COCO instances file: its images (:func:`_coco_frames`), its annotations
    (:func:`_coco_boxes`), then the index (:func:`_coco_index`).

    Args:
        path: e.g. ``instances_val2017.json``.
        image_root: stored in the index; images are not checked here (see ``load_index``).
        problems: where bad records go; default ``ProblemLog(strict=True)`` (raise on the first).

    Returns:
        :class:`ParsedLabels` (``layout="coco"``) whose index has boxes ``float64[M, 4]`` x1, y1,
        x2, y2 pixels (clipped to the image where they stick out a little), labels in ``1..C``
        per :func:`coco_label_map`, ``ignore = iscrowd``.
        ``frame_index`` holds positions in ``images``.
    """
    problems = ProblemLog(strict=True) if problems is None else problems
    file = os.fspath(path)
    data = _check_top_level(path, load_json_file(path))
    categories = data["categories"]
    label_of = coco_label_map(categories, file=file)
    problem = problem_reporter(problems, file)
    frames = _coco_frames(data["images"], problem)
    boxes = _coco_boxes(data["annotations"], frames, label_of, problem)
    index, order = _coco_index(frames, boxes, classes=coco_classes(categories), image_root=image_root, file=file)
    note_zero_area_boxes(index, frame_index=frames.frame_index, label_pos=array_to_numpy(boxes.ann_pos, np.int64)[order],
                         label_ids=[boxes.ann_ids[i] for i in order.tolist()] if len(order) else [],
                         problems=problems, file=file)
    return ParsedLabels(index=index, frame_index=frames.frame_index, num_frames=len(data["images"]), layout="coco")


@dataclass
class _Frames:
    """The image records that make usable frames, in file order."""

    names: list[str]
    widths: array  # of int
    heights: array  # of int
    frame_index: np.ndarray  # int64[n]: position of each frame in ``images``
    slot_of: dict  # image id -> position in the index
    skipped_ids: set  # ids of image records dropped (their annotations go with them)


@dataclass
class _Boxes:
    """The annotations kept, in file order: image slot, corners, label, crowd flag, position, id."""

    slots: array
    coords: array  # of float, 4 per box: x1, y1, x2, y2
    labels: array
    crowd: array
    ann_pos: array
    ann_ids: list


def _coco_frames(images: list, problem) -> _Frames:
    """Check every image record; the usable ones become frames (others reported to ``problem``)."""
    names: list[str] = []
    widths, heights, frame_pos = array("l"), array("l"), array("q")
    slot_of: dict = {}
    skipped_ids: set = set()
    seen_names: set[str] = set()
    for fi, im in enumerate(images):
        if type(im) is not dict:
            problem(BAD_RECORD, fi, None, None, None,
                    f"image record is a JSON {json_type_name(im)}, not an object", "frame")
            continue
        iid = im.get("id")
        name = im.get("file_name")
        name = name if isinstance(name, str) and name else None
        if type(iid) not in (int, str):
            problem(BAD_RECORD, fi, name, None, None,
                    f"image record has no integer or string 'id' (id={short_json(iid)})", "frame")
            continue
        if iid in slot_of or iid in skipped_ids:
            problem(BAD_RECORD, fi, name, None, None,
                    f"image id {iid!r} appears again; its annotations stay with the first record", "frame")
            continue
        bad = _image_problem(im, iid, name, seen_names)
        if bad is not None:
            skipped_ids.add(iid)
            problem(bad[0], fi, bad[1], None, None, bad[2], "frame")
            continue
        slot_of[iid] = len(names)
        seen_names.add(name)
        names.append(name)
        widths.append(int(im["width"]))
        heights.append(int(im["height"]))
        frame_pos.append(fi)
    return _Frames(names, widths, heights, array_to_numpy(frame_pos, np.int64), slot_of, skipped_ids)


def _image_problem(im: dict, iid, name: str | None, seen_names: set) -> tuple | None:
    """``(kind, name, detail)`` when an image record with a usable id cannot be a frame, else ``None``."""
    if name is None:
        return MISSING_NAME, None, f"image id {iid!r} has no file_name (file_name={short_json(im.get('file_name'))})"
    outside = image_name_problem(name)
    if outside is not None:
        return IMAGE_OUTSIDE_ROOT, name, f"file_name: {outside}"
    if name in seen_names:
        return DUPLICATE_NAME, name, f"file_name {name!r} appears again (image id {iid!r})"
    w, h = im.get("width"), im.get("height")
    if not (_positive_int(w) and _positive_int(h)):
        return (BAD_RECORD, name, f"image needs integer width and height in 1..{MAX_SIDE} "
                                  f"(width={short_json(w)}, height={short_json(h)})")
    return None


def _coco_boxes(annotations: list, frames: _Frames, label_of: dict, problem) -> _Boxes:
    """Every annotation of a kept frame: a fast path for good boxes, :func:`_classify_annotation`
    for the rest (reported; a box that sticks out a little is clipped, with a note)."""
    out = _Boxes(array("q"), array("d"), array("q"), array("B"), array("q"), [])
    slot_of, widths, heights = frames.slot_of, frames.widths, frames.heights
    for k, a in enumerate(annotations):
        try:
            iid = a["image_id"]
            cid = a["category_id"]
            slot = slot_of[iid]
            label = label_of[cid]
            x, y, w, h = a["bbox"]
            x2 = x + w
            y2 = y + h
            # Chained comparisons reject NaN, infinities, negative sizes and boxes outside the
            # image in one go; odd types raise and go to the slow path, which says what is wrong.
            # A bool is a number (and equals 1) to Python, not to JSON.
            ok = (0.0 <= x <= x2 <= widths[slot] and 0.0 <= y <= y2 <= heights[slot]
                  and type(x) is not bool and type(y) is not bool and type(w) is not bool
                  and type(h) is not bool and type(iid) is not bool and type(cid) is not bool)
        except (KeyError, TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            box = _slow_path(k, a, frames, label_of, problem)
            if box is None:
                continue
            slot = slot_of[a["image_id"]]
            label = label_of[a["category_id"]]
            x, y, x2, y2 = box
        out.slots.append(slot)
        out.coords.extend((x, y, x2, y2))
        out.labels.append(label)
        out.crowd.append(1 if a.get("iscrowd") else 0)
        out.ann_pos.append(k)
        out.ann_ids.append(a.get("id"))
    return out


def _slow_path(k: int, a, frames: _Frames, label_of: dict, problem) -> tuple | None:
    """The corners of annotation ``k`` the fast path rejected (a good or clipped box: never
    dropped), or ``None`` when it is dropped (reported, or it belongs to a skipped image)."""
    bad = _classify_annotation(a, frames.slot_of, frames.skipped_ids, label_of, frames.widths, frames.heights)
    if bad is None:  # belongs to a skipped image: reported with that image
        return None
    kind, detail, box = bad
    if kind is not None:
        iid = a.get("image_id") if type(a) is dict else None
        slot = frames.slot_of.get(iid) if _hashable(iid) and type(iid) is not bool else None
        fi = None if slot is None else int(frames.frame_index[slot])
        nm = None if slot is None else frames.names[slot]
        problem(kind, fi, nm, k, a.get("id") if type(a) is dict else None, detail, "box")
    return box


def _coco_index(frames: _Frames, boxes: _Boxes, *, classes: tuple[str, ...], image_root, file: str):
    """``(index, order)``: the :class:`DetectionIndex` with boxes grouped by image (annotation order
    kept within an image: a stable sort), and that sort's order over the kept annotations."""
    names = frames.names
    slot_arr = array_to_numpy(boxes.slots, np.int64)
    order = np.argsort(slot_arr, kind="stable")
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(np.bincount(slot_arr, minlength=len(names)), out=offsets[1:])
    index = DetectionIndex(
        image_root=os.fspath(image_root),
        names=np.asarray(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
        widths=array_to_numpy(frames.widths, np.int64).astype(np.int32),
        heights=array_to_numpy(frames.heights, np.int64).astype(np.int32),
        offsets=offsets,
        boxes=array_to_numpy(boxes.coords, np.float64).reshape(-1, 4)[order],
        labels=array_to_numpy(boxes.labels, np.int64)[order],
        ignore=array_to_numpy(boxes.crowd, np.uint8)[order].astype(bool),
        classes=classes,
        source=file,
    )
    return index, order


def _classify_annotation(a, slot_of, skipped_ids, label_of, widths, heights):
    """Say what is wrong with an annotation the fast path rejected.

    Returns ``None`` (its image was skipped: reported there), or ``(kind, detail, box)``:
    ``kind`` an error kind (``box`` is ``None``), ``box_clipped`` (a note; ``box`` is the clipped
    ``(x1, y1, x2, y2)`` to keep), or ``None`` (nothing wrong after all; ``box`` as the file has it).
    """
    if type(a) is not dict:
        return BAD_RECORD, f"annotation is a JSON {json_type_name(a)}, not an object", None
    iid = a.get("image_id")
    if type(iid) is bool or not _hashable(iid) or iid not in slot_of:
        if type(iid) is not bool and _hashable(iid) and iid in skipped_ids:
            return None
        return UNKNOWN_IMAGE_ID, f"image_id {short_json(iid)} is not in 'images'", None
    cid = a.get("category_id")
    if type(cid) is bool or not _hashable(cid) or cid not in label_of:
        return UNKNOWN_CATEGORY, f"category_id {short_json(cid)} is not in 'categories'", None
    bbox = a.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        return BAD_COORDINATES, f"bbox must be [x, y, w, h] numbers (got {short_json(bbox)})", None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except OverflowError:  # an integer beyond float64
        return NON_FINITE, f"bbox has a value too large for a float ({short_json(bbox)})", None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return NON_FINITE, f"bbox has a value that is NaN or infinite ({short_json(bbox)})", None
    if w < 0 or h < 0:
        return INVERTED_BOX, f"bbox has a negative width or height ({short_json(bbox)})", None
    slot = slot_of[iid]
    kind, detail, box = check_box(x, y, x + w, y + h, int(widths[slot]), int(heights[slot]))
    return kind, f"bbox {short_json(bbox)}: {detail}" if kind else "", box


def _hashable(v) -> bool:
    return isinstance(v, (int, str, float, type(None)))


#: Largest image side accepted from an image record (the index stores sizes as int32).
MAX_SIDE = 2**31 - 1


def _positive_int(v) -> bool:
    return ((type(v) is int and 0 < v <= MAX_SIDE)
            or (type(v) is float and v.is_integer() and 0 < v <= MAX_SIDE))


def _check_top_level(path, data) -> dict:
    """A COCO file is an object with ``images``, ``annotations`` and ``categories`` lists."""
    if type(data) is not dict:
        hint = " (a list of frames: is it a BDD100K file? use fmt='bdd100k')" if type(data) is list else ""
        raise LabelFileError(
            f"{os.fspath(path)}: the top level is a JSON {json_type_name(data)}, not a COCO object{hint}"
        )
    missing = [k for k in ("images", "annotations", "categories") if type(data.get(k)) is not list]
    if missing:
        raise LabelFileError(
            f"{os.fspath(path)}: a COCO instances file needs the lists {', '.join(missing)} "
            f"(found keys: {', '.join(sorted(data)) or 'none'}); is it a COCO results or captions file?"
        )
    return data


# ----------------------------------------------------------------------------- evaluation inputs
def read_coco_predictions(
    path: str | os.PathLike,
    gt: DetectionIndex,
    *,
    gt_path: str | os.PathLike | None = None,
    gt_json: dict | None = None,
) -> tuple[list[dict], dict]:
    """Detections from a COCO results list ``[{image_id, category_id, bbox: [x, y, w, h], score}]``.

    Args:
        path: the results file.
        gt: the ground truth read from the COCO instances file ``gt_path``.
        gt_path: that instances file (read again for its image ids and category ids; labels follow
            :func:`coco_label_map`). Not needed when ``gt_json`` is given.
        gt_json: the parsed instances file, if the caller has it already.

    Returns:
        As :func:`alod.data.bdd100k.read_bdd100k_predictions` (``counts["frames"]`` is ``None``:
        a results list has no frames); boxes become ``x, y, x + w, y + h`` px (the reader's
        conversion of the ground truth).

    Raises:
        AlodError: malformed JSON, not a list, an image id or category id not in the ground truth,
            a result without a finite numeric ``score`` or ``bbox``.
    """
    if gt_json is None:
        if gt_path is None:
            raise ValueError("read_coco_predictions needs gt_path or gt_json")
        gt_json = load_json_file(os.fspath(gt_path))
    file = os.fspath(path)
    data = load_json_file(file)
    if type(data) is not list:
        raise AlodError(f"{file}: COCO predictions must be a JSON list of results "
                        "[{image_id, category_id, bbox, score}] (the ground truth is COCO)")
    label_of = coco_label_map(gt_json["categories"], file=gt_path)
    slot_of_name = gt.name_to_index()
    slot_of = {}
    for im in gt_json["images"]:
        if type(im) is dict and im.get("file_name") in slot_of_name and im.get("id") not in slot_of:
            slot_of[im.get("id")] = slot_of_name[im["file_name"]]
    per_image: list[list] = [[] for _ in range(len(gt))]
    for k, r in enumerate(data):
        where = f"{file}: result {k}"
        if type(r) is not dict:
            raise AlodError(f"{where}: a result must be an object {{image_id, category_id, bbox, score}}")
        if "name" in r and "image_id" not in r:
            raise AlodError(f"{where} looks like a BDD100K frame but the ground truth is COCO; "
                            "give predictions as a COCO results list")
        iid = r.get("image_id")
        slot = slot_of.get(iid) if isinstance(iid, (int, str)) else None
        if slot is None:
            raise AlodError(f"{where}: image_id {iid!r} is not an image of the ground truth {gt.source}")
        cid = r.get("category_id")
        label = label_of.get(cid) if type(cid) is int else None
        if label is None:
            raise AlodError(f"{where}: unknown category_id {cid!r} (not in the ground truth's categories)")
        score = r.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise AlodError(f"{where}: a prediction needs a finite numeric 'score' (got {score!r})")
        bb = r.get("bbox")
        if (type(bb) is not list or len(bb) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bb)):
            raise AlodError(f"{where}: bbox must be [x, y, w, h] finite numbers (got {bb!r})")
        x, y, w, h = bb
        per_image[slot].append((x, y, x + w, y + h, float(score), label))
    missing = sum(not r for r in per_image)
    counts = {"frames": None, "detections": len(data), "missing_frames": missing}
    return [rows_to_detections(r) for r in per_image], counts


# ----------------------------------------------------------------------------- registry entry
def _is_json_object(head: bytes) -> bool:
    return head[:1] == b"{"


def _read_coco_entry(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike = "",
    image_size: tuple[int, int] | None = None,
    problems: ProblemLog | None = None,
) -> ParsedLabels:
    """:func:`read_coco` with the registry's reader signature (``image_size`` is ignored: COCO
    image records carry their sizes)."""
    return read_coco(path, image_root=image_root, problems=problems)


#: COCO instances JSON (``instances_*.json``). Chosen by ``auto`` for a JSON object.
COCO_FORMAT = LabelFormat(
    name="coco",
    family="coco",
    read=_read_coco_entry,
    sniff=_is_json_object,
    read_predictions=read_coco_predictions,
    box_convention="coco",
    description="COCO instances JSON (a JSON object with images, annotations, categories)",
)
