"""What an annotator does to a selected image, and how much two models agree: pure NumPy.

**Annotator actions** (:func:`annotator_actions`). The detector's boxes with a score of at least
``accept`` stand as pre-annotations; the annotator turns them into the ground truth. Matching is
greedy in descending score, as COCO evaluation matches: each accepted box takes the still
unmatched ground-truth box it overlaps most.

* ``kept``: matched at IoU >= ``match_iou`` with the right class and IoU >= ``tight_iou``: no action;
* ``fix``: matched at IoU >= ``match_iou`` but the class is wrong or the overlap is below
  ``tight_iou``: one action (relabel or adjust);
* ``delete``: matched to no ground-truth box: one action;
* ``draw``: a ground-truth box no accepted box matched: one action (drawing from scratch);
* accepted boxes lying on an ignored region (intersection over the box's own area >= 0.5, as crowd
  regions are treated in evaluation) cost nothing and are not counted.

``actions = draw + fix + delete``; labeling the image without pre-annotations costs ``boxes``
(every ground-truth box drawn). The thresholds are documented defaults, not measured annotator
behaviour: 0.5 is the usual acceptance score and matching IoU; 0.7 is where a box is taken to need
no adjustment.

**Edits** (:func:`edit_counts`): the same matching, seen from a human annotator's side. An import
is compared with the pre-annotations that were exported for the image (every exported box, whatever
its score: the export already applied its threshold); the imported boxes play the ground truth.
``kept`` is ``kept``, ``changed`` is ``fix``, ``deleted`` is ``delete`` and ``added`` is ``draw``.

**Agreement** (:func:`prediction_agreement`): class-aware F1 at IoU 0.5 between two models' confident
boxes on one image (1.0 when neither has a box), averaged over a fixed probe of unlabeled images
(:func:`mean_agreement`). Consecutive cycles' models that agree closely predict alike: a stopping
signal (:func:`stop_cycle`).

Boxes are ``float[N, 4]`` in x1, y1, x2, y2 pixels; labels ``int[N]`` (1..C); scores ``float[N]``.
"""
from __future__ import annotations

import numpy as np

ACCEPT, MATCH_IOU, TIGHT_IOU = 0.5, 0.5, 0.7
#: The agreement at which consecutive models are taken to have stabilised (stop_cycle's default).
STOP_AGREEMENT = 0.9
ACTION_KEYS = ("boxes", "accepted", "kept", "fix", "delete", "draw", "actions")
#: What :func:`edit_counts` returns: an annotator's changes to exported pre-annotations.
EDIT_KEYS = ("added", "deleted", "changed", "kept")


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def iou_matrix(a, b) -> np.ndarray:
    """``float64[N, M]`` intersection over union of boxes ``a[N, 4]`` and ``b[M, 4]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _on_ignored(boxes: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """``bool[N]``: the box lies on an ignored region (intersection over its own area >= 0.5)."""
    if len(boxes) == 0 or len(ignored) == 0:
        return np.zeros(len(boxes), dtype=bool)
    inter = _intersection(boxes, ignored)
    own = _area(boxes)[:, None]
    ioa = np.divide(inter, own, out=np.zeros_like(inter), where=own > 0)
    return ioa.max(axis=1) >= 0.5


def annotator_actions(gt_boxes, gt_labels, gt_ignore, pred_boxes, pred_labels, pred_scores, *,
                      accept: float = ACCEPT, match_iou: float = MATCH_IOU, tight_iou: float = TIGHT_IOU) -> dict:
    """The annotator's work on one image given pre-annotations (module docstring): a dict of
    :data:`ACTION_KEYS` counts. ``gt_ignore bool[K]`` marks ignored regions (not labels)."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    ignore = np.asarray(gt_ignore, dtype=bool).reshape(-1)
    boxes, labels = gt_boxes[~ignore], gt_labels[~ignore]
    pb = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    ps = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    pl = np.asarray(pred_labels, dtype=np.int64).reshape(-1)
    keep = ps >= accept
    pb, pl, ps = pb[keep], pl[keep], ps[keep]
    free = ~_on_ignored(pb, gt_boxes[ignore])
    pb, pl, ps = pb[free], pl[free], ps[free]
    ious = iou_matrix(pb, boxes)
    taken = np.zeros(len(boxes), dtype=bool)
    kept = fix = delete = 0
    for p in np.argsort(-ps, kind="stable"):
        cand = np.where(taken, -1.0, ious[p]) if len(boxes) else np.zeros(0)
        g = int(np.argmax(cand)) if len(cand) else -1
        if g < 0 or cand[g] < match_iou:
            delete += 1
            continue
        taken[g] = True
        if pl[p] == labels[g] and cand[g] >= tight_iou:
            kept += 1
        else:
            fix += 1
    draw = int((~taken).sum())
    return {"boxes": int(len(boxes)), "accepted": int(len(pb)), "kept": kept, "fix": fix, "delete": delete,
            "draw": draw, "actions": draw + fix + delete}


def add_actions(counts) -> dict:
    """The sum of several :func:`annotator_actions` dicts."""
    out = dict.fromkeys(ACTION_KEYS, 0)
    for c in counts:
        for k in ACTION_KEYS:
            out[k] += int(c[k])
    return out


def edit_counts(pre_boxes, pre_labels, final_boxes, final_labels, *, pre_scores=None,
                match_iou: float = MATCH_IOU, tight_iou: float = TIGHT_IOU) -> dict:
    """What an annotator changed on one image: a dict of :data:`EDIT_KEYS` counts.

    Args:
        pre_boxes: ``float[N, 4]`` the pre-annotations exported for the image (pixels).
        pre_labels: ``int[N]`` their classes (1..C).
        final_boxes: ``float[K, 4]`` the boxes the annotator's answer holds for the image.
        final_labels: ``int[K]`` their classes.
        pre_scores: ``float[N]`` the pre-annotations' scores, the order in which they are matched
            (highest first, as :func:`annotator_actions`); ``None``: in the given order.

    Each pre-annotation takes the still unmatched final box it overlaps most. ``kept``: IoU >=
    ``tight_iou`` and the same class; ``changed``: matched at IoU >= ``match_iou`` but moved (IoU
    below ``tight_iou``) or relabeled; ``deleted``: a pre-annotation no final box matched; ``added``:
    a final box no pre-annotation matched. ``kept + changed + deleted == N`` and
    ``kept + changed + added == K``.
    """
    pre = np.asarray(pre_boxes, dtype=np.float64).reshape(-1, 4)
    final = np.asarray(final_boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.ones(len(pre)) if pre_scores is None else np.asarray(pre_scores, dtype=np.float64).reshape(-1)
    # The answer is the ground truth here and nothing in it is an ignored region; every exported box
    # is a pre-annotation, so none is dropped by an acceptance score (-inf).
    a = annotator_actions(final, final_labels, np.zeros(len(final), dtype=bool), pre, pre_labels, scores,
                          accept=-np.inf, match_iou=match_iou, tight_iou=tight_iou)
    return {"added": a["draw"], "deleted": a["delete"], "changed": a["fix"], "kept": a["kept"]}


def add_edits(counts) -> dict:
    """The sum of several :func:`edit_counts` dicts."""
    out = dict.fromkeys(EDIT_KEYS, 0)
    for c in counts:
        for k in EDIT_KEYS:
            out[k] += int(c[k])
    return out


def prediction_agreement(a: dict, b: dict, *, score_threshold: float = ACCEPT, iou: float = MATCH_IOU) -> float:
    """Class-aware F1 in [0, 1] between two detections dicts (``boxes``, ``labels``, ``scores``) of one
    image, over boxes scoring >= ``score_threshold``; 1.0 when neither has such a box."""
    def confident(d):
        s = np.asarray(d["scores"], dtype=np.float64).reshape(-1)
        m = s >= score_threshold
        return (np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4)[m],
                np.asarray(d["labels"], dtype=np.int64).reshape(-1)[m], s[m])

    (ba, la, sa), (bb, lb, _) = confident(a), confident(b)
    if len(ba) == 0 and len(bb) == 0:
        return 1.0
    ious = iou_matrix(ba, bb)
    ious[la[:, None] != lb[None, :]] = 0.0
    taken = np.zeros(len(bb), dtype=bool)
    matched = 0
    for p in np.argsort(-sa, kind="stable"):
        if len(bb) == 0:
            break
        cand = np.where(taken, -1.0, ious[p])
        g = int(np.argmax(cand))
        if cand[g] >= iou:
            taken[g] = True
            matched += 1
    return 2.0 * matched / (len(ba) + len(bb))


def mean_agreement(dets_a: list[dict], dets_b: list[dict], **kwargs) -> float:
    """Mean :func:`prediction_agreement` over aligned lists of per-image detections."""
    if len(dets_a) != len(dets_b) or not dets_a:
        raise ValueError(f"need two aligned, non-empty lists, got {len(dets_a)} and {len(dets_b)}")
    return float(np.mean([prediction_agreement(a, b, **kwargs) for a, b in zip(dets_a, dets_b)]))


def stop_cycle(agreements: list[float | None], *, threshold: float = STOP_AGREEMENT) -> int | None:
    """The first cycle (1-based) whose model agrees with the previous cycle's at >= ``threshold``;
    ``agreements[n - 1]`` is cycle ``n``'s (None for cycle 1). None when it never does."""
    for n, a in enumerate(agreements, start=1):
        if a is not None and a >= threshold:
            return n
    return None
