"""CVAT for images 1.1 export and import (alod.annotate.cvat): a round trip with an annotator's
edits, the real files in annotation_samples/cvat, the exported XML against what CVAT's and
datumaro's readers require, and hostile XML (entities, DOCTYPE, bad names)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from alod.annotate import cvat
from alod.annotate.core import ExportImage, ExportTask
from alod.annotate.formats import detect_format
from alod.utils import AlodError
from alod_testing import EXPORT_CLASSES, EXPORT_SPECS, export_task

CLASSES, SPECS = EXPORT_CLASSES, EXPORT_SPECS


def make_task(tmp_path: Path, specs=SPECS, classes=CLASSES) -> ExportTask:
    return export_task(tmp_path, specs, classes, cycle=2)


def problems(result):
    return [(p.where, p.kind) for p in result.problems]


def xml_doc(images_xml: str, head: str = "") -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n{head}<annotations><version>1.1</version><meta/>'
            f"{images_xml}</annotations>")


def test_round_trip_with_an_annotators_edits(tmp_path):
    task = make_task(tmp_path)
    out = tmp_path / "export"
    assert cvat.export(task, out) == [out / "annotations.xml", out / "labels.json", out / "images"]
    assert (out / "images" / "cam2" / "deep" / "c.png").is_symlink()

    # what CVAT gives back after the annotator's work (edited the way CVAT writes)
    tree = ET.parse(out / "annotations.xml")
    a, b, c = tree.getroot().findall("image")
    a.set("name", "images/cam1/a.png")                  # the task was made from a zip holding images/
    box0, box1 = a.findall("box")
    box0.attrib.update(xtl="6.00", ytl="7.00", xbr="21.00", ybr="31.00", source="manual")    # moved
    a.remove(box1)                                                                           # deleted
    ET.SubElement(a, "box", label="person", source="manual", occluded="1", xtl="40", ytl="20", xbr="10", ybr="2",
                  z_order="0")                                                               # added
    ET.SubElement(a, "box", label="car", source="manual", occluded="0", xtl="10", ytl="10", xbr="30", ybr="20",
                  rotation="90", z_order="0")                                                # rotated
    b.find("box").set("label", "truck")                                                      # unknown class
    ET.SubElement(b, "polygon", label="car", points="1,1;9,1;5,8", occluded="0", z_order="0")
    tree.getroot().remove(c)                                                                 # not answered
    answer = tmp_path / "answer.xml"
    tree.write(answer, encoding="utf-8", xml_declaration=True)

    res = cvat.read(answer, task)
    assert res.format == "cvat" and sorted(res.boxes) == ["b.png", "cam1/a.png"]
    np.testing.assert_allclose(res.boxes["cam1/a.png"], [[6, 7, 21, 31], [10, 2, 40, 20], [15, 5, 25, 25]],
                               rtol=0, atol=1e-9)
    assert res.labels["cam1/a.png"].tolist() == [1, 2, 1]
    assert res.boxes["b.png"].shape == (0, 4) and res.labels["b.png"].tolist() == []
    assert problems(res) == [
        ("image id=0 name='images/cam1/a.png': <box> #2 'car'", "rotated_box"),
        ("image id=1 name='b.png': <box> #0 'truck'", "unknown_category"),
        ("image id=1 name='b.png': <polygon> #1 'car'", "not_a_box"),
        ("cam2/deep/c.png", "image_missing"),
    ]
    assert {p.file for p in res.problems} == {str(answer)}

    # the zip CVAT downloads, and a folder holding annotations.xml, read the same
    z = tmp_path / "task_1-cvat for images 1.1.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(answer, "annotations.xml")
    (tmp_path / "unzipped").mkdir()
    (tmp_path / "unzipped" / "annotations.xml").write_bytes(answer.read_bytes())
    for other in (z, tmp_path / "unzipped"):
        again = cvat.read(other, task)
        assert problems(again) == problems(res)
        for k in res.boxes:
            np.testing.assert_array_equal(again.boxes[k], res.boxes[k])
            np.testing.assert_array_equal(again.labels[k], res.labels[k])
    assert cvat.read(z, task).problems[0].file == f"{z}:annotations.xml"


def test_real_cvat_files(shared_data):
    folder = shared_data / "annotation_samples" / "cvat"
    images = []
    for name in ("img0.jpg", "img1.jpg"):
        with Image.open(folder / name) as im:
            images.append(ExportImage(name, folder / name, *im.size))
    assert [(im.width, im.height) for im in images] == [(8, 8), (10, 10)]
    task = ExportTask(images, ("label1", "label2"), 0, "real")

    res = cvat.read(folder / "annotations.xml", task)
    np.testing.assert_array_equal(res.boxes["img0.jpg"], [[0, 2, 4, 4]])
    assert res.labels["img0.jpg"].tolist() == [1]
    assert res.boxes["img1.jpg"].shape == (0, 4)
    assert problems(res) == [
        ("image id=0 name='img0.jpg' subset='Test': <polyline> #1 'label2'", "not_a_box"),
        ("image id=1 name='img1.jpg' subset='Test': <polygon> #0 'label1'", "not_a_box"),
        ("image id=1 name='img1.jpg' subset='Test': <points> #1 'label2'", "not_a_box"),
        ("image id=0 name='img0.jpg' subset='Train'", "duplicate_image"),
        ("image id=1 name='img1.jpg' subset='Train'", "duplicate_image"),
        ("image id=0 name='img0.jpg' subset='Validation'", "duplicate_image"),
        ("image id=1 name='img1.jpg' subset='Validation'", "duplicate_image"),
    ]

    res = cvat.read(folder / "train.xml", task)
    np.testing.assert_array_equal(res.boxes["img0.jpg"], [[0, 2, 4, 4]])
    assert res.labels["img0.jpg"].tolist() == [1] and res.labels["img1.jpg"].tolist() == []
    assert problems(res) == [
        ("image id=0 name='img0.jpg': <polyline> #1 ''", "not_a_box"),
        ("image id=1 name='img1.jpg': <polygon> #0 ''", "not_a_box"),
        ("image id=1 name='img1.jpg': <points> #1 'label2'", "not_a_box"),
    ]
    assert cvat.sniff(folder / "annotations.xml") and cvat.sniff(folder / "train.xml")
    assert not cvat.sniff(folder / "img0.jpg")


def test_exported_xml_is_what_cvat_and_datumaro_read(tmp_path):
    task = make_task(tmp_path)
    out = tmp_path / "export"
    cvat.export(task, out, copy_images=True)
    text = (out / "annotations.xml").read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>')
    root = ET.fromstring(text.encode())
    assert [el.tag for el in root] == ["version", "meta", "image", "image", "image"]
    meta_task = root.find("meta/task")  # datumaro's reader needs <meta> with label/name (and attribute specs)
    assert meta_task.findtext("name") == "t cycle 2" and meta_task.findtext("size") == "3"
    assert meta_task.findtext("mode") == "annotation" and meta_task.findtext("stop_frame") == "2"
    assert [lab.findtext("name") for lab in meta_task.iter("label")] == list(CLASSES)
    for lab in meta_task.iter("label"):
        assert [(a.findtext("name"), a.findtext("input_type")) for a in lab.iter("attribute")] == [("score", "text")]
    for i, (im, el) in enumerate(zip(task.images, root.findall("image"))):
        assert el.attrib == {"id": str(i), "name": im.name, "width": str(im.width), "height": str(im.height)}
        with Image.open(out / "images" / el.get("name")) as img:  # datumaro: images/<name>
            assert img.size == (im.width, im.height)
        assert not (out / "images" / im.name).is_symlink()
        got = [(b.attrib, [(a.get("name"), a.text) for a in b]) for b in el]
        want = [({"label": CLASSES[k - 1], "source": "auto", "occluded": "0", "xtl": f"{x1:.2f}", "ytl": f"{y1:.2f}",
                  "xbr": f"{x2:.2f}", "ybr": f"{y2:.2f}", "z_order": "0"}, [("score", f"{s:.3f}")])
                for (x1, y1, x2, y2), k, s in zip(im.boxes, im.labels, im.scores)]
        assert got == want
    assert root.find("image[@id='2']/box").attrib["xtl"] == "1.50"
    assert json.loads((out / "labels.json").read_text()) == [
        {"name": c, "attributes": [{"name": "score", "mutable": False, "input_type": "text", "default_value": "",
                                    "values": [""]}]} for c in CLASSES]
    # deterministic: the same task gives the same bytes; unedited it reads back as the pre-annotations
    before = (out / "annotations.xml").read_bytes()
    cvat.export(task, out)
    assert (out / "annotations.xml").read_bytes() == before and (out / "images" / "b.png").is_symlink()
    res = cvat.read(out, task)
    assert res.problems == []
    for im in task.images:
        np.testing.assert_array_equal(res.boxes[im.name], im.boxes)
        np.testing.assert_array_equal(res.labels[im.name], im.labels)
    assert cvat.sniff(out) and cvat.sniff(out / "annotations.xml") and detect_format(out).name == "cvat"


def test_names_with_xml_special_characters_round_trip(tmp_path):
    name = 'odd & "quoted" <dir>/x\u00e9.png'
    task = make_task(tmp_path, [(name, 16, 16, [[1, 1, 5, 5]], [2], [0.25])])
    cvat.export(task, tmp_path / "out")
    res = cvat.read(tmp_path / "out" / "annotations.xml", task)
    np.testing.assert_array_equal(res.boxes[name], [[1, 1, 5, 5]])
    assert res.problems == []


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE annotations [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<annotations><version>1.1</version><image id="0" name="&lol9;" width="80" height="60"/></annotations>
"""


@pytest.mark.parametrize("content, match", [
    (BILLION_LAUGHS, "DOCTYPE or entity declaration"),
    (('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
      '<annotations><image id="0" name="&x;"/></annotations>'), "DOCTYPE or entity declaration"),
    ("<annotations><image id='0' name='b.png'>", "not well-formed XML"),
    ("", "not well-formed XML"),
    ("<dataset><image/></dataset>", "root element is <dataset>"),
    ("<annotations><version>2.0</version></annotations>", "version '2.0'"),
])
def test_hostile_or_broken_xml_is_refused(tmp_path, content, match):
    task = make_task(tmp_path)
    p = tmp_path / "annotations.xml"
    p.write_text(content)
    with pytest.raises(AlodError, match=match) as e:
        cvat.read(p, task)
    assert str(p) in str(e.value)


def test_hostile_names_and_shapes_become_problems(tmp_path):
    task = make_task(tmp_path)
    p = tmp_path / "x.xml"
    p.write_text(xml_doc(
        '<image id="0" name="../../etc/passwd" width="80" height="60"/>'
        '<image id="1" name="/etc/passwd"/>'
        '<image id="2" name="C:\\data\\b.png"/>'
        '<image id="3" width="1" height="1"/>'
        '<image id="4" name="cam1/a.png" width="640" height="480">'
        '<box label="car" xtl="1" ytl="1" xbr="2" ybr="2"/></image>'
        '<image id="5" name="b.png" width="80" height="60">'
        '<box label="car" xtl="abc" ytl="1" xbr="5" ybr="5"/>'
        '<box label="car" xtl="nan" ytl="1" xbr="5" ybr="5"/>'
        '<box label="car" ytl="1" xbr="5" ybr="5"/>'
        '<box label="car" xtl="1" ytl="1" xbr="5" ybr="5" rotation="x"/>'
        '<box label="car" xtl="1" ytl="1" xbr="300" ybr="5"/>'
        '<box label="car" xtl="60" ytl="10" xbr="80" ybr="50" rotation="90"/>'
        '<tag label="car"/>'
        '<ellipse label="car" cx="5" cy="5" rx="2" ry="2"/>'
        '<box label="bike" xtl="2" ytl="3" xbr="4" ybr="5" rotation="0.0"/>'
        '</image>'
        '<track id="0" label="car"><box frame="0" xtl="1" ytl="1" xbr="2" ybr="2"/></track>'))
    res = cvat.read(p, task)
    assert problems(res) == [
        ("image id=0 name='../../etc/passwd'", "unsafe_image_name"),
        ("image id=1 name='/etc/passwd'", "unsafe_image_name"),
        ("image id=2 name='C:\\\\data\\\\b.png'", "unsafe_image_name"),
        ("image id=3 name=None", "not_this_format"),
        ("image id=4 name='cam1/a.png'", "image_not_asked_for"),
        ("image id=5 name='b.png': <box> #0 'car'", "degenerate_box"),
        ("image id=5 name='b.png': <box> #1 'car'", "degenerate_box"),
        ("image id=5 name='b.png': <box> #2 'car'", "degenerate_box"),
        ("image id=5 name='b.png': <box> #3 'car'", "degenerate_box"),
        ("image id=5 name='b.png': <box> #4 'car'", "box_outside_image"),
        ("image id=5 name='b.png': <box> #5 'car'", "box_outside_image"),   # its hull leaves the image
        ("image id=5 name='b.png': <tag> #6 'car'", "not_a_box"),
        ("image id=5 name='b.png': <ellipse> #7 'car'", "not_a_box"),
        ("<track> id=0", "not_this_format"),
        ("cam1/a.png", "image_missing"),
        ("cam2/deep/c.png", "image_missing"),
    ]
    np.testing.assert_array_equal(res.boxes["b.png"], [[2, 3, 4, 5]])
    assert res.labels["b.png"].tolist() == [3]


def test_missing_paths_and_zips_without_annotations(tmp_path):
    task = make_task(tmp_path)
    with pytest.raises(AlodError, match="does not exist"):
        cvat.read(tmp_path / "nope.xml", task)
    with pytest.raises(AlodError, match="holds no annotations.xml"):
        cvat.read(tmp_path / "dataset", task)
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("other.xml", "<annotations/>")
    with pytest.raises(AlodError, match="the zip holds no top-level annotations.xml"):
        cvat.read(z, task)
    assert not cvat.sniff(z) and not cvat.sniff(tmp_path / "nope.xml")


@pytest.mark.parametrize("name, cls, match", [
    ("../x.png", "car", "not a plain relative path"), ("/x.png", "car", "absolute"),
    ("a\x07.png", "car", "control character"), ("ok.png", "c\x01r", "control characters"),
])
def test_export_refuses_what_cannot_round_trip(tmp_path, name, cls, match):
    src = make_task(tmp_path, [("ok.png", 8, 8, [], [], [])]).images[0].path
    task = ExportTask([ExportImage(name, src, 8, 8)], (cls,), 0, "t")
    with pytest.raises(AlodError, match=match):
        cvat.export(task, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.png").exists()
