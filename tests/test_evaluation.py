"""alod.evaluation: exact small cases, the official conventions, and the 50 real BDD100K frames."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from alod.data.index import DetectionIndex
from alod.evaluation import evaluate_detections
from alod.evaluation import evaluate_files

CLASSES = ("car", "bus", "train")


def index(per_image, names=None, classes=CLASSES):
    """``per_image``: list of lists of ``(x1, y1, x2, y2, label, ignore)``."""
    names = names or [f"img{i}.jpg" for i in range(len(per_image))]
    return DetectionIndex.from_lists(
        image_root="",
        names=names,
        widths=[1280] * len(names),
        heights=[720] * len(names),
        boxes_per_image=[np.array([r[:4] for r in rows], np.float32).reshape(-1, 4) for rows in per_image],
        labels_per_image=[np.array([r[4] for r in rows], np.int64) for rows in per_image],
        ignore_per_image=[np.array([r[5] for r in rows], bool) for rows in per_image],
        classes=classes,
    )


def dets(per_image):
    """``per_image``: list of lists of ``(x1, y1, x2, y2, label, score)``; adds a ``probs`` key."""
    out = []
    for rows in per_image:
        a = np.array(rows, np.float64).reshape(-1, 6)
        out.append({"boxes": a[:, :4].astype(np.float32), "labels": a[:, 4].astype(np.int64),
                    "scores": a[:, 5].astype(np.float32), "probs": np.zeros((len(a), 4), np.float32)})
    return out


def gt_as_dets(gt: DetectionIndex, score=0.9):
    out = []
    for i in range(len(gt)):
        b, lab, ign = gt.annotations(i)
        out.append({"boxes": b[~ign], "labels": lab[~ign], "scores": np.full(int((~ign).sum()), score, np.float32)})
    return out


GT = index([
    [(10, 10, 60, 50, 1, False), (100, 100, 180, 160, 2, False)],
    [(300, 200, 400, 260, 1, False), (500, 300, 700, 400, 1, True)],  # the second: an ignored region
])


def test_perfect_predictions_score_one_and_classes_without_gt_are_nan():
    m = evaluate_detections(GT, gt_as_dets(GT))
    assert m["mAP"] == pytest.approx(1.0) and m["mAP50"] == pytest.approx(1.0) and m["mAP75"] == pytest.approx(1.0)
    assert m["AP50/car"] == pytest.approx(1.0) and m["AP/bus"] == pytest.approx(1.0)
    # No ground truth for "train": NaN, as the official evaluation (printed "-"), out of the mean.
    assert math.isnan(m["AP50/train"]) and math.isnan(m["AP/train"])
    assert set(m) == {"mAP", "mAP50", "mAP75"} | {f"{p}/{c}" for p in ("AP50", "AP") for c in CLASSES}
    assert all(isinstance(v, float) for v in m.values())


def test_detection_on_an_ignored_region_is_not_a_false_positive():
    d = gt_as_dets(GT, score=0.5)
    # A higher-scored car inside the ignored region of image 1: crowd, so neither TP nor FP.
    d[1]["boxes"] = np.vstack([d[1]["boxes"], [[550, 320, 650, 380]]]).astype(np.float32)
    d[1]["labels"] = np.append(d[1]["labels"], 1)
    d[1]["scores"] = np.append(d[1]["scores"], 0.9).astype(np.float32)
    assert evaluate_detections(GT, d)["AP50/car"] == pytest.approx(1.0)
    # The same detection where there is no ignored region is a false positive ranked first.
    no_region = index([[(10, 10, 60, 50, 1, False), (100, 100, 180, 160, 2, False)],
                       [(300, 200, 400, 260, 1, False)]])
    assert evaluate_detections(no_region, d)["AP50/car"] < 0.9


def test_class_without_predictions_scores_zero():
    d = gt_as_dets(GT)
    d[0] = {k: v[d[0]["labels"] != 2] for k, v in d[0].items()}  # drop the bus
    m = evaluate_detections(GT, d)
    assert m["AP50/bus"] == 0.0 and m["AP/bus"] == 0.0
    assert m["AP50/car"] == pytest.approx(1.0)
    assert m["mAP50"] == pytest.approx(0.5)  # mean over car and bus; train has no ground truth


def test_predictions_of_a_class_without_ground_truth_change_nothing():
    d = gt_as_dets(GT)
    d[0]["boxes"] = np.vstack([d[0]["boxes"], [[0, 0, 30, 30]]]).astype(np.float32)
    d[0]["labels"] = np.append(d[0]["labels"], 3)
    d[0]["scores"] = np.append(d[0]["scores"], 0.99).astype(np.float32)
    m = evaluate_detections(GT, d)
    assert m["mAP"] == pytest.approx(1.0) and math.isnan(m["AP/train"])


def test_no_detections_at_all_follows_the_official_empty_result():
    empty = [{"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "scores": np.zeros(0, np.float32)} for _ in range(len(GT))]
    m = evaluate_detections(GT, empty)
    assert m["mAP"] == 0.0 and m["mAP50"] == 0.0 and m["AP50/car"] == 0.0 and m["AP/bus"] == 0.0
    assert math.isnan(m["AP50/train"])


def test_box_convention_changes_ap_on_a_small_box():
    gt = index([[(0, 0, 9, 9, 1, False)]])
    d = dets([[(2, 0, 11, 9, 1, 0.9)]])
    # bdd100k: boxes 10 px wide, IoU 80/120 = 0.667 -> a hit at IoU 0.50..0.65 (4 of 10 thresholds)
    bdd = evaluate_detections(gt, d, box_convention="bdd100k")
    # coco: 9 px wide, IoU 63/99 = 0.636 -> a hit at 0.50..0.60 (3 of 10)
    coco = evaluate_detections(gt, d, box_convention="coco")
    assert bdd["mAP50"] == coco["mAP50"] == pytest.approx(1.0)
    assert bdd["AP/car"] == pytest.approx(0.4) and coco["AP/car"] == pytest.approx(0.3)


def test_image_order_does_not_matter_even_with_tied_scores():
    rng = np.random.default_rng(0)
    rows, drows = [], []
    for _ in range(12):
        g = [(x, 50, x + 40, 90, int(rng.integers(1, 3)), False) for x in rng.uniform(0, 1000, 3)]
        rows.append(g)
        drows.append([(x1 + rng.normal(0, 6), y1, x2, y2, lab, round(float(rng.random()), 1))
                      for x1, y1, x2, y2, lab, _ in g])
    names = [f"{c}.jpg" for c in "qwertyuiopas"]
    gt, d = index(rows, names), dets(drows)
    perm = rng.permutation(len(gt))
    assert evaluate_detections(gt, d) == evaluate_detections(gt.subset(perm), [d[i] for i in perm])


def test_bad_detection_arrays_are_rejected():
    with pytest.raises(ValueError, match="detection entries"):
        evaluate_detections(GT, gt_as_dets(GT)[:1])
    d = gt_as_dets(GT)
    d[0]["labels"] = d[0]["labels"] + 5
    with pytest.raises(ValueError, match="labels must be in 1..3"):
        evaluate_detections(GT, d)
    with pytest.raises(ValueError, match="box_convention"):
        evaluate_detections(GT, gt_as_dets(GT), box_convention="voc")


def test_file_coordinates_decide_a_match_at_a_threshold(tmp_path):
    # From the 50 real frames: IoU 0.8000012 with the file's doubles, 0.7999999 after float32. The
    # index keeps the doubles, so the per-cycle evaluation (index only) and alod evaluate agree.
    gt_file, pred_file = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_file.write_text(json.dumps([{"name": "a.jpg", "labels": [
        {"id": "0", "category": "pedestrian", "box2d": {"x1": 937.814, "y1": 292.95, "x2": 952.664, "y2": 324.0}}]}]))
    pred_file.write_text(json.dumps([{"name": "a.jpg", "labels": [
        {"id": "0", "category": "person", "score": 0.4,
         "box2d": {"x1": 937.029, "y1": 294.138, "x2": 950.844, "y2": 324.609}}]}]))
    report = evaluate_files(gt=gt_file, pred=pred_file, log=lambda s: None)
    assert report["AP/pedestrian"] == pytest.approx(0.7)  # hits at IoU 0.50 .. 0.80, as the official eval

    from alod.data.bdd100k import read_bdd100k_predictions
    from alod.data.loading import load_index

    gt = load_index(labels=gt_file, log=lambda s: None)
    assert gt.boxes.dtype == np.float64 and gt.boxes.tolist() == [[937.814, 292.95, 952.664, 324.0]]
    d, _ = read_bdd100k_predictions(pred_file, gt)
    assert evaluate_detections(gt, d)["AP/pedestrian"] == pytest.approx(0.7)
    # with float32 boxes (the index before) the 0.80 threshold was missed
    f32 = dataclasses.replace(gt, boxes=gt.boxes.astype(np.float32).astype(np.float64))
    assert evaluate_detections(f32, d)["AP/pedestrian"] == pytest.approx(0.6)


def perturbed_predictions(frames, seed=0):
    """BDD100K prediction frames from ground-truth frames: jittered boxes, random scores, some
    drops and false positives, plus the real frame's threshold case (IoU 0.8000012)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        labels = []
        for lab in f["labels"]:
            if rng.random() < 0.15:
                continue
            b = lab["box2d"]
            j = rng.normal(0, 2.0, 4)
            x1, y1 = b["x1"] + j[0], b["y1"] + j[1]
            labels.append({"category": lab["category"], "score": float(rng.random()),
                           "box2d": {"x1": x1, "y1": y1, "x2": max(x1, b["x2"] + j[2]), "y2": max(y1, b["y2"] + j[3])}})
            if b["x1"] == 937.814:
                labels.append({"category": "pedestrian", "score": 0.999,
                               "box2d": {"x1": 937.029, "y1": 294.138, "x2": 950.844, "y2": 324.609}})
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 1200), rng.uniform(0, 650)
            labels.append({"category": "car", "score": float(rng.random()),
                           "box2d": {"x1": x, "y1": y, "x2": x + 60, "y2": y + 40}})
        out.append({"name": f["name"], "labels": labels})
    return out


def test_index_evaluation_equals_evaluate_files_on_real_frames(shared_data, tmp_path):
    """The per-cycle evaluation (the index alone) gives alod evaluate's result, to 1e-12, and both
    equal an evaluation on the file's own doubles."""
    from alod.data.bdd100k import BDD100K_CLASSES, read_bdd100k_predictions
    from alod.data.loading import load_index

    gt_file = shared_data / "bdd100k_val50" / "det_val50.json"
    frames = json.loads(gt_file.read_text())
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(perturbed_predictions(frames)))

    report = evaluate_files(gt=gt_file, pred=pred_file, log=lambda s: None)
    gt = load_index(labels=gt_file, image_root=shared_data / "bdd100k_val50" / "images", log=lambda s: None)
    dets, _ = read_bdd100k_predictions(pred_file, gt)
    from_index = evaluate_detections(gt, dets)

    # the file's doubles, straight from json.load (no reader involved)
    doubles = DetectionIndex.from_lists(
        image_root="", names=[f["name"] for f in frames], widths=[1280] * len(frames), heights=[720] * len(frames),
        boxes_per_image=[np.array([[lab["box2d"][k] for k in ("x1", "y1", "x2", "y2")] for lab in f["labels"]],
                                  np.float64).reshape(-1, 4) for f in frames],
        labels_per_image=[np.array([BDD100K_CLASSES.index(lab["category"]) + 1 for lab in f["labels"]], np.int64)
                          for f in frames],
        classes=BDD100K_CLASSES)
    assert gt.boxes.tolist() == doubles.boxes.tolist()
    from_doubles = evaluate_detections(doubles, dets)

    assert from_index["AP/pedestrian"] > 0.1 and set(from_index) <= set(report)
    for k, v in from_index.items():
        for other in (report[k], from_doubles[k]):
            assert (math.isnan(v) and math.isnan(other)) or abs(v - other) <= 1e-12, k


def test_real_frames_with_gt_as_predictions_score_one(shared_data):
    from alod.data.loading import load_index

    gt = load_index(labels=shared_data / "bdd100k_val50" / "det_val50.json", log=lambda s: None)
    assert len(gt) == 50 and gt.num_boxes == 901
    m = evaluate_detections(gt, gt_as_dets(gt))
    assert m["mAP"] == pytest.approx(1.0, abs=1e-9) and m["mAP50"] == pytest.approx(1.0, abs=1e-9)
    for c in gt.classes:
        if c == "train":  # no train in these frames
            assert math.isnan(m[f"AP50/{c}"])
        else:
            assert m[f"AP50/{c}"] == pytest.approx(1.0, abs=1e-9), c
