"""Label file + prediction file -> metrics report: what ``alod evaluate`` runs.

Reads the ground truth with :func:`alod.data.loading.load_index` (whose float64 boxes are the
file's own coordinates, so nothing is re-read), the predictions through the format's entry in the
label-format registry (:mod:`alod.data.readers`), and scores them with
:func:`alod.evaluation.evaluate_detections`, the same function the per-cycle evaluation calls: both
give the same numbers for the same predictions. No format is named here: a new format with a
prediction reader works without touching this file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

from alod.data.loading import load_index
from alod.data.readers import check_format_choice, label_format_for
from alod.evaluation import BOX_CONVENTIONS, METRICS_FORMAT, evaluate_detections
from alod.utils import AlodError, sha256_file


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
