"""YOLO export and import (alod.annotate.yolo): the exported files, a round trip, agreement with the
YOLO label reader (alod.data.yolo), a tool's zip with its own class order and upload-prefixed file
names, junk lines, and hostile input (zip path traversal, links, broken class files)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from alod.annotate import yolo
from alod.annotate.formats import detect_format
from alod.data.yolo import read_yolo
from alod.utils import AlodError
from alod_testing import EXPORT_CLASSES, export_task

CLASSES = EXPORT_CLASSES


def kinds(result):
    return [(p.where, p.kind) for p in result.problems]


def test_export_layout_and_files(tmp_path):
    task = export_task(tmp_path)
    out = tmp_path / "export"
    assert yolo.export(task, out) == [out]
    assert (out / "classes.txt").read_text() == "car\nperson\nbike\n"
    assert yaml.safe_load((out / "data.yaml").read_text()) == {"train": "images", "val": "images", "nc": 3,
                                                              "names": ["car", "person", "bike"]}
    assert (out / "labels/cam1/a.txt").read_text() == (
        "0 0.19531250 0.37500000 0.23437500 0.50000000\n1 0.70312500 0.52083333 0.46875000 0.62500000\n")
    assert (out / "images/cam2/deep/c.png").is_symlink() and (out / "labels/cam2/deep/c.txt").is_file()
    assert yolo.sniff(out) and detect_format(out).name == "yolo"


def test_round_trip_and_the_reader_agrees(tmp_path):
    specs = [("a.png", 64, 48, [[0.123456, 1, 63.99, 47.5], [10, 10, 20, 20]], [2, 3], [0.5, 0.4]),
             ("sub/e.jpg", 30, 20, [], [], [])]
    task = export_task(tmp_path, specs)
    out = tmp_path / "export"
    yolo.export(task, out)
    assert (out / "labels/sub/e.txt").read_text() == ""  # a file for every image, empty or not
    res = yolo.read(out, task)
    assert res.format == "yolo" and res.problems == []
    np.testing.assert_allclose(res.boxes["a.png"], specs[0][3], rtol=0, atol=1e-6)
    assert res.labels["a.png"].tolist() == [2, 3] and res.boxes["sub/e.jpg"].shape == (0, 4)
    ix = read_yolo(out / "labels", image_root=out / "images").index  # the data reader: the same boxes
    assert ix.names.tolist() == ["a.png", "sub/e.jpg"] and ix.classes == CLASSES
    np.testing.assert_allclose(ix.boxes, res.boxes["a.png"], rtol=0, atol=1e-12)


def test_a_tools_zip_with_its_own_class_order(tmp_path):
    """As Label Studio exports YOLO: classes.txt sorted by name, upload-prefixed label file names,
    notes.json beside; ids are named by the file's class list, not the export's order."""
    task = export_task(tmp_path)
    z = tmp_path / "project-1-at-2024.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("classes.txt", "bike\ncar\nperson\n")
        zf.writestr("notes.json", "{}")
        zf.writestr("labels/1a2b3c4d-a.txt", "1 0.5 0.5 0.5 0.5\n2 0.25 0.25 0.1 0.1\n")
        zf.writestr("labels/b.txt", "0 0.5 0.5 0.5 0.5\n")
        zf.writestr("labels/deep/c.txt", "")
    assert yolo.sniff(z) and detect_format(z).name == "yolo"
    res = yolo.read(z, task)
    assert res.problems == []
    assert res.labels["cam1/a.png"].tolist() == [1, 2] and res.labels["b.png"].tolist() == [3]
    np.testing.assert_allclose(res.boxes["cam1/a.png"][0], [16, 12, 48, 36])
    assert res.boxes["cam2/deep/c.png"].shape == (0, 4)


def test_junk_lines_and_files(tmp_path):
    task = export_task(tmp_path)
    d = tmp_path / "answer"
    (d / "labels").mkdir(parents=True)
    (d / "data.yaml").write_text("names: [car, person, truck]\n")
    (d / "labels/a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"          # good
        "0 0.5\n"                      # wrong field count
        "0 0.1 0.1 0.2 0.1 0.2 0.2\n"  # a segmentation polygon
        "x 0.5 0.5 0.1 0.1\n"          # class id not an integer
        "7 0.5 0.5 0.1 0.1\n"          # class id outside the class file
        "2 0.5 0.5 0.1 0.1\n"          # a class the dataset does not have
        "0 a b c d\n"                  # coordinates not numbers
        "0 nan 0.5 0.1 0.1\n"          # not finite
        "0 1.5 0.5 0.1 0.1\n"          # outside the image
        "\n"
        "0 0.5 0.5 0.2 0.2 0.9\n")     # a prediction's confidence column
    (d / "labels/b.txt").write_bytes(b"0 0.5 0.5 0.1 0.1 \xff\n")   # not UTF-8
    (d / "labels/zzz.txt").write_text("0 0.5 0.5 0.1 0.1\n")       # no such image
    (d / "train.txt").write_text("images/a.png\n")               # an image list, not labels
    (d / "labels/link.txt").symlink_to(tmp_path / "elsewhere.txt")
    res = yolo.read(d, task)
    assert kinds(res) == [
        ("labels/a.txt line 2", "not_this_format"), ("labels/a.txt line 3", "not_a_box"),
        ("labels/a.txt line 4", "not_this_format"), ("labels/a.txt line 5", "unknown_category"),
        ("labels/a.txt line 6", "unknown_category"), ("labels/a.txt line 7", "degenerate_box"),
        ("labels/a.txt line 8", "degenerate_box"), ("labels/a.txt line 9", "box_outside_image"),
        ("labels/a.txt line 11", "not_this_format"),
        ("labels/b.txt", "not_this_format"), ("labels/link.txt", "not_this_format"),
        ("labels/zzz.txt", "image_not_asked_for"),
        ("b.png", "image_missing"), ("cam2/deep/c.png", "image_missing"),  # no readable label file: not answered
    ]
    assert res.boxes == {"cam1/a.png": res.boxes["cam1/a.png"]}
    np.testing.assert_allclose(res.boxes["cam1/a.png"], [[25.6, 19.2, 38.4, 28.8]])
    assert {p.file for p in res.problems[:9]} == {str(d / "labels/a.txt")}


@pytest.mark.parametrize("files,match", [
    ({"labels/a.txt": "0 0.5 0.5 0.1 0.1\n"}, "no class file"),
    ({"classes.txt": "car\n\nbike\n", "labels/a.txt": ""}, "line 2 is blank"),
    ({"classes.txt": "car\ncar\n", "labels/a.txt": ""}, "repeated"),
    ({"data.yaml": "names: !!python/object/apply:os.system ['true']\n", "labels/a.txt": ""}, "not valid YAML"),
    ({"classes.txt": "car\n"}, "no YOLO label file"),
])
def test_broken_answers_are_refused_whole(tmp_path, files, match):
    task = export_task(tmp_path)
    d = tmp_path / "answer"
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    with pytest.raises(AlodError, match=match):
        yolo.read(d, task)
    if (d / "labels" / "a.txt").is_file():
        with pytest.raises(AlodError, match="cannot be imported alone"):
            yolo.read(d / "labels" / "a.txt", task)


def test_zip_traversal_and_duplicates(tmp_path):
    task = export_task(tmp_path)
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("obj.names", "car\nperson\nbike\n")
        zf.writestr("../../etc/b.txt", "0 0.5 0.5 0.1 0.1\n")
        zf.writestr("/abs/b.txt", "0 0.5 0.5 0.1 0.1\n")
        zf.writestr("obj_train_data/b.txt", "0 0.5 0.5 0.5 0.5\n")
        zf.writestr("other/b.txt", "1 0.5 0.5 0.5 0.5\n")
    res = yolo.read(z, task)
    assert kinds(res)[:4] == [("../../etc/b.txt", "unsafe_image_name"), ("/abs/b.txt", "unsafe_image_name"),
                              ("other/b.txt", "duplicate_image"), ("cam1/a.png", "image_missing")]
    assert res.labels["b.png"].tolist() == [1]  # the first file (sorted names) is kept


def test_export_refuses_what_cannot_round_trip(tmp_path):
    task = export_task(tmp_path, [("x.png", 10, 10, [], [], []), ("x.jpg", 10, 10, [], [], [])])
    with pytest.raises(AlodError, match="would share the YOLO label file x.txt"):
        yolo.export(task, tmp_path / "out")
    task = export_task(tmp_path, [("x.png", 10, 10, [], [], [])], classes=("car ", "a"))
    with pytest.raises(AlodError, match="cannot be lines of classes.txt"):
        yolo.export(task, tmp_path / "out")
    assert not (tmp_path / "out").exists()
