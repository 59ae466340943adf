"""Defects found in real annotation exports, handled once for every format (alod.annotate.core's
ImportBuilder): exact duplicate boxes (one kept, ``duplicate_box``) and boxes under one pixel
(kept, ``tiny_box``); and Label Studio annotations a reviewer rejected (``rejected_annotation``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from alod.annotate import labelstudio as ls
from alod.annotate.formats import format_names, get_format
from alod_testing import export_task

#: One image with a box, its exact duplicate, and a box 0.11 px high (as seen in a real export).
SPECS = [("a.png", 64, 48, [[5, 6, 20, 30], [5, 6, 20, 30], [10, 10, 30, 10.11]], [1, 1, 2], [0.9, 0.8, 0.7])]


def _answer(fmt: str, out, tmp_path):
    """What the tool gives back for the exported pre-annotations, accepted unchanged."""
    if fmt == "labelstudio":
        tasks = json.loads((out / "tasks.json").read_text())
        for k, t in enumerate(tasks, 1):
            t.update(id=k, annotations=[{"id": k, "result": t["predictions"][0]["result"], "was_cancelled": False}])
        path = tmp_path / "ls_export.json"
        path.write_text(json.dumps(tasks))
        return path
    return out


@pytest.mark.parametrize("fmt", ["labelme", "cvat", "coco", "labelstudio", "voc", "yolo"])
def test_duplicates_are_kept_once_and_tiny_boxes_kept_with_a_note(tmp_path, fmt):
    assert set(format_names()) == {"labelme", "cvat", "coco", "labelstudio", "voc", "yolo"}
    task = export_task(tmp_path, SPECS)
    out = tmp_path / "export"
    f = get_format(fmt)
    f.export(task, out, copy_images=True)
    res = f.read(_answer(fmt, out, tmp_path), task)
    assert [p.kind for p in res.problems] == ["duplicate_box", "tiny_box"], res.problems
    dup, tiny = res.problems
    assert "same class and coordinates; one is kept" in dup.detail
    assert "under one pixel; kept, by the label readers' rule for zero-area boxes" in tiny.detail
    assert "evaluation keeps such boxes" in tiny.detail and "so this one is trained on" in tiny.detail
    np.testing.assert_allclose(res.boxes["a.png"], [[5, 6, 20, 30], [10, 10, 30, 10.11]], rtol=0, atol=1e-3)
    assert res.labels["a.png"].tolist() == [1, 2]


def test_same_coordinates_other_class_is_no_duplicate(tmp_path):
    task = export_task(tmp_path, [("a.png", 64, 48, [[5, 6, 20, 30], [5, 6, 20, 30]], [1, 2], [0.9, 0.8])])
    get_format("coco").export(task, tmp_path / "out")
    res = get_format("coco").read(tmp_path / "out", task)
    assert res.problems == [] and res.labels["a.png"].tolist() == [1, 2]


# ------------------------------------------------------------------------------------ rejected in review
def _tasks(tmp_path, annotations_per_task: list[list[dict]]):
    task = export_task(tmp_path, [("a.png", 100, 50, [], [], []), ("b.png", 100, 50, [], [], [])])
    region = {"id": "r1", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
              "original_width": 100, "original_height": 50,
              "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["car"]}}
    doc = []
    for k, (im, anns) in enumerate(zip(task.images, annotations_per_task), 1):
        for a in anns:
            a.setdefault("result", [region])
            a.setdefault("was_cancelled", False)
        doc.append({"id": 10 + k, "data": {"image": f"/data/local-files/?d=images/{im.name}", "alod_name": im.name},
                    "annotations": anns})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc))
    return task, path


def test_rejected_annotations_are_not_labels(tmp_path):
    task, path = _tasks(tmp_path, [
        [{"id": 1, "completed_by": 7, "last_action": "rejected"}],
        [{"id": 2, "completed_by": 7, "reviews": [{"id": 5, "accepted": False}]}],
    ])
    res = ls.read(path, task)
    assert [(p.where, p.kind) for p in res.problems] == [
        ("task 11 (a.png) annotation 1", "rejected_annotation"), ("task 12 (b.png) annotation 2", "rejected_annotation"),
        ("a.png", "image_missing"), ("b.png", "image_missing")]
    assert "task 11: annotation 1 (completed_by 7) was rejected by a reviewer" in res.problems[0].detail
    assert "rejected in review" in res.problems[2].detail and res.boxes == {}


def test_a_later_fixed_and_accepted_annotation_is_taken(tmp_path):
    fixed = {"id": 3, "completed_by": 8, "last_action": "fixed_and_accepted", "reviews": [{"accepted": False}],
             "result": []}
    task, path = _tasks(tmp_path, [
        [{"id": 1, "completed_by": 7, "last_action": "rejected"}, fixed],
        [{"id": 2, "reviews": [{"accepted": False}, {"accepted": True}]}],  # rejected, then accepted
    ])
    res = ls.read(path, task)
    assert [(p.where, p.kind) for p in res.problems] == [("task 11 (a.png) annotation 1", "rejected_annotation")]
    assert res.boxes["a.png"].shape == (0, 4)  # the accepted annotation: annotated, and empty
    assert res.boxes["b.png"].tolist() == [[10, 10, 40, 30]]
