"""COCO instances JSON: export structure, pycocotools reads it, a tool's round trip (renumbered ids,
crowd regions, polygons), and hostile input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alod.annotate import coco
from alod.annotate.core import ExportImage, ExportTask, ImportProblem
from alod.utils import AlodError
from alod_testing import write_png

CLASSES = ("car", "person")


def _task(tmp_path: Path) -> ExportTask:
    src = tmp_path / "dataset"
    return ExportTask(
        images=[
            ExportImage("sub/b.png", write_png(src / "sub/b.png", 160, 80, "red"), 160, 80,
                        boxes=np.array([[40.0, 20.0, 120.0, 60.0]]), labels=np.array([2]), scores=np.array([0.5]),
                        priority=5.0),
            ExportImage("a.png", write_png(src / "a.png", 200, 100, "green"), 200, 100,
                        boxes=np.array([[20.0, 10.0, 60.0, 50.0], [100.0, 20.0, 140.0, 80.0]]),
                        labels=np.array([1, 2]), scores=np.array([0.9, 0.75]), priority=3.0),
            ExportImage("c.png", write_png(src / "c.png", 100, 50, "blue"), 100, 50, priority=1.0),
        ],
        classes=CLASSES, cycle=3, run="demo")


def _rows(problems):
    return [(p.where, p.kind) for p in problems]


def test_export_structure_and_pycocotools(tmp_path):
    task = _task(tmp_path)
    out = tmp_path / "export"
    assert coco.export(task, out) == [out / "annotations.json"]
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["images"] == [{"id": 1, "file_name": "sub/b.png", "width": 160, "height": 80},
                             {"id": 2, "file_name": "a.png", "width": 200, "height": 100},
                             {"id": 3, "file_name": "c.png", "width": 100, "height": 50}]
    assert doc["categories"] == [{"id": 1, "name": "car", "supercategory": ""},
                                 {"id": 2, "name": "person", "supercategory": ""}]
    base = {"iscrowd": 0, "segmentation": []}
    assert doc["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [40.0, 20.0, 80.0, 40.0], "area": 3200.0, "score": 0.5, **base},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20.0, 10.0, 40.0, 40.0], "area": 1600.0, "score": 0.9, **base},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [100.0, 20.0, 40.0, 60.0], "area": 2400.0, "score": 0.75, **base},
    ]
    assert doc["licenses"] == [] and "cycle 3" in doc["info"]["description"]
    for im in task.images:
        assert (out / "images" / im.name).read_bytes() == im.path.read_bytes()

    from pycocotools.coco import COCO

    api = COCO(str(out / "annotations.json"))
    assert [api.imgs[i]["file_name"] for i in api.getImgIds()] == ["sub/b.png", "a.png", "c.png"]
    assert [api.cats[i]["name"] for i in api.getCatIds()] == ["car", "person"]
    anns = api.loadAnns(api.getAnnIds(imgIds=[2]))
    assert [(a["bbox"], a["category_id"]) for a in anns] == [([20.0, 10.0, 40.0, 40.0], 1), ([100.0, 20.0, 40.0, 60.0], 2)]
    assert api.getAnnIds(imgIds=[3]) == []


def test_export_symlinks(tmp_path):
    task = _task(tmp_path)
    coco.export(task, tmp_path / "export", copy_images=False)
    for im in task.images:
        link = tmp_path / "export" / "images" / im.name
        assert link.is_symlink() and link.resolve() == im.path.resolve()


def test_round_trip_through_a_tool(tmp_path):
    task = _task(tmp_path)
    out = tmp_path / "export"
    coco.export(task, out)
    doc = json.loads((out / "annotations.json").read_text())
    # The tool renumbers categories and images, prefixes the folder, drops score, and writes what was
    # drawn: a.png's car moved 10 px right, its person deleted, a person added, a crowd region, a
    # polygon without bbox and one with; sub/b.png's person relabelled "truck"; c.png left out.
    edited = {
        "images": [{"id": 10, "file_name": "images/a.png", "width": 200, "height": 100},
                   {"id": 11, "file_name": "images/sub/b.png", "width": 160, "height": 80}],
        "categories": [{"id": 0, "name": "person"}, {"id": 1, "name": "car"}, {"id": 2, "name": "truck"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [30, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 0, "bbox": [140, 50, 50, 30], "area": 1500, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 0, "bbox": [0, 60, 80, 40], "iscrowd": 1,
             "segmentation": {"counts": [0, 10], "size": [100, 200]}},
            {"id": 4, "image_id": 10, "category_id": 0, "segmentation": [[1, 1, 9, 1, 5, 9]], "iscrowd": 0},
            {"id": 5, "image_id": 10, "category_id": 0, "segmentation": [[0, 0, 10, 0, 10, 10]], "bbox": [0, 0, 10, 10]},
            {"id": 6, "image_id": 11, "category_id": 2, "bbox": [40, 20, 80, 40], "area": 3200, "iscrowd": 0},
        ],
    }
    assert doc["images"][1]["file_name"] == "a.png"
    answer = tmp_path / "instances_default.json"
    answer.write_text(json.dumps(edited))

    result = coco.read(answer, task)
    assert result.format == "coco"
    assert sorted(result.boxes) == ["a.png", "sub/b.png"]
    np.testing.assert_array_equal(result.boxes["a.png"], [[30, 10, 70, 50], [140, 50, 190, 80], [0, 0, 10, 10]])
    np.testing.assert_array_equal(result.labels["a.png"], [1, 2, 2])
    assert result.boxes["sub/b.png"].shape == (0, 4)
    f = str(answer)
    assert result.problems == [
        ImportProblem(f, "annotation 3 (image 'a.png')", "not_a_box", "a crowd region (iscrowd: 1) covers a group "
                      "of objects; alod labels are single objects, so it is skipped"),
        ImportProblem(f, "annotation 4 (image 'a.png')", "not_a_box",
                      "no 'bbox' (a segmentation or keypoints only annotation); skipped"),
        ImportProblem(f, "annotation 6 (image 'sub/b.png')", "unknown_category",
                      "category 'truck' is not one of the dataset's classes (car, person)"),
        ImportProblem(f, "c.png", "image_missing", "exported but not in this file"),
    ]


def test_the_unchanged_export_reads_back_as_its_pre_annotations(tmp_path):
    task = _task(tmp_path)
    coco.export(task, tmp_path / "export")
    result = coco.read(tmp_path / "export", task)  # the folder: its annotations.json
    for im in task.images:
        np.testing.assert_array_equal(result.boxes[im.name], im.boxes.reshape(-1, 4))
        np.testing.assert_array_equal(result.labels[im.name], im.labels)
    assert result.boxes["c.png"].shape == (0, 4)  # an image record without annotations: annotated, empty
    assert result.problems == []


def test_hostile_records(tmp_path):
    task = ExportTask([ExportImage("a.png", Path("/nonexistent/a.png"), 200, 100),
                       ExportImage("b.png", Path("/nonexistent/b.png"), 200, 100)], CLASSES, 0, "r")
    doc = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 200, "height": 100},
            {"id": 2, "file_name": "../a.png"},
            {"id": 3, "file_name": "/etc/passwd"},
            {"id": 4, "file_name": "C:/data/a.png"},
            {"id": 5, "file_name": "b.png", "width": 100, "height": 200},
            {"id": 6, "file_name": "zzz.png"},
            {"id": 7, "file_name": "images/a.png"},
            {"id": 1, "file_name": "b.png"},
            {"file_name": 3},
            "nope",
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 1, "name": "person"}, {"name": "x"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": ["a", 1, 2, 3]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4]},
            {"id": 3, "image_id": 1, "category_id": 42, "bbox": [1, 2, 3, 4]},
            {"id": 4, "image_id": 1, "category_id": [1], "bbox": [1, 2, 3, 4]},
            {"id": 5, "image_id": 999, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 6, "image_id": {}, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10 ** 400, 0, 1, 1]},
            {"id": 8, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
            {"id": 9, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [190, 90, 30, 30]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
            17,
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    result = coco.read(path, task)
    assert list(result.boxes) == ["a.png"]
    np.testing.assert_array_equal(result.boxes["a.png"], [[1, 2, 4, 6]])
    assert _rows(result.problems) == [
        ("category 1", "not_this_format"), ("categories[2]", "not_this_format"),
        ("image 2 ('../a.png')", "unsafe_image_name"), ("image 3 ('/etc/passwd')", "unsafe_image_name"),
        ("image 4 ('C:/data/a.png')", "unsafe_image_name"), ("image 5 ('b.png')", "image_not_asked_for"),
        ("image 6 ('zzz.png')", "image_not_asked_for"), ("image 7 ('images/a.png')", "duplicate_image"),
        ("image 1 ('b.png')", "not_this_format"), ("images[8]", "not_this_format"), ("images[9]", "not_this_format"),
        ("annotation 1 (image 'a.png')", "degenerate_box"), ("annotation 2 (image 'a.png')", "degenerate_box"),
        ("annotation 3 (image 'a.png')", "unknown_category"), ("annotation 4 (image 'a.png')", "unknown_category"),
        ("annotation 5", "image_not_asked_for"), ("annotation 6", "image_not_asked_for"),
        ("annotation 7 (image 'a.png')", "degenerate_box"), ("annotation 8 (image 'a.png')", "degenerate_box"),
        ("annotation 10 (image 'a.png')", "box_outside_image"), ("annotations[11]", "not_this_format"),
        ("b.png", "image_missing"),
    ]
    assert result.problems[5].detail == ("the file's image is 100x200 but the exported 'b.png' is 200x100 (another "
                                         "picture, or rotated or resized by the tool); skipped")


@pytest.mark.parametrize("content, says", [
    (b"{\"images\": [", "not valid JSON (line 1, column 13"),
    (b"[{\"data\": {}}]", "a JSON list, not an object"),
    (b"{\"images\": [], \"categories\": []}", "no 'annotations' list"),
    (b"{\"images\": {}, \"annotations\": [], \"categories\": []}", "no 'images' list"),
    (b"[" * 100_000, "nested too deeply"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_not_coco_is_a_clear_error(tmp_path, content, says):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(AlodError) as e:
        coco.read(path, _task_without_images())
    assert str(path) in str(e.value) and says in str(e.value) and "COCO" in str(e.value)


def _task_without_images():
    return ExportTask([ExportImage("a.png", Path("/nonexistent/a.png"), 10, 10)], CLASSES, 0, "r")


def test_folder_without_annotations_is_a_clear_error(tmp_path):
    with pytest.raises(AlodError, match="a folder without annotations.json"):
        coco.read(tmp_path, _task_without_images())
    with pytest.raises(AlodError, match="no such file"):
        coco.read(tmp_path / "nope.json", _task_without_images())


def test_export_refuses_unsafe_names_and_bad_pre_annotations(tmp_path):
    src = write_png(tmp_path / "src.png", 10, 10, "red")
    for image, says in [
        (ExportImage("../evil.png", src, 10, 10), "not a relative path inside the image root"),
        (ExportImage("/abs/evil.png", src, 10, 10), "not a relative path inside the image root"),
        (ExportImage("a.png", src, 10, 10, boxes=np.ones((1, 4)), labels=np.array([3])), "labels must be in 1..2"),
        (ExportImage("a.png", src, 10, 10, boxes=np.ones((2, 4)), labels=np.array([1])), "2 boxes, 1 labels"),
        (ExportImage("a.png", src, 10, 10, priority=float("nan")), "priority nan is not a finite number"),
        (ExportImage("a.png", tmp_path / "gone.png", 10, 10), "not found"),
    ]:
        with pytest.raises(AlodError, match=says):
            coco.export(ExportTask([image], CLASSES, 0, "r"), tmp_path / "out")
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "out" / "annotations.json").exists()


def test_sniff(tmp_path, shared_data):
    out = tmp_path / "export"
    coco.export(_task(tmp_path), out)
    assert coco.sniff(out / "annotations.json") and coco.sniff(out)
    assert not coco.sniff(shared_data / "annotation_samples/label_studio/data.json")
    assert not coco.sniff(shared_data / "annotation_samples/labelme/Mandrill.json")
    (tmp_path / "bad.json").write_bytes(b"\x00\x01")
    assert not coco.sniff(tmp_path / "bad.json") and not coco.sniff(tmp_path / "nope.json")
