"""LabelMe export and import (alod.annotate.labelme): a round trip with an annotator's edits, the
real files in annotation_samples/labelme, the exported JSON against labelme's own reader rules,
and hostile input."""
from __future__ import annotations

import json
import os
from pathlib import Path, PureWindowsPath

import numpy as np
import pytest
from PIL import Image

from alod.annotate import labelme
from alod.annotate.core import ExportImage, ExportTask
from alod.annotate.formats import detect_format
from alod.utils import AlodError
from alod_testing import EXPORT_CLASSES, EXPORT_SPECS, export_task

CLASSES, SPECS = EXPORT_CLASSES, EXPORT_SPECS


def make_task(tmp_path: Path, specs=SPECS, classes=CLASSES) -> ExportTask:
    return export_task(tmp_path, specs, classes, cycle=1)


def rect(label, p1, p2, **extra):
    return {"label": label, "points": [list(p1), list(p2)], "group_id": None, "description": "",
            "shape_type": "rectangle", "flags": {}, **extra}


def edit(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def problems(result, root: Path | None = None):
    """(file relative to root, where, kind) of every problem."""
    def rel(f):
        return Path(f).relative_to(root).as_posix() if root is not None and Path(f) != root else f
    return [(rel(p.file), p.where, p.kind) for p in result.problems]


def test_round_trip_with_an_annotators_edits(tmp_path):
    task = make_task(tmp_path)
    out = tmp_path / "export"
    assert labelme.export(task, out) == [out]
    assert (out / "cam1" / "a.png").is_symlink() and (out / "cam2" / "deep" / "c.json").is_file()
    assert os.readlink(out / "b.png") == str((tmp_path / "dataset" / "b.png").resolve())

    def edit_a(doc):
        doc["shapes"][0]["points"] = [[6, 7], [21, 31]]                      # moved
        del doc["shapes"][1]                                                  # deleted
        doc["shapes"].append(rect("person", (40, 20), (10, 2)))               # added, corners reversed
        doc["shapes"].append(rect("car", (-1, 0), (64.5, 10)))                # a drag past the border: clipped

    def edit_b(doc):
        doc["shapes"][0]["label"] = "truck"                                   # not a dataset class
        doc["shapes"].append({"label": "car", "points": [[1, 1], [9, 1], [5, 8]], "shape_type": "polygon",
                              "group_id": None, "description": "", "flags": {}})

    edit(out / "cam1" / "a.json", edit_a)
    edit(out / "b.json", edit_b)
    (out / "cam2" / "deep" / "c.json").unlink()                              # not answered

    res = labelme.read(out, task)
    assert res.format == "labelme"
    assert sorted(res.boxes) == ["b.png", "cam1/a.png"]
    np.testing.assert_array_equal(res.boxes["cam1/a.png"], [[6, 7, 21, 31], [10, 2, 40, 20], [0, 0, 64, 10]])
    np.testing.assert_array_equal(res.labels["cam1/a.png"], [1, 2, 1])
    assert res.boxes["b.png"].shape == (0, 4) and res.labels["b.png"].dtype == np.int64
    assert res.labels["b.png"].tolist() == []
    assert problems(res, out) == [
        ("b.json", "shapes[0] 'truck'", "unknown_category"),
        ("b.json", "shapes[1] 'car'", "not_a_box"),
        (str(out), "cam2/deep/c.png", "image_missing"),
    ]

    # one JSON alone: its image is found by the exported name it ends with
    one = labelme.read(out / "cam1" / "a.json", task)
    assert list(one.boxes) == ["cam1/a.png"]
    np.testing.assert_array_equal(one.boxes["cam1/a.png"], res.boxes["cam1/a.png"])
    assert [(p.where, p.kind) for p in one.problems] == [("b.png", "image_missing"),
                                                         ("cam2/deep/c.png", "image_missing")]

    # labels saved apart from the images (labelme --output, Windows separators) still match
    moved = tmp_path / "moved"
    moved.mkdir()
    doc = json.loads((out / "b.json").read_text())
    doc["imagePath"] = "..\\export\\b.png"
    (moved / "b.json").write_text(json.dumps(doc))
    assert [p.kind for p in labelme.read(moved, task).problems].count("unsafe_image_name") == 1
    doc["imagePath"] = "export\\b.png"
    (moved / "b.json").write_text(json.dumps(doc))
    assert list(labelme.read(moved, task).boxes) == ["b.png"]


def test_real_labelme_files(shared_data):
    folder = shared_data / "annotation_samples" / "labelme"
    mandrill = json.loads((folder / "Mandrill.json").read_text())
    classes = tuple(dict.fromkeys(s["label"] for s in mandrill["shapes"]))
    assert classes == ("Eye", "Groove", "Iris", "Nose", "EyeBrow", "Nostril", "Glabella")
    task = ExportTask([ExportImage("Mandrill.jpg", folder / "Mandrill.jpg", mandrill["imageWidth"],
                                   mandrill["imageHeight"])], classes, 0, "real")
    res = labelme.read(folder / "Mandrill.json", task)
    np.testing.assert_array_equal(res.boxes["Mandrill.jpg"],
                                  [[82.38213399503722, 169.57320099255584, 160.04962779156328, 223.66749379652607]])
    assert res.labels["Mandrill.jpg"].tolist() == [4]  # Nose
    expected = [(str(folder / "Mandrill.json"), f"shapes[{i}] {s['label']!r}", "not_a_box")
                for i, s in enumerate(mandrill["shapes"]) if s["shape_type"] != "rectangle"]
    assert len(expected) == 14
    assert problems(res) == expected
    assert "a polygon shape" in res.problems[0].detail and "a point shape" in res.problems[-1].detail

    # 2-point shapes without shape_type are boxes (see the module docstring)
    task = ExportTask([ExportImage("cover_source.jpg", folder / "cover_source.jpg", 2400, 1918)],
                      ("person", "bicycle", "car", "traffic light"), 0, "real")
    res = labelme.read(folder / "cover_source.json", task)
    np.testing.assert_array_equal(res.boxes["cover_source.jpg"], [
        [1868, 1201, 2394, 1917], [1764, 1111, 1930, 1469], [1218, 1197, 1744, 1917], [866, 1075, 1070, 1569],
        [698, 1291, 1158, 1591], [564, 1113, 810, 1257], [1106, 861, 1248, 993]])
    assert res.labels["cover_source.jpg"].tolist() == [1, 1, 1, 1, 2, 3, 4]
    assert res.problems == []

    # the whole folder: both files, the same boxes and problems
    task = ExportTask([ExportImage("Mandrill.jpg", folder / "Mandrill.jpg", 256, 256),
                       ExportImage("cover_source.jpg", folder / "cover_source.jpg", 2400, 1918)],
                      classes + ("person", "bicycle", "car", "traffic light"), 0, "real")
    res = labelme.read(folder, task)
    assert sorted(res.boxes) == ["Mandrill.jpg", "cover_source.jpg"]
    assert len(res.boxes["cover_source.jpg"]) == 7 and len(res.boxes["Mandrill.jpg"]) == 1
    assert [p.kind for p in res.problems] == ["not_a_box"] * 14
    assert labelme.sniff(folder) and labelme.sniff(folder / "cover_source.json")


def _read_like_labelme(json_path: Path) -> dict:
    """The checks of labelme 6.3.1's ``labelme/_label_file.py`` (read_label_file and
    _load_shape_json_obj), without its Qt and onnxruntime dependencies."""
    raw = json.loads(json_path.read_text(encoding="utf-8"))
    image_path = PureWindowsPath(raw["imagePath"]).as_posix()
    assert raw["imageData"] is None
    with Image.open(json_path.parent / image_path) as im:  # labelme loads the image beside the JSON
        assert im.size == (raw["imageWidth"], raw["imageHeight"])
    for s in raw["shapes"]:
        assert isinstance(s["label"], str)
        assert isinstance(s["points"], list) and s["points"]
        assert all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
                   for p in s["points"])
        assert isinstance(s["shape_type"], str)
        assert isinstance(s["flags"], dict) and all(isinstance(k, str) and isinstance(v, bool)
                                                     for k, v in s["flags"].items())
        assert s.get("description") is None or isinstance(s["description"], str)
        assert s.get("group_id") is None or isinstance(s["group_id"], int)
    assert isinstance(raw.get("flags") or {}, dict)
    assert raw["version"].startswith("5.")
    return raw


def test_exported_files_follow_labelmes_reader(tmp_path):
    task = make_task(tmp_path)
    out = tmp_path / "export"
    labelme.export(task, out, copy_images=True)
    assert not (out / "cam1" / "a.png").is_symlink()
    assert (out / "cam1" / "a.png").read_bytes() == (tmp_path / "dataset" / "cam1" / "a.png").read_bytes()
    for name in ("cam1/a.json", "b.json", "cam2/deep/c.json"):
        _read_like_labelme(out / name)
    assert json.loads((out / "cam2" / "deep" / "c.json").read_text()) == {
        "version": labelme.LABELME_VERSION,
        "flags": {},
        "shapes": [{"label": "car", "points": [[1.5, 2.0], [3.0, 4.25]], "group_id": None,
                    "description": '{"score": 0.5}', "shape_type": "rectangle", "flags": {}}],
        "imagePath": "c.png",
        "imageData": None,
        "imageHeight": 70,
        "imageWidth": 50,
    }
    # unedited, the export reads back as the pre-annotations
    res = labelme.read(out, task)
    for im in task.images:
        np.testing.assert_array_equal(res.boxes[im.name], im.boxes)
        np.testing.assert_array_equal(res.labels[im.name], im.labels)
    assert res.problems == []
    # exporting again over the same folder replaces the files (symlinks now), never writes through
    labelme.export(task, out, copy_images=False)
    assert (out / "cam1" / "a.png").is_symlink()
    assert labelme.sniff(out) and labelme.sniff(out / "b.json") and not labelme.sniff(out / "b.png")
    assert detect_format(out).name == "labelme"


def test_hostile_and_broken_input(tmp_path):
    task = make_task(tmp_path)
    d = tmp_path / "answers"
    (d / "sub").mkdir(parents=True)
    base = {"version": "5.0.1", "flags": {}, "imageData": None}

    def put(name, doc):
        (d / name).write_text(doc if isinstance(doc, str) else json.dumps({**base, **doc}))

    put("1.json", {"imagePath": "../../etc/passwd", "shapes": []})
    put("2.json", {"imagePath": "/etc/passwd", "shapes": []})
    put("3.json", {"imagePath": "C:\\Users\\x\\b.png", "shapes": []})
    put("4.json", "{not json")
    put("5.json", "[" * 100_000)
    put("6.json", {"imagePath": "cam1/a.png", "imageWidth": 640, "imageHeight": 480, "shapes": []})
    put("7.json", {"imagePath": "zzz.png", "shapes": []})
    put("8.json", {"imagePath": "b.png", "shapes": [
        rect(["car"], (1, 1), (5, 5)),
        rect("car", (1, 1), (10 ** 400, 5)),
        rect("car", ("1", 1), (5, 5)),
        {"label": "car", "points": [[1, 1], [2, 2], [3, 3]], "shape_type": "rectangle"},
        "not a shape",
        rect("car", (1, 1), (1, 5)),
        rect("car", (1, 1), (200, 5)),
        {"label": "car", "points": [[1, 2], [9, 8]]},
    ]})
    put("9.json", {"imagePath": "b.png", "shapes": []})
    put("sub/10.json", {"imagePath": "../../x.png", "shapes": []})
    (d / "link.json").symlink_to(tmp_path / "dataset" / "b.png")
    res = labelme.read(d, task)
    assert problems(res, d) == [
        ("link.json", "link.json", "not_this_format"),
        ("1.json", "imagePath '../../etc/passwd'", "unsafe_image_name"),
        ("2.json", "imagePath '/etc/passwd'", "unsafe_image_name"),
        ("3.json", "imagePath 'C:\\\\Users\\\\x\\\\b.png'", "unsafe_image_name"),
        ("4.json", "4.json", "not_this_format"),
        ("5.json", "5.json", "not_this_format"),
        ("6.json", "imagePath 'cam1/a.png'", "image_not_asked_for"),
        ("7.json", "imagePath 'zzz.png'", "image_not_asked_for"),
        ("8.json", "shapes[0] ['car']", "unknown_category"),
        ("8.json", "shapes[1] 'car'", "degenerate_box"),
        ("8.json", "shapes[2] 'car'", "degenerate_box"),
        ("8.json", "shapes[3] 'car'", "degenerate_box"),
        ("8.json", "shapes[4]", "not_this_format"),
        ("8.json", "shapes[5] 'car'", "degenerate_box"),
        ("8.json", "shapes[6] 'car'", "box_outside_image"),
        ("9.json", "imagePath 'b.png'", "duplicate_image"),
        ("sub/10.json", "imagePath '../../x.png'", "unsafe_image_name"),
        (str(d), "cam1/a.png", "image_missing"),
        (str(d), "cam2/deep/c.png", "image_missing"),
    ]
    assert "640x480" in res.problems[6].detail and "64x48" in res.problems[6].detail
    np.testing.assert_array_equal(res.boxes["b.png"], [[1, 2, 9, 8]])
    assert list(res.boxes) == ["b.png"]

    # a single broken file, a folder with no labelme file, a missing path: errors naming them
    with pytest.raises(AlodError, match="4.json: is not valid JSON"):
        labelme.read(d / "4.json", task)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlodError, match="no labelme JSON file found"):
        labelme.read(tmp_path / "empty", task)
    with pytest.raises(AlodError, match="does not exist"):
        labelme.read(tmp_path / "nope", task)
    assert not labelme.sniff(d / "4.json") and not labelme.sniff(tmp_path / "empty")

    # ambiguous names: two exported images share a basename, the answer names only the basename
    amb = make_task(tmp_path / "amb", [("p/x.png", 8, 8, [], [], []), ("q/x.png", 8, 8, [], [], [])])
    (tmp_path / "amb" / "x.json").write_text(json.dumps({"imagePath": "x.png", "shapes": []}))
    res = labelme.read(tmp_path / "amb" / "x.json", amb)
    assert [p.kind for p in res.problems] == ["image_not_asked_for", "image_missing", "image_missing"]
    assert "['p/x.png', 'q/x.png']" in res.problems[0].detail


@pytest.mark.parametrize("name, match", [
    ("../x.png", "not a plain relative path"), ("/abs/x.png", "absolute"), ("a\\b.png", "backslash"),
    ("a/./b.png", "not a plain relative path"), ("", "empty"),
])
def test_export_refuses_names_that_leave_the_folder(tmp_path, name, match):
    task = make_task(tmp_path, [("ok.png", 8, 8, [], [], [])])
    bad = ExportImage(name=name, path=task.images[0].path, width=8, height=8)
    out = tmp_path / "out" / "inner"
    with pytest.raises(AlodError, match=match):
        labelme.export(ExportTask([bad], CLASSES, 0, "t"), out)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.png").exists()


def test_export_refuses_shared_label_files_and_bad_labels(tmp_path):
    task = make_task(tmp_path, [("x.png", 8, 8, [], [], []), ("x.jpg", 8, 8, [], [], [])])
    with pytest.raises(AlodError, match="would share the labelme file 'x.json'"):
        labelme.export(task, tmp_path / "out")
    task = make_task(tmp_path, [("y.png", 8, 8, [[1, 1, 2, 2]], [4], [0.5])])
    with pytest.raises(AlodError, match=r"labels must lie in 1..3"):
        labelme.export(task, tmp_path / "out")
    task = make_task(tmp_path, [("y.png", 8, 8, [[1, 1, float("nan"), 2]], [1], [0.5])])
    with pytest.raises(AlodError, match="boxes must be finite"):
        labelme.export(task, tmp_path / "out")
    gone = ExportImage("z.png", tmp_path / "missing.png", 8, 8)
    with pytest.raises(AlodError, match="missing.png does not exist"):
        labelme.export(ExportTask([gone], CLASSES, 0, "t"), tmp_path / "out")
