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

Ground-truth coordinates are the label file's doubles (the index stores float64), so an IoU that
sits on a threshold is decided as the official evaluation decides it; with float32 boxes one real
frame's IoU came out 0.7999999 instead of 0.8000012, which moved a rare class's AP by ~1e-3.

Not reproduced: labels with a ``crowd`` attribute are crowd regions there, but the alod readers do
not read attributes; boxes that stick out of the image by a little are clipped by the readers (a
``box_clipped`` note), while the official evaluation would use them as written (the real BDD100K
frames have none).

:func:`evaluate_detections` is the metric core and depends on the index only.
:func:`evaluate_files` is what ``alod evaluate`` runs: it reads the ground truth with
:func:`alod.data.loading.load_index` (whose float64 boxes are the file's own coordinates, so nothing
is re-read) and the predictions through the format's entry in the label-format registry
(:mod:`alod.data.readers`), then calls the same :func:`evaluate_detections` as the per-cycle
evaluation: both give the same numbers for the same predictions. No format is named here: a new
format with a prediction reader works without touching this file.
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
from alod.data.loading import load_index
from alod.data.readers import check_format_choice, label_format_for
from alod.utils import AlodError, sha256_file

BOX_CONVENTIONS = ("bdd100k", "coco")
#: ``format`` of the report :func:`evaluate_files` writes.
METRICS_FORMAT = "alod.metrics/1"


# ============================================================================ core
def evaluate_detections(
    gt: DetectionIndex,
    detections: list[dict],
    *,
    box_convention: str = "bdd100k",
    max_dets: int = 100,
) -> dict[str, float]:
    """COCO-style AP of ``detections`` against ``gt`` (pycocotools), as the official BDD100K eval.

    Args:
        gt: ground truth (``boxes float64[M, 4]``, the file's coordinates); ``gt.ignore`` boxes
            are crowd regions of their (mapped) class.
        detections: ``detections[i]`` belongs to image ``gt.names[i]``: a dict with numpy
            ``boxes float[N, 4]`` (x1, y1, x2, y2 pixels), ``labels int[N]`` in ``1..C`` and
            ``scores float[N]``; other keys (``probs``) are ignored. float32 or float64.
        box_convention: ``"bdd100k"``: width ``x2 - x1 + 1`` (the official BDD100K evaluation);
            ``"coco"``: ``x2 - x1``.
        max_dets: detections kept per image and class (highest scores first), as COCOeval.

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

    off = 1.0 if box_convention == "bdd100k" else 0.0
    images = [{"id": int(i)} for i in np.sort(img_ids)]
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(classes)]
    gt_anns = _gt_annotations(gt, img_ids, off)
    d_bbox, d_area = _xywh(det_boxes, off)
    # What COCO.loadRes makes of a bbox result list (ids from 1, area = w * h, iscrowd = 0), built
    # directly: loadRes would add a polygon per box that bbox evaluation never reads.
    dt_anns = [
        {"id": k, "image_id": im, "category_id": c, "bbox": b, "area": a, "score": s, "iscrowd": 0}
        for k, (im, c, b, a, s) in enumerate(
            zip(det_img.tolist(), det_labels.tolist(), d_bbox, d_area, det_scores.tolist()), start=1
        )
    ]
    precision, iou_thrs = _coco_precision(images, categories, gt_anns, dt_anns, max_dets=max_dets)
    return _metrics(precision, iou_thrs, classes)


def _gt_annotations(gt: DetectionIndex, img_ids: np.ndarray, off: float) -> list[dict]:
    """COCO annotations of ``gt`` (ids from 1; ignored boxes as crowd regions of their class)."""
    g_img = np.repeat(img_ids, np.diff(gt.offsets))
    g_bbox, g_area = _xywh(gt.boxes, off)
    crowd = gt.ignore.astype(np.int64).tolist()
    return [
        {"id": k, "image_id": im, "category_id": c, "bbox": b, "area": a, "iscrowd": cr, "ignore": cr}
        for k, (im, c, b, a, cr) in enumerate(
            zip(g_img.tolist(), gt.labels.tolist(), g_bbox, g_area, crowd), start=1
        )
    ]


def _coco_precision(images: list[dict], categories: list[dict], gt_anns: list[dict], dt_anns: list[dict], *,
                    max_dets: int) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval (bbox, area ``all``) of ``dt_anns`` against ``gt_anns``: ``(precision float[T, R, K],
    iou_thresholds float[T])`` (``T`` IoU thresholds, ``R`` recall points, ``K`` classes; -1 where a
    class has no ground truth)."""
    from pycocotools.coco import COCO  # why: a 0.6 s import, paid only when evaluating (not by alod --help)
    from pycocotools.cocoeval import COCOeval  # why: as above

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
    return ev.eval["precision"][:, :, :, 0, 0], p.iouThrs


def _metrics(precision: np.ndarray, iou_thrs: np.ndarray, classes) -> dict[str, float]:
    """``mAP``, ``mAP50``, ``mAP75`` and per class ``AP50/<name>`` and ``AP/<name>`` from COCOeval's
    ``precision float[T, R, K]``."""
    t50 = np.where(iou_thrs == 0.5)[0]
    t75 = np.where(iou_thrs == 0.75)[0]
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


def json_safe(obj):
    """``obj`` with every NaN float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# ============================================================================ files
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
        fmt: ``"auto"`` (from the file head of ``gt``) or a name in
            :data:`alod.data.readers.LABEL_FORMATS` (``"bdd100k"``, ``"bdd100k_2018"``, ``"coco"``).
        box_convention: ``"bdd100k"`` (``w = x2 - x1 + 1``) or ``"coco"``; ``None``: the format's
            default (``"bdd100k"`` for BDD100K files, ``"coco"`` for COCO files).
        max_dets: detections kept per image and class.
        log: receives the reader's one-line messages.

    Returns:
        The metrics of :func:`alod.evaluation.evaluate_detections` (flat, fractions; NaN for classes
        without ground truth) plus ``format``, ``inputs`` (paths and sha256), ``data_format`` (the
        format's family), ``box_convention``, ``max_dets``, ``classes`` and ``counts``.

    Raises:
        AlodError: an unknown format or box convention, a missing file, bad ground truth (see
            ``load_index``) or a bad prediction file (file, record and what is wrong).
    """
    check_format_choice(fmt)
    # The ground truth may be a folder for formats that read one (VOC); predictions are one file.
    for role, p, there in (("ground-truth", gt, Path(gt).exists()), ("prediction", pred, Path(pred).is_file())):
        if not there:
            raise AlodError(f"{role} file {p} does not exist")
    entry = label_format_for(gt, fmt)
    if box_convention is None:
        box_convention = entry.box_convention
    if box_convention not in BOX_CONVENTIONS:
        raise AlodError(f"unknown box convention {box_convention!r}; choose one of {', '.join(BOX_CONVENTIONS)}")
    if entry.read_predictions is None:
        raise AlodError(f"label format {entry.name!r} has no prediction reader, so alod evaluate cannot "
                        "read predictions for it; see 'Adding a label format' in alod/data/readers.py")

    index = load_index(labels=gt, image_root=None, fmt=fmt, strict=True, log=log)
    dets, pcounts = entry.read_predictions(pred, index, gt_path=gt)
    metrics = evaluate_detections(index, dets, box_convention=box_convention, max_dets=max_dets)
    report = dict(metrics)
    report.update({
        "format": METRICS_FORMAT,
        "inputs": {
            "gt": {"path": os.path.abspath(gt), "sha256": sha256_file(gt)},
            "pred": {"path": os.path.abspath(pred), "sha256": sha256_file(pred)},
        },
        "data_format": entry.family,
        "box_convention": box_convention,
        "max_dets": int(max_dets),
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
