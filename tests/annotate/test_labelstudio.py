"""Label Studio JSON: export structure, an annotator's round trip, the real tool's files, its own
validator (when installed), and hostile input."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from alod.annotate import labelstudio as ls
from alod.annotate.core import ExportImage, ExportTask, ImportProblem
from alod.utils import AlodError
from alod_testing import write_png

CLASSES = ("car", "person")


def _task(tmp_path: Path) -> ExportTask:
    """Three images of different sizes, in labeling order (priority 5, 3, 1), with pre-annotations."""
    src = tmp_path / "dataset"
    return ExportTask(
        images=[
            ExportImage("sub/b 2.png", write_png(src / "sub/b 2.png", 160, 80, "red"), 160, 80,
                        boxes=np.array([[40.0, 20.0, 120.0, 60.0]]), labels=np.array([2]), scores=np.array([0.5]),
                        priority=5.0),
            ExportImage("a.png", write_png(src / "a.png", 200, 100, "green"), 200, 100,
                        boxes=np.array([[20.0, 10.0, 60.0, 50.0], [100.0, 20.0, 140.0, 80.0]]),
                        labels=np.array([1, 2]), scores=np.array([0.9, 0.75]), priority=3.0),
            ExportImage("c.png", write_png(src / "c.png", 100, 50, "blue"), 100, 50,
                        boxes=np.array([[10.0, 5.0, 30.0, 25.0]]), labels=np.array([1]), scores=np.array([0.6]),
                        priority=1.0),
        ],
        classes=CLASSES, cycle=3, run="demo")


def _region(rid, label, x, y, w, h, W, H, **extra):
    return {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}, **extra}


def _as_exported_by_label_studio(tasks: list) -> list:
    """What Label Studio's JSON export returns for imported tasks before anyone labels them."""
    out = copy.deepcopy(tasks)
    for tid, t in enumerate(out, 1):
        t.update(id=tid, annotations=[], drafts=[], total_annotations=0, cancelled_annotations=0, project=1)
        for p in t["predictions"]:
            p.update(id=100 + tid, task=tid, project=1, created_ago="1 minute", mislabeling=0.0)
    return out


def _submit(t: dict, result: list, ann_id: int, user: int = 1, **extra) -> dict:
    """An annotation as Label Studio stores it when an annotator submits a task."""
    ann = {"id": ann_id, "completed_by": user, "result": result, "was_cancelled": False, "ground_truth": False,
           "created_at": "2024-05-07T12:34:36.829143Z", "lead_time": 12.5, "prediction": {}, "result_count": 0,
           "task": t.get("id"), "project": 1, "parent_prediction": None, "parent_annotation": None, **extra}
    t["annotations"].append(ann)
    return ann


def _rows(problems):
    return [(p.where, p.kind) for p in problems]


def test_export_structure(tmp_path):
    task = _task(tmp_path)
    out = tmp_path / "export"
    files = ls.export(task, out)
    assert files == [out / "tasks.json", out / "label_config.xml"]
    tasks = json.loads((out / "tasks.json").read_text())
    # In the export task's order; prediction score = priority rescaled to [0, 1] (5, 3, 1 -> 1, .5, 0).
    assert [t["data"]["alod_name"] for t in tasks] == ["sub/b 2.png", "a.png", "c.png"]
    assert [t["predictions"][0]["score"] for t in tasks] == [1.0, 0.5, 0.0]
    assert [t["data"]["alod_priority"] for t in tasks] == [5.0, 3.0, 1.0]
    assert tasks[0] == {
        "data": {"image": "/data/local-files/?d=images/sub/b%202.png", "alod_name": "sub/b 2.png", "alod_priority": 5.0},
        "meta": {"alod_name": "sub/b 2.png", "run": "demo", "cycle": 3, "priority": 5.0, "width": 160, "height": 80},
        "predictions": [{"model_version": "alod-cycle-3", "score": 1.0, "result": [
            _region("alod0", "person", 25.0, 25.0, 50.0, 50.0, 160, 80, score=0.5)]}],
    }
    # Percent of each image's own size: a.png is 200x100.
    assert tasks[1]["predictions"][0]["result"] == [
        _region("alod0", "car", 10.0, 10.0, 20.0, 40.0, 200, 100, score=0.9),
        _region("alod1", "person", 50.0, 20.0, 20.0, 60.0, 200, 100, score=0.75)]
    assert tasks[2]["predictions"][0]["result"] == [_region("alod0", "car", 10.0, 10.0, 20.0, 40.0, 100, 50, score=0.6)]
    assert (out / "label_config.xml").read_text() == (
        '<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
        '  <RectangleLabels name="label" toName="image">\n'
        '    <Label value="car"/>\n    <Label value="person"/>\n  </RectangleLabels>\n</View>\n')
    for im in task.images:
        assert (out / "images" / im.name).read_bytes() == im.path.read_bytes()
        assert not (out / "images" / im.name).is_symlink()
    assert "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" + str(out.resolve()) in (out / "README.txt").read_text()


def test_export_symlinks_and_url_prefix(tmp_path):
    task = _task(tmp_path)
    out = tmp_path / "export"
    ls.export(task, out, copy_images=False, image_url_prefix="https://host/cycle3/")
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [
        "https://host/cycle3/sub/b%202.png", "https://host/cycle3/a.png", "https://host/cycle3/c.png"]
    for im in task.images:
        link = out / "images" / im.name
        assert link.is_symlink() and link.resolve() == im.path.resolve()


def test_round_trip_through_an_annotator(tmp_path):
    task = _task(tmp_path)
    out = tmp_path / "export"
    ls.export(task, out)
    tasks = _as_exported_by_label_studio(json.loads((out / "tasks.json").read_text()))
    b_task, a_task, _ = tasks
    # a.png: the prediction accepted, its first box moved right by 5 %, the second deleted, one added.
    regions = copy.deepcopy(a_task["predictions"][0]["result"])
    for r in regions:
        del r["score"]
        r["origin"] = "prediction"
    regions[0]["value"]["x"] = 15.0
    regions[0]["origin"] = "prediction-changed"
    del regions[1]
    regions.append(_region("Xn3wBox", "person", 70.0, 50.0, 25.0, 30.0, 200, 100, origin="manual"))
    _submit(a_task, regions, ann_id=1)
    # sub/b 2.png: its only box relabelled to a class the dataset does not have.
    regions = copy.deepcopy(b_task["predictions"][0]["result"])
    regions[0]["value"]["rectanglelabels"] = ["truck"]
    _submit(b_task, regions, ann_id=2)
    # c.png: nobody submitted it (the prediction alone is not a label).
    answer = tmp_path / "project-1-at-2024.json"
    answer.write_text(json.dumps(tasks))

    result = ls.read(answer, task)
    assert result.format == "labelstudio"
    assert sorted(result.boxes) == ["a.png", "sub/b 2.png"]
    np.testing.assert_array_equal(result.boxes["a.png"], [[30.0, 10.0, 70.0, 50.0], [140.0, 50.0, 190.0, 80.0]])
    np.testing.assert_array_equal(result.labels["a.png"], [1, 2])
    assert result.boxes["sub/b 2.png"].shape == (0, 4) and result.labels["sub/b 2.png"].shape == (0,)
    assert result.problems == [
        ImportProblem(str(answer), "task 1 (sub/b 2.png) annotation 2 region alod0", "unknown_category",
                      "category 'truck' is not one of the dataset's classes (car, person)"),
        ImportProblem(str(answer), "c.png", "image_missing",
                      "it has only predictions, no submitted annotation: a human must confirm them (Submit)"),
    ]


def _sample_task(images, classes):
    return ExportTask([ExportImage(n, Path("/nonexistent") / n, w, h) for n, w, h in images], classes, 0, "real")


def test_real_export_with_two_annotators(shared_data):
    path = shared_data / "annotation_samples/label_studio/data.json"
    # Tasks from another project: data.image is "/image1", "/image2"; matched by the file name.
    task = _sample_task([("image1", 2800, 2800), ("image2", 2800, 2800)], ("parasites", "white"))
    result = ls.read(path, task)
    # Task 1 has annotations by users 2 and 1: the first (id 1, user 2) is kept, the other reported.
    np.testing.assert_allclose(result.boxes["image1"], [
        [1040.4371584699454, 1978.870673952641, 1157.7413479052825, 2111.4754098360654],
        [1618.1487001159135, 1760.4901473753937, 1724.7888723298563, 1890.3129657228023]], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(result.labels["image1"], [1, 2])
    np.testing.assert_allclose(result.boxes["image2"], [
        [550.8196721311475, 1392.3497267759562, 642.622950819672, 1473.952641165756],
        [1728.9617486338798, 1040.4371584699454, 1800.3642987249546, 1162.8415300546449]], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(result.labels["image2"], [2, 2])
    assert result.problems == [ImportProblem(
        str(path), "task 1 (image1) annotation 2", "duplicate_image",
        "another annotation of the same image (completed_by 1); annotation 1 (completed_by 2) is kept. "
        "To take another, mark it as ground truth in Label Studio and export again")]


def test_real_export_with_rotated_rectangles(shared_data):
    path = shared_data / "annotation_samples/label_studio/data_obb.json"
    raw = json.loads(path.read_text())
    sizes = [("image1", 597, 768), ("image2", 433, 768), ("image3", 716, 768)]
    result = ls.read(path, _sample_task(sizes, ("Butterfly", "butterfly")))
    assert {k: len(v) for k, v in result.boxes.items()} == {"image1": 23, "image2": 1, "image3": 1}
    np.testing.assert_array_equal(result.labels["image3"], [2])  # written "butterfly" by that annotator
    # Every box is the hull of its rectangle turned clockwise about the top-left corner.
    expected, where = [], []
    for t, (name, W, H) in zip(raw, sizes, strict=True):
        ann = t["annotations"][0]
        for r in ann["result"]:
            v = r["value"]
            th = math.radians(v["rotation"])
            rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
            wh = np.array([v["width"] * W / 100, v["height"] * H / 100])
            corners = (rot @ (np.array([[0, 0], [1, 0], [1, 1], [0, 1]]) * wh).T).T + [v["x"] * W / 100, v["y"] * H / 100]
            expected.append([*corners.min(0), *corners.max(0)])
            where.append(f"task {t['id']} ({name}) annotation {ann['id']} region {r['id']}")
    got = np.concatenate([result.boxes[n] for n, _, _ in sizes])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.boxes["image2"], [[24.660306772570994, 252.79580921636793, 381.83552065512265,
                                                          516.196858803085]], rtol=0, atol=1e-9)
    assert _rows(result.problems) == [(w, "rotated_box") for w in where]
    assert result.problems[0].detail == ("rotated by 328.332 degrees; its axis-aligned hull "
                                         "[62.9, 551.3, 192.5, 664.2] is taken")
    # Class names match exactly: with only "Butterfly", the lower-case one is unknown (and not taken).
    strict = ls.read(path, _sample_task(sizes, ("Butterfly",)))
    assert strict.boxes["image3"].shape == (0, 4)
    assert _rows(strict.problems) == [(w, "rotated_box") for w in where[:-1]] + [(where[-1], "unknown_category")]


def test_tasks_from_elsewhere_are_matched_by_file_name(tmp_path):
    task = _sample_task([("x/a.png", 100, 50), ("y/a.png", 100, 50), ("sub/b 2.png", 160, 80)], CLASSES)
    box = [_region("r1", "car", 10.0, 10.0, 20.0, 40.0, 100, 50)]
    tasks = [
        {"id": 1, "data": {"image": "/data/local-files/?d=dataset/x/a.png"}, "annotations": [{"id": 1, "result": box}]},
        {"id": 2, "data": {"image": "/data/upload/3/1a2b3c4d-b%202.png"}, "annotations": [{"id": 2, "result": []}]},
        {"id": 3, "data": {"image": "/a.png"}, "annotations": [{"id": 3, "result": box}]},
        {"id": 4, "data": {"image": "s3://bucket/other.png"}, "annotations": [{"id": 4, "result": box}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    result = ls.read(path, task)
    np.testing.assert_array_equal(result.boxes["x/a.png"], [[10.0, 5.0, 30.0, 25.0]])
    assert result.boxes["sub/b 2.png"].shape == (0, 4)
    assert result.problems == [
        ImportProblem(str(path), "task 3", "image_not_asked_for", "image URL '/a.png': matches several exported "
                      "images (x/a.png, y/a.png); name the image by its full dataset name; task skipped"),
        ImportProblem(str(path), "task 4", "image_not_asked_for",
                      "image URL 's3://bucket/other.png': no exported image has this file name; task skipped"),
        ImportProblem(str(path), "y/a.png", "image_missing", "exported but not in this file"),
    ]


def test_annotators_ground_truth_cancelled_drafts_and_sizes(tmp_path):
    task = _sample_task([("a.png", 200, 100), ("b.png", 200, 100), ("c.png", 200, 100), ("d.png", 200, 100),
                         ("e.png", 200, 100)], CLASSES)
    car = [_region("r1", "car", 10.0, 10.0, 20.0, 40.0, 200, 100)]
    person = [_region("r2", "person", 50.0, 50.0, 10.0, 10.0, 200, 100)]
    half = [_region("r3", "car", 10.0, 10.0, 20.0, 40.0, 100, 50)]      # a proportionally smaller copy
    square = [_region("r4", "car", 10.0, 10.0, 20.0, 40.0, 100, 100)]   # another picture
    tasks = [
        {"id": 1, "data": {"image": "/a.png", "alod_name": "a.png"}, "annotations": [
            {"id": 10, "completed_by": 3, "result": car, "was_cancelled": True},
            {"id": 11, "completed_by": 5, "result": car, "was_cancelled": False, "ground_truth": False},
            {"id": 12, "completed_by": 7, "result": person, "was_cancelled": False, "ground_truth": True}]},
        {"id": 2, "data": {"alod_name": "b.png"}, "annotations": [{"id": 20, "result": car, "was_cancelled": True}]},
        {"id": 3, "data": {"alod_name": "c.png"}, "annotations": [], "drafts": [{"id": 1, "result": car}]},
        {"id": 4, "data": {"alod_name": "d.png"}, "annotations": [{"id": 40, "result": half}]},
        {"id": 5, "data": {"alod_name": "e.png"}, "annotations": [{"id": 50, "result": square}]},
        {"id": 6, "data": {"alod_name": "a.png"}, "annotations": [{"id": 60, "result": car}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    result = ls.read(path, task)
    np.testing.assert_array_equal(result.boxes["a.png"], [[100.0, 50.0, 120.0, 60.0]])  # the ground truth
    np.testing.assert_array_equal(result.labels["a.png"], [2])
    np.testing.assert_array_equal(result.boxes["d.png"], [[20.0, 10.0, 60.0, 50.0]])  # percent of 200x100
    assert sorted(result.boxes) == ["a.png", "d.png"]
    assert _rows(result.problems) == [
        ("task 1 (a.png) annotation 11", "duplicate_image"),
        ("task 5 (e.png)", "image_not_asked_for"),
        ("task 6 (a.png)", "duplicate_image"),
        ("b.png", "image_missing"), ("c.png", "image_missing"), ("e.png", "image_missing")]
    details = [p.detail for p in result.problems]
    assert details[0] == ("another annotation of the same image (completed_by 5); annotation 12 (completed_by 7) "
                          "(marked ground truth) is kept. To take another, mark it as ground truth in Label Studio "
                          "and export again")
    assert details[1] == ("Label Studio showed a 100x100 image but the exported 'e.png' is 200x100 (another picture, "
                          "or turned by its EXIF orientation); task skipped")
    assert details[3:] == ["its annotations were all cancelled (skipped) in Label Studio: not labeled",
                           "it has a draft but no submitted annotation: submit it in Label Studio",
                           "the annotated image's size differs (see the problem above)"]


def test_region_types_and_bad_regions(tmp_path):
    task = _sample_task([("a.png", 200, 100)], CLASSES)
    rect = {"id": "R", "type": "rectangle", "from_name": "box", "to_name": "image",
            "value": {"x": 0.0, "y": 0.0, "width": 50.0, "height": 50.0}}
    rect_label = {"id": "R", "type": "labels", "from_name": "lab", "to_name": "image",
                  "value": {"x": 0.0, "y": 0.0, "width": 50.0, "height": 50.0, "labels": ["person"]}}
    poly = {"id": "P", "type": "polygonlabels", "value": {"points": [[1, 1], [5, 1], [3, 4]], "polygonlabels": ["car"]}}
    two = _region("T", "car", 1.0, 1.0, 5.0, 5.0, 200, 100)
    two["value"]["rectanglelabels"] = ["car", "person"]
    text = _region("S", "car", "abc", 1.0, 5.0, 5.0, 200, 100)
    flat = _region("F", "car", 10.0, 10.0, 0.0, 5.0, 200, 100)
    far = _region("O", "car", 90.0, 10.0, 30.0, 5.0, 200, 100)
    edge = _region("E", "car", 90.0, 10.0, 10.5, 5.0, 200, 100)   # 1 px past the border: clipped
    turned = _region("I", "car", 10.0, 10.0, 5.0, 5.0, 200, 100, image_rotation=90)
    result = [rect, rect_label, poly, two, text, flat, far, edge, turned, 7,
              {"id": "C", "type": "choices", "value": {"choices": ["night"]}}]
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"id": 1, "data": {"alod_name": "a.png"}, "annotations": [{"id": 1, "result": result}]}]))
    out = ls.read(path, task)
    np.testing.assert_array_equal(out.boxes["a.png"], [[0.0, 0.0, 100.0, 50.0], [180.0, 10.0, 200.0, 15.0]])
    np.testing.assert_array_equal(out.labels["a.png"], [2, 1])
    w = "task 1 (a.png) annotation 1"
    assert _rows(out.problems) == [
        (f"{w} region P", "not_a_box"), (f"{w} region T", "unknown_category"), (f"{w} region S", "degenerate_box"),
        (f"{w} region F", "degenerate_box"), (f"{w} region O", "box_outside_image"), (f"{w} region I", "rotated_box"),
        (f"{w} result[9]", "not_a_box"), (f"{w} region C", "not_a_box")]


def test_hostile_names_and_records(tmp_path):
    task = _sample_task([("a.png", 200, 100)], CLASSES)
    box = [_region("r1", "car", 10.0, 10.0, 20.0, 40.0, 200, 100)]
    tasks = [
        "not a task",
        {"id": 1, "data": "a.png"},
        {"id": 2, "data": {"alod_name": "../../etc/passwd"}, "annotations": [{"id": 1, "result": box}]},
        {"id": 3, "data": {"alod_name": "/etc/passwd"}, "annotations": [{"id": 2, "result": box}]},
        {"id": 4, "data": {"image": "/data/local-files/?d=images/../../secret/a.png"}, "annotations": [{"result": box}]},
        {"id": 5, "data": {"image": "http://host/../a.png"}, "annotations": [{"result": box}]},
        {"id": 6, "data": {"image": 5}, "annotations": [{"result": box}]},
        {"id": 7, "data": {"alod_name": ["a.png"]}, "annotations": [{"result": box}]},
        {"id": 8, "data": {"alod_name": "a.png"}, "annotations": {"result": box}},
        {"id": 9, "data": {"alod_name": "a.png"}, "annotations": ["x", {"id": 3, "result": "boxes"}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    out = ls.read(path, task)
    assert out.boxes == {}
    assert _rows(out.problems) == [
        ("tasks[0]", "not_this_format"), ("tasks[1]", "not_this_format"), ("task 2", "unsafe_image_name"),
        ("task 3", "unsafe_image_name"), ("task 4", "unsafe_image_name"), ("task 5", "unsafe_image_name"),
        ("task 6", "not_this_format"), ("task 7", "not_this_format"), ("task 8 (a.png)", "not_this_format"),
        ("task 9 (a.png) annotations[0]", "not_this_format"), ("task 9 (a.png) annotations[1]", "not_this_format"),
        ("a.png", "image_missing")]


@pytest.mark.parametrize("content, says", [
    (b"[{\"data\": ", "not valid JSON (line 1, column 11"),
    (b"{\"images\": [], \"annotations\": []}", "a JSON dict, not a list"),
    (b"[1, 2]", "none of its 2 entries is a task"),
    (b"[" * 100_000, "nested too deeply"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[" + b"1" * 5000 + b"]", "unreadable JSON"),
])
def test_not_label_studio_is_a_clear_error(tmp_path, content, says):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(AlodError) as e:
        ls.read(path, _sample_task([("a.png", 10, 10)], CLASSES))
    assert str(path) in str(e.value) and says in str(e.value) and "Label Studio" in str(e.value)
    assert not ls.sniff(path)


def test_missing_file_and_folder_are_clear_errors(tmp_path):
    task = _sample_task([("a.png", 10, 10)], CLASSES)
    with pytest.raises(AlodError, match="no such file"):
        ls.read(tmp_path / "nope.json", task)
    with pytest.raises(AlodError, match="is a folder"):
        ls.read(tmp_path, task)


def test_export_refuses_names_outside_the_image_root(tmp_path):
    for name in ("../evil.png", "/tmp/evil.png", "a/../../evil.png"):
        src = write_png(tmp_path / "src.png", 10, 10, "red")
        task = ExportTask([ExportImage(name, src, 10, 10)], CLASSES, 0, "r")
        with pytest.raises(AlodError, match="not a relative path inside the image root"):
            ls.export(task, tmp_path / "out" / "deep")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()


def test_sniff(tmp_path, shared_data):
    out = tmp_path / "export"
    ls.export(_task(tmp_path), out)
    assert ls.sniff(out / "tasks.json")
    assert ls.sniff(shared_data / "annotation_samples/label_studio/data.json")
    assert not ls.sniff(out / "label_config.xml") and not ls.sniff(out) and not ls.sniff(tmp_path / "nope.json")
    (tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert not ls.sniff(tmp_path / "coco.json")


def test_export_passes_label_studios_own_validation(tmp_path):
    interface = pytest.importorskip(
        "label_studio_sdk.label_interface",
        reason="label-studio-sdk is not installed (kept out of requirements.txt: it pulls opencv, pandas, nltk); "
               "pip install label-studio-sdk to run Label Studio's own checks of the export")
    out = tmp_path / "export"
    ls.export(_task(tmp_path), out)
    li = interface.LabelInterface((out / "label_config.xml").read_text())
    li.validate()  # raises on an invalid labeling config
    tasks = json.loads((out / "tasks.json").read_text())
    for t in tasks:
        assert t["data"].get("image")  # the config's $image
        for p in t["predictions"]:
            assert li.validate_prediction(p, return_errors=True) == []
    # The annotation the round-trip test submits is valid too; a wrong label is not.
    regions = copy.deepcopy(tasks[1]["predictions"][0]["result"])
    assert li.validate_annotation({"result": regions})
    regions[0]["value"]["rectanglelabels"] = ["truck"]
    assert not li.validate_annotation({"result": regions})
