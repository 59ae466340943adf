"""``alod evaluate`` on BDD100K and COCO files, and its error messages."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alod.commands import evaluate as cmd
from alod.evaluation import evaluate_files
from alod.utils import AlodError, sha256_file

REPO = Path(__file__).resolve().parents[2]


def quiet(s):
    return None


def run_cli(*argv):
    """``alod evaluate ARGV`` in-process: (exit code, stdout, stderr)."""
    from alod.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["evaluate", *map(str, argv)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def bdd(tmp_path, shared_data):
    """The 50 real frames and their boxes as predictions (score 0.9)."""
    gt = shared_data / "bdd100k_val50" / "det_val50.json"
    frames = json.loads(gt.read_text())
    pred = [{"name": f["name"], "labels": [dict(lab, score=0.9) for lab in f["labels"]]} for f in frames]
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps(pred))
    return gt, pred_path, pred


def write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_bdd100k_files(bdd, tmp_path):
    gt, pred, _ = bdd
    out = tmp_path / "out" / "metrics.json"
    rc, stdout, stderr = run_cli("--gt", gt, "--pred", pred, "--out", out)
    assert rc == 0, stderr
    m = json.loads(out.read_text())  # strict JSON: no NaN
    assert m["mAP"] == pytest.approx(1.0) and m["mAP50"] == pytest.approx(1.0)
    assert m["AP50/car"] == pytest.approx(1.0) and m["AP50/train"] is None  # no train in these frames
    assert m["inputs"]["gt"]["sha256"] == sha256_file(gt) and m["inputs"]["pred"]["sha256"] == sha256_file(pred)
    assert Path(m["inputs"]["gt"]["path"]).resolve() == gt.resolve()  # absolute (shared/ may be a link)
    assert m["box_convention"] == "bdd100k" and m["data_format"] == "bdd100k"
    assert m["counts"]["gt_boxes"] == 901 and m["counts"]["detections"] == 901
    assert "traffic light" in stdout and "overall" in stdout and "mAP50 1.0000" in stdout


def test_bdd100k_2018_names_and_missing_frames(bdd, tmp_path):
    gt, _, pred = bdd
    to2018 = {"pedestrian": "person", "bicycle": "bike", "motorcycle": "motor"}
    frames = json.loads(gt.read_text())
    for f in frames:
        for lab in f["labels"]:
            lab["category"] = to2018.get(lab["category"], lab["category"])
    gt2018 = write(tmp_path / "gt2018.json", frames)
    pred2018 = write(tmp_path / "pred2018.json", pred[1:])  # first frame: no predictions
    r = evaluate_files(gt=gt2018, pred=pred2018, log=quiet)
    ref = evaluate_files(gt=gt, pred=write(tmp_path / "p.json", pred[1:]), log=quiet)
    assert r["counts"]["images_without_predictions"] == 1
    assert r["mAP"] < 1.0
    for k in ("mAP", "mAP50", "AP/pedestrian", "AP50/bicycle", "AP/motorcycle"):
        assert r[k] == pytest.approx(ref[k], abs=1e-12), k


def coco_predictions(gt_json, rng):
    """The ground truth as a COCO results list, jittered, some dropped, random scores, a few FPs."""
    res = []
    for a in gt_json["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        res.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                    "bbox": [x + rng.normal(0, 0.05 * w), y + rng.normal(0, 0.05 * h), w, h]})
    cats = [c["id"] for c in gt_json["categories"]]
    for im in gt_json["images"][:40]:
        res.append({"image_id": im["id"], "category_id": int(rng.choice(cats)), "score": float(rng.random()),
                    "bbox": [float(rng.uniform(0, 300)), float(rng.uniform(0, 300)), 50.0, 40.0]})
    return res


def test_coco_files_match_pycocotools(tmp_path, shared_data):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_json = json.loads((shared_data / "coco128" / "instances_val2017.json").read_text())
    for a in gt_json["annotations"][::25]:
        a["iscrowd"] = 1  # some crowd regions (coco128 has none)
    gt = write(tmp_path / "instances.json", gt_json)
    pred = write(tmp_path / "results.json", coco_predictions(gt_json, np.random.default_rng(0)))
    out = tmp_path / "metrics.json"
    rc, stdout, stderr = run_cli("--gt", gt, "--pred", pred, "--out", out)
    assert rc == 0, stderr
    m = json.loads(out.read_text())
    assert m["data_format"] == "coco" and m["box_convention"] == "coco" and len(m["classes"]) == 80

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(pred)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert m["mAP"] == pytest.approx(ev.stats[0], abs=1e-9)
    assert m["mAP50"] == pytest.approx(ev.stats[1], abs=1e-9)
    assert m["mAP75"] == pytest.approx(ev.stats[2], abs=1e-9)
    assert 0.3 < m["mAP50"] < 1.0


def test_help_runs_standalone():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "alod.commands.evaluate", "--help"], capture_output=True, text=True,
                       env=env, cwd=REPO)
    assert p.returncode == 0 and "--box-convention" in p.stdout and "--pred" in p.stdout


def test_standalone_main_prints_errors_without_traceback(tmp_path, capsys):
    rc = cmd.main(["--gt", str(tmp_path / "nope.json"), "--pred", str(tmp_path / "p.json"), "--out", str(tmp_path / "m")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- errors
def frame(name, labels):
    return {"name": name, "labels": labels}


def car(**kw):
    lab = {"id": "0", "category": "car", "box2d": {"x1": 1, "y1": 2, "x2": 30, "y2": 40}, "score": 0.5}
    lab.update(kw)
    return {k: v for k, v in lab.items() if v is not None}


@pytest.fixture
def small_gt(tmp_path):
    return write(tmp_path / "gt.json", [frame("a.jpg", [car(score=None)]), frame("b.jpg", [])])


@pytest.mark.parametrize("pred, message", [
    ([frame("zzz.jpg", [car()])], r"frame 0 \('zzz.jpg'\): this image is not in the ground truth"),
    ([frame("a.jpg", [car(category="spaceship")])], r"label 0: unknown category 'spaceship'"),
    ([frame("a.jpg", [car(score=None)])], r"label 0: a prediction needs a finite numeric 'score'"),
    ([frame("a.jpg", [car(box2d=None)])], r"needs box2d"),
    ([frame("a.jpg", []), frame("a.jpg", [])], r"more than once"),
    ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}], r"looks like a COCO result"),
])
def test_bdd100k_prediction_errors(small_gt, tmp_path, pred, message):
    p = write(tmp_path / "pred.json", pred)
    with pytest.raises(AlodError, match=message) as e:
        evaluate_files(gt=small_gt, pred=p, log=quiet)
    assert str(p) in str(e.value)


def test_malformed_json_names_file_line_and_column(small_gt, tmp_path):
    p = write(tmp_path / "pred.json", '[\n  {"name": "a.jpg",\n   "labels": [}\n]')
    rc, _, err = run_cli("--gt", small_gt, "--pred", p, "--out", tmp_path / "m.json")
    assert rc == 2 and str(p) in err and "line 3, column" in err and "Traceback" not in err
    g = write(tmp_path / "gt_bad.json", '[{"name": "a.jpg", "labels": [')
    with pytest.raises(AlodError, match=r"gt_bad.json: line 1, column"):
        evaluate_files(gt=g, pred=p, log=quiet)
    assert not (tmp_path / "m.json").exists()


@pytest.fixture
def coco_gt(tmp_path):
    return write(tmp_path / "instances.json", {
        "images": [{"id": 7, "file_name": "x.jpg", "width": 100, "height": 80}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20], "iscrowd": 0}],
        "categories": [{"id": 3, "name": "car"}, {"id": 9, "name": "boat"}],
    })


@pytest.mark.parametrize("result, message", [
    ({"image_id": 8, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.5}, r"image_id 8 is not an image"),
    ({"image_id": 7, "category_id": 4, "bbox": [10, 10, 20, 20], "score": 0.5}, r"unknown category_id 4"),
    ({"image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20]}, r"needs a finite numeric 'score'"),
    ({"image_id": 7, "category_id": 3, "bbox": [10, 10, 20], "score": 0.5}, r"bbox must be"),
    ({"name": "x.jpg", "labels": []}, r"looks like a BDD100K frame"),
])
def test_coco_prediction_errors(coco_gt, tmp_path, result, message):
    p = write(tmp_path / "results.json", [result])
    with pytest.raises(AlodError, match=message):
        evaluate_files(gt=coco_gt, pred=p, log=quiet)


def test_coco_small_case(coco_gt, tmp_path):
    p = write(tmp_path / "results.json", [{"image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.5}])
    r = evaluate_files(gt=coco_gt, pred=p, log=quiet)
    assert r["AP/car"] == pytest.approx(1.0) and math.isnan(r["AP/boat"]) and r["mAP"] == pytest.approx(1.0)
