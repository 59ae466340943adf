"""Ground truth + detections -> pycocotools COCOeval -> ``dict[str, float]``, matching the official
BDD100K detection evaluation (``scalabel==0.3.1`` ``scalabel.eval.detect.evaluate_det`` with
``bdd100k==1.0.1`` ``load_bdd100k_config("det")``) to 1e-4 on the same inputs.

What the official evaluation does, and how this module reproduces it (scalabel 0.3.1 sources):

* **Box convention** ``w = x2 - x1 + 1``, ``h = y2 - y1 + 1`` (``scalabel/label/transforms.py:46-50``,
  ``box2d_to_bbox``), for ground truth and predictions alike; the ``area`` is ``w * h``
  (``scalabel/label/to_coco.py:71-78``). ``box_convention="coco"`` uses plain ``x2 - x1``.
* **Ignored regions**: ``bdd100k/label/to_scalabel.py:14-45`` maps ``other person``,
  ``other vehicle``, ``trailer`` to ``pedestrian``, ``car``, ``truck`` with the attribute
  ``ignored``; ``to_coco.py:188`` writes them (and labels with attribute ``crowd``) as
  ``iscrowd=1``; pycocotools then ignores them (a detection on one is neither a true nor a false
  positive; IoU against a crowd region is intersection over the detection's area). Here the
  index's ``ignore`` flag becomes ``iscrowd=1`` (and ``ignore=1``) under its mapped class.
* **Names**: the det config's ``name_mapping`` (``person, bike, motor, caravan, van``) is applied
  to ground truth *and* predictions; a prediction named ``other vehicle`` becomes an ordinary
  ``car`` detection (``loadRes`` resets ``iscrowd`` of results to 0). An unknown name is an
  ``AssertionError`` there (``to_scalabel.py:35``); here :class:`~alod.utils.AlodError`.
* **Images**: ground-truth frames are sorted by name and numbered 1..N (``detect.py:313``,
  ``to_coco.py:153``); detections are scored in that image order, which decides tied scores in
  COCOeval's stable sort. Frames missing from the predictions count as frames with no detections
  (``scalabel/eval/utils.py:254-292``).
* **AP**: plain pycocotools ``evaluate``/``accumulate`` (``COCOevalV2`` only parallelises and
  silences it, ``detect.py:187-238``), iouThrs 0.50:0.05:0.95, 101 recall points, area ``all``,
  ``maxDets=100`` detections per image *and class*. ``AP`` (overall or per class) is the mean of
  the precision entries that are not -1 (``detect.py:240-277``), reported x100 (here: fractions).
* **Classes without ground truth** (not even an ignored region) have no valid precision entry:
  their AP is **NaN** (printed ``-``), and they do not enter the overall mean. A class with ground
  truth and no detection scores 0. Detections of a class without ground truth change nothing.
* **No detections at all**: ``DetResult.empty`` (``detect.py:65-86``): every class with any
  ground-truth annotation (ignored regions included) gets 0, the others NaN; overall 0 (NaN if
  there is no annotation at all).

Not reproduced: labels with a ``crowd`` attribute are crowd regions there, but the alod readers do
not read attributes; the index stores boxes as float32, so ground-truth coordinates differ from the
JSON doubles by ~1e-5 px (this only matters for an IoU within ~1e-7 of a threshold).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from alod.data.index import DetectionIndex
from alod.data.problems import load_json_file
from alod.utils import AlodError, sha256_file

BOX_CONVENTIONS = ("bdd100k", "coco")
METRICS_FORMAT = "alod.metrics/1"
FORMATS = ("auto", "bdd100k", "bdd100k_2018", "coco")


# ============================================================================ core
def evaluate_detections(
    gt: DetectionIndex,
    detections: list[dict],
    *,
    box_convention: str = "bdd100k",
    max_dets: int = 100,
    gt_boxes: np.ndarray | None = None,
) -> dict[str, float]:
    """COCO-style AP of ``detections`` against ``gt`` (pycocotools), as the official BDD100K eval.

    Args:
        gt: ground truth; ``gt.ignore`` boxes are crowd regions of their (mapped) class.
        detections: ``detections[i]`` belongs to image ``gt.names[i]``: a dict with numpy
            ``boxes float[N, 4]`` (x1, y1, x2, y2 pixels), ``labels int[N]`` in ``1..C`` and
            ``scores float[N]``; other keys (``probs``) are ignored. float32 or float64.
        box_convention: ``"bdd100k"``: width ``x2 - x1 + 1`` (the official BDD100K evaluation);
            ``"coco"``: ``x2 - x1``.
        max_dets: detections kept per image and class (highest scores first), as COCOeval.
        gt_boxes: optional ``float64[M, 4]`` coordinates of ``gt.boxes`` as written in the label
            file (see :func:`exact_gt_boxes`). The index stores float32, which moves an IoU by up
            to ~1e-6 and can flip a match at a threshold (seen on the 50 real frames: IoU
            0.8000012 vs 0.7999999); with the file's doubles the result equals the official one.

    Returns:
        Fractions in [0, 1]: ``mAP`` (IoU 0.50:0.95), ``mAP50``, ``mAP75``, and for every class
        ``AP50/<name>`` and ``AP/<name>``. A class with no ground truth in ``gt`` is ``NaN`` (the
        official evaluation prints it as ``-``) and is left out of the means.
    """
    if box_convention not in BOX_CONVENTIONS:
        raise ValueError(f"box_convention must be one of {BOX_CONVENTIONS}, got {box_convention!r}")
    if len(detections) != len(gt):
        raise ValueError(f"{len(detections)} detection entries for {len(gt)} ground-truth images; "
                         "detections[i] must belong to gt.names[i]")
    classes = gt.classes
    img_ids = _image_ids(gt)
    det_img, det_boxes, det_labels, det_scores = _stack_detections(detections, img_ids, len(classes), gt)

    if len(det_scores) == 0:
        return _empty_result(gt)

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    off = 1.0 if box_convention == "bdd100k" else 0.0
    images = [{"id": int(i)} for i in np.sort(img_ids)]
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(classes)]

    g_img = np.repeat(img_ids, np.diff(gt.offsets))
    if gt_boxes is not None and np.shape(gt_boxes) != gt.boxes.shape:
        raise ValueError(f"gt_boxes has shape {np.shape(gt_boxes)}, gt.boxes {gt.boxes.shape}")
    g_bbox, g_area = _xywh(gt.boxes if gt_boxes is None else gt_boxes, off)
    crowd = gt.ignore.astype(np.int64).tolist()
    gt_anns = [
        {"id": k, "image_id": im, "category_id": c, "bbox": b, "area": a, "iscrowd": cr, "ignore": cr}
        for k, (im, c, b, a, cr) in enumerate(
            zip(g_img.tolist(), gt.labels.tolist(), g_bbox, g_area, crowd), start=1
        )
    ]
    d_bbox, d_area = _xywh(det_boxes, off)
    # What COCO.loadRes makes of a bbox result list (ids from 1, area = w * h, iscrowd = 0), built
    # directly: loadRes would add a polygon per box that bbox evaluation never reads.
    dt_anns = [
        {"id": k, "image_id": im, "category_id": c, "bbox": b, "area": a, "score": s, "iscrowd": 0}
        for k, (im, c, b, a, s) in enumerate(
            zip(det_img.tolist(), det_labels.tolist(), d_bbox, d_area, det_scores.tolist()), start=1
        )
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        p = ev.params
        p.imgIds = [im["id"] for im in images]
        p.catIds = [c["id"] for c in categories]
        # Only area "all" is reported; the other ranges would cost 3x the time and change nothing
        # here (each area range is evaluated independently).
        p.areaRng = [[0.0, 1e5**2]]
        p.areaRngLbl = ["all"]
        p.maxDets = [int(max_dets)]
        ev.evaluate()
        ev.accumulate()

    precision = ev.eval["precision"][:, :, :, 0, 0]  # [T iou thresholds, R recalls, K classes]
    t50 = np.where(p.iouThrs == 0.5)[0]
    t75 = np.where(p.iouThrs == 0.75)[0]
    out = {
        "mAP": _mean_valid(precision),
        "mAP50": _mean_valid(precision[t50]),
        "mAP75": _mean_valid(precision[t75]),
    }
    for k, c in enumerate(classes):
        out[f"AP50/{c}"] = _mean_valid(precision[t50, :, k])
    for k, c in enumerate(classes):
        out[f"AP/{c}"] = _mean_valid(precision[:, :, k])
    return out


def _mean_valid(s: np.ndarray) -> float:
    """Mean of the entries COCOeval filled in (-1 marks "no ground truth"), NaN if none."""
    v = s[s > -1]
    return float(np.mean(v)) if v.size else math.nan


def _image_ids(gt: DetectionIndex) -> np.ndarray:
    """COCO image id of each image: 1 + its rank by name, as the official evaluation numbers them."""
    order = sorted(range(len(gt)), key=lambda i: str(gt.names[i]))
    ids = np.empty(len(gt), dtype=np.int64)
    ids[np.asarray(order, dtype=np.int64)] = np.arange(1, len(gt) + 1)
    return ids


def _xywh(boxes: np.ndarray, off: float) -> tuple[list, list]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0] + off
    h = b[:, 3] - b[:, 1] + off
    return np.stack([b[:, 0], b[:, 1], w, h], axis=1).tolist(), (w * h).tolist()


def _stack_detections(detections, img_ids, num_classes: int, gt: DetectionIndex):
    imgs, boxes, labels, scores = [], [], [], []
    for i, d in enumerate(detections):
        b = np.asarray(d["boxes"])
        lab = np.asarray(d["labels"])
        s = np.asarray(d["scores"])
        n = len(s)
        if b.reshape(-1, 4).shape[0] != n or lab.shape != (n,) or s.shape != (n,):
            raise ValueError(f"detections[{i}] ({gt.names[i]}): boxes must be [N, 4] and labels, scores [N] "
                             f"(got boxes {b.shape}, labels {lab.shape}, scores {s.shape})")
        if n and (lab.min() < 1 or lab.max() > num_classes):
            raise ValueError(f"detections[{i}] ({gt.names[i]}): labels must be in 1..{num_classes}, "
                             f"got {lab.min()}..{lab.max()}")
        boxes.append(b.reshape(-1, 4).astype(np.float64, copy=False))
        labels.append(lab.astype(np.int64, copy=False))
        scores.append(s.astype(np.float64, copy=False))
        imgs.append(np.full(n, img_ids[i], dtype=np.int64))
    if not scores:
        return (np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    return np.concatenate(imgs), np.concatenate(boxes), np.concatenate(labels), np.concatenate(scores)


def _empty_result(gt: DetectionIndex) -> dict[str, float]:
    """The official result when there is no detection at all (``DetResult.empty``)."""
    present = set(np.unique(gt.labels).tolist())  # ignored regions count here, as there
    overall = 0.0 if len(gt.labels) else math.nan
    out = {"mAP": overall, "mAP50": overall, "mAP75": overall}
    for prefix in ("AP50/", "AP/"):
        for k, c in enumerate(gt.classes):
            out[prefix + c] = 0.0 if (k + 1) in present else math.nan
    return out


# ============================================================================ exact ground truth
def exact_gt_boxes(labels: str | os.PathLike, gt: DetectionIndex) -> np.ndarray | None:
    """The label file's own (float64) coordinates of ``gt.boxes``, row for row, or ``None``.

    Re-reads ``labels`` (the file ``gt`` was loaded from with ``strict=True``) and collects every
    box the readers keep, in their order. The result is only returned if it lines up with the
    index exactly (same count, ``astype(float32)`` equal to ``gt.boxes``); otherwise ``None``, and
    the caller evaluates with the float32 boxes.

    Returns:
        ``float64[M, 4]`` x1, y1, x2, y2 pixels (COCO: ``x, y, x + w, y + h``) or ``None``.
    """
    from alod.data.bdd100k import BDD100K_CLASSES, IGNORE_MAPPING, NAME_MAPPING, iter_json_array
    from alod.data.loading import detect_format

    file = os.fspath(labels)
    slot_of = gt.name_to_index()
    per_slot: list[list | None] = [None] * len(gt)
    num = (int, float)
    try:
        if detect_format(file) == "coco":
            data = load_json_file(file)
            slot_of_id = {}
            for im in data["images"]:
                if type(im) is dict and im.get("file_name") in slot_of and im.get("id") not in slot_of_id:
                    slot_of_id[im["id"]] = slot_of[im["file_name"]]
            per_slot = [[] for _ in range(len(gt))]
            for a in data["annotations"]:
                slot = slot_of_id.get(a.get("image_id")) if type(a) is dict else None
                bb = a.get("bbox") if slot is not None else None
                if type(bb) is list and len(bb) == 4 and all(isinstance(v, num) for v in bb):
                    x, y, w, h = bb
                    per_slot[slot].append((x, y, x + w, y + h))
        else:
            vocab = set(BDD100K_CLASSES) | set(NAME_MAPPING) | set(IGNORE_MAPPING)
            for frame in iter_json_array(file):
                slot = slot_of.get(frame.get("name")) if type(frame) is dict else None
                if slot is None or per_slot[slot] is not None:
                    continue
                rows = per_slot[slot] = []
                for lab in frame.get("labels") or ():
                    b = lab.get("box2d") if type(lab) is dict and lab.get("category") in vocab else None
                    if type(b) is dict:
                        xs = [b.get(k) for k in ("x1", "y1", "x2", "y2")]
                        if all(isinstance(v, num) for v in xs):
                            rows.append(xs)
    except (AlodError, OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if any(r is None for r in per_slot):
        return None
    rows = [r for part in per_slot for r in part]
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if boxes.shape != gt.boxes.shape or not np.array_equal(boxes.astype(np.float32), gt.boxes):
        return None
    return boxes


# ============================================================================ prediction files
def read_bdd100k_predictions(path: str | os.PathLike, gt: DetectionIndex) -> tuple[list[dict], dict]:
    """Detections from a BDD100K/Scalabel prediction file, aligned with ``gt``.

    The file is a JSON list of frames ``{"name", "labels": [{"category", "box2d": {x1, y1, x2, y2},
    "score"}]}``; det_20 names, the 2018 names (``person``, ``bike``, ``motor``) and the det
    config's other aliases are mapped as the official evaluation maps them. Frames of ``gt``
    missing from the file get no detections.

    Returns:
        ``(detections, counts)``: ``detections[i]`` for ``gt.names[i]`` with ``boxes float64[N, 4]``,
        ``labels int64[N]``, ``scores float64[N]``; ``counts`` with ``frames``, ``detections`` and
        ``missing_frames``.

    Raises:
        AlodError: malformed JSON (file, line, column), a frame name not in ``gt``, a repeated
            frame, an unknown category, a label without a numeric ``score`` or ``box2d``.
    """
    from alod.data.bdd100k import BDD100K_CLASSES, IGNORE_MAPPING, NAME_MAPPING, iter_json_array

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
        labels = frame.get("labels")
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
                known = ", ".join(list(gt.classes) + list(NAME_MAPPING) + list(IGNORE_MAPPING))
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
        per_image[slot] = rows
        n_dets += len(rows)
    missing = sum(r is None for r in per_image)
    return [_rows_to_det(r) for r in per_image], {"frames": n_frames, "detections": n_dets, "missing_frames": missing}


def read_coco_predictions(
    path: str | os.PathLike, gt: DetectionIndex, *, gt_json: dict
) -> tuple[list[dict], dict]:
    """Detections from a COCO results list ``[{image_id, category_id, bbox: [x, y, w, h], score}]``.

    Args:
        gt_json: the parsed COCO instances file ``gt`` was read from (for its image ids and
            category ids; labels follow :func:`alod.data.coco.coco_label_map`).

    Returns and raises as :func:`read_bdd100k_predictions`; boxes become ``x, y, x + w, y + h``
    (the reader's conversion of the ground truth).
    """
    from alod.data.coco import coco_label_map

    file = os.fspath(path)
    data = load_json_file(file)
    if type(data) is not list:
        raise AlodError(f"{file}: COCO predictions must be a JSON list of results "
                        "[{image_id, category_id, bbox, score}] (the ground truth is COCO)")
    label_of = coco_label_map(gt_json["categories"])
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
    return [_rows_to_det(r) for r in per_image], {"frames": None, "detections": len(data), "missing_frames": missing}


def _rows_to_det(rows) -> dict:
    if not rows:
        return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}
    a = np.asarray(rows, dtype=np.float64)
    return {"boxes": a[:, :4], "labels": a[:, 5].astype(np.int64), "scores": a[:, 4]}


# ============================================================================ files -> report
def evaluate_files(
    *,
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    fmt: str = "auto",
    box_convention: str | None = None,
    max_dets: int = 100,
    log: Callable[[str], object] = print,
) -> dict:
    """Evaluate a prediction file against a label file (what ``alod evaluate`` runs).

    Args:
        gt: BDD100K det_20 / 2018 labels (a JSON list of frames) or a COCO instances JSON.
        pred: BDD100K frames with a ``score`` per label, or a COCO results list (the same family as
            ``gt``).
        fmt: ``"auto"`` (from the JSON shape of ``gt``), ``"bdd100k"``, ``"bdd100k_2018"``, ``"coco"``.
        box_convention: ``"bdd100k"`` (``w = x2 - x1 + 1``) or ``"coco"``; ``None``: ``"bdd100k"``
            for BDD100K files, ``"coco"`` for COCO files.
        log: receives the reader's one-line messages.

    Returns:
        The metrics of :func:`evaluate_detections` (flat, fractions; NaN for classes without ground
        truth) plus ``format``, ``inputs`` (paths and sha256), ``data_format``, ``box_convention``,
        ``max_dets``, ``classes`` and ``counts``.
    """
    from alod.data.loading import detect_format, load_index

    if fmt not in FORMATS:
        raise AlodError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    for role, p in (("ground-truth", gt), ("prediction", pred)):
        if not Path(p).is_file():
            raise AlodError(f"{role} file {p} does not exist")
    family = detect_format(gt) if fmt == "auto" else ("coco" if fmt == "coco" else "bdd100k")
    if box_convention is None:
        box_convention = "coco" if family == "coco" else "bdd100k"
    if box_convention not in BOX_CONVENTIONS:
        raise AlodError(f"unknown box convention {box_convention!r}; choose one of {', '.join(BOX_CONVENTIONS)}")

    index = load_index(labels=gt, image_root=None, fmt=fmt, strict=True, log=log)
    if family == "coco":
        dets, pcounts = read_coco_predictions(pred, index, gt_json=load_json_file(os.fspath(gt)))
    else:
        dets, pcounts = read_bdd100k_predictions(pred, index)
    exact = exact_gt_boxes(gt, index)
    if exact is None:
        log(f"warning: could not re-read the exact coordinates of {gt}; evaluating with the index's float32 "
            "boxes (an IoU within ~1e-6 of a threshold may then differ from the official evaluation)")
    metrics = evaluate_detections(index, dets, box_convention=box_convention, max_dets=max_dets, gt_boxes=exact)
    report = dict(metrics)
    report.update({
        "format": METRICS_FORMAT,
        "inputs": {
            "gt": {"path": os.path.abspath(gt), "sha256": sha256_file(gt)},
            "pred": {"path": os.path.abspath(pred), "sha256": sha256_file(pred)},
        },
        "data_format": family,
        "box_convention": box_convention,
        "max_dets": int(max_dets),
        "exact_gt_coordinates": exact is not None,
        "classes": list(index.classes),
        "counts": {
            "images": len(index),
            "gt_boxes": int((~index.ignore).sum()),
            "ignored_regions": int(index.ignore.sum()),
            "gt_per_class": index.class_counts(),
            "detections": int(pcounts["detections"]),
            "images_without_predictions": int(pcounts["missing_frames"]),
        },
    })
    return report


def format_table(metrics: dict, classes, gt_counts: dict | None = None) -> str:
    """A short per-class table (AP50 and AP in percent; ``-`` for classes without ground truth)."""
    def pct(v):
        return "    -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"

    width = max([len("class"), len("overall")] + [len(c) for c in classes])
    lines = [f"{'class':<{width}}  {'#gt':>6}  {'AP50':>5}  {'AP':>5}"]
    for c in classes:
        n = "" if gt_counts is None else str(gt_counts.get(c, 0))
        lines.append(f"{c:<{width}}  {n:>6}  {pct(metrics.get('AP50/' + c))}  {pct(metrics.get('AP/' + c))}")
    total = "" if gt_counts is None else str(sum(gt_counts.values()))
    lines.append(f"{'overall':<{width}}  {total:>6}  {pct(metrics.get('mAP50'))}  {pct(metrics.get('mAP'))}")
    return "\n".join(lines)


def json_safe(obj):
    """``obj`` with every NaN float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
