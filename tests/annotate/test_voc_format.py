"""Pascal VOC export and import (alod.annotate.voc): the exported files, a round trip with an
annotator's edits, agreement with the VOC label reader (alod.data.voc) on the export and on BCCD's
real files, and hostile input (entity bombs, DOCTYPEs, path traversal in <filename> and zip names)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from alod.annotate import voc
from alod.annotate.core import ExportImage, ExportTask
from alod.annotate.formats import detect_format
from alod.data.problems import ProblemLog
from alod.data.voc import read_voc
from alod.utils import AlodError
from alod_testing import EXPORT_CLASSES, EXPORT_SPECS, export_task

CLASSES = EXPORT_CLASSES


def problems(result, base=None):
    return [(p.where, p.kind) if base is None else (Path(p.file).relative_to(base).as_posix(), p.where, p.kind)
            for p in result.problems]


def test_export_layout_and_files(tmp_path):
    task = export_task(tmp_path, cycle=2)
    out = tmp_path / "export"
    assert voc.export(task, out) == [out]
    assert (out / "ImageSets/Main/default.txt").read_text() == "cam1/a\nb\ncam2/deep/c\n"  # the task's order
    assert (out / "labelmap.txt").read_text() == "# label:color_rgb:parts:actions\ncar:::\nperson:::\nbike:::\n"
    assert (out / "JPEGImages/cam2/deep/c.png").is_symlink()
    root = ET.parse(out / "Annotations/cam1/a.xml").getroot()
    assert root.findtext("filename") == "cam1/a.png" and root.findtext("folder") == "JPEGImages"
    assert [root.findtext(f"size/{t}") for t in ("width", "height", "depth")] == ["64", "48", "3"]
    objs = root.findall("object")
    assert [o.findtext("name") for o in objs] == ["car", "person"]
    assert [[o.findtext(f"bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax")] for o in objs] == [
        ["5", "6", "20", "30"], ["30", "10", "60", "40"]]
    assert all(o.findtext("difficult") == "0" for o in objs)
    assert b"score" not in (out / "Annotations/cam1/a.xml").read_bytes()  # VOC cannot carry scores
    c = ET.parse(out / "Annotations/cam2/deep/c.xml").getroot()
    assert [c.find("object").findtext(f"bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax")] == [
        "1.5", "2", "3", "4.25"]
    assert voc.sniff(out) and detect_format(out).name == "voc"


def test_round_trip_and_the_export_is_a_voc_dataset(tmp_path):
    specs = [("a.png", 64, 48, [[0.123456, 1, 63.99, 47.5], [10, 10, 20, 20]], [2, 3], [0.5, 0.4])]
    task = export_task(tmp_path, specs)
    out = tmp_path / "export"
    voc.export(task, out)
    res = voc.read(out, task)
    assert res.format == "voc" and res.problems == []
    np.testing.assert_allclose(res.boxes["a.png"], specs[0][3], rtol=0, atol=1e-4)
    assert res.labels["a.png"].tolist() == [2, 3]
    # The VOC label reader reads the same folder to the same boxes: one coordinate convention.
    ix = read_voc(out / "ImageSets/Main/default.txt", classes=CLASSES).index
    np.testing.assert_allclose(ix.boxes, res.boxes["a.png"], rtol=0, atol=0)
    assert ix.labels.tolist() == [2, 3]


def test_bccd_real_files_import_as_the_reader_reads_them(shared_data, tmp_path):
    """BCCD's 364 real VOC files (labelImg) imported as a cycle's answer give the boxes
    alod.data.voc gives (1-based values as written), except what the import refuses to train on."""
    ann = shared_data / "bccd" / "BCCD" / "Annotations"
    if not ann.is_dir():
        pytest.skip("BCCD not found")
    log = ProblemLog(strict=False)
    ix = read_voc(ann, problems=log).index
    task = ExportTask(images=[ExportImage(name=n, path=Path("/nonexistent") / n, width=640, height=480)
                              for n in ix.names.tolist()], classes=ix.classes, cycle=1, run="bccd")
    res = voc.read(ann, task)
    assert sorted(res.boxes) == sorted(ix.names.tolist())
    kinds = sorted({p.kind for p in res.problems})
    assert set(kinds) <= {"degenerate_box", "duplicate_box", "tiny_box"}, res.problems[:5]
    n_zero = sum(p.kind == "zero_area_box" for p in log.problems)
    assert sum(p.kind == "degenerate_box" for p in res.problems) == n_zero == 2  # the reader keeps them, as notes
    n_dup = sum(p.kind == "duplicate_box" for p in res.problems)
    assert sum(len(b) for b in res.boxes.values()) == ix.num_boxes - n_zero - n_dup
    for i, name in enumerate(ix.names.tolist()):
        b, lab, _ = ix.annotations(i)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        rows = {tuple(r) for r in np.column_stack([b[keep], lab[keep]]).tolist()}
        got = {tuple(r) for r in np.column_stack([res.boxes[name], res.labels[name]]).tolist()}
        assert got == rows, name


def test_an_annotators_edits(tmp_path):
    task = export_task(tmp_path)
    out = tmp_path / "export"
    voc.export(task, out)
    a = out / "Annotations/cam1/a.xml"
    tree = ET.parse(a)
    root = tree.getroot()
    root.find("filename").text = "JPEGImages/cam1/a.png"       # labelImg-style: a path the export name ends
    o0, o1 = root.findall("object")
    o0.find("bndbox/xmin").text = "7"                          # moved
    root.remove(o1)                                            # deleted
    for name, diff, box in (("truck", "0", ("1", "1", "9", "9")), ("car", "1", ("2", "2", "8", "8")),
                            ("bike", "0", ("40", "20", "10", "2")), ("car", "0", None)):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = diff
        if box is not None:
            bnd = ET.SubElement(obj, "bndbox")
            for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bnd, t).text = v
    tree.write(a)
    (out / "Annotations/cam2/deep/c.xml").unlink()                # not answered
    res = voc.read(out, task)
    assert problems(res, out) == [
        ("Annotations/cam1/a.xml", "<object> #1 'truck'", "unknown_category"),
        ("Annotations/cam1/a.xml", "<object> #2 'car'", "not_a_box"),     # difficult
        ("Annotations/cam1/a.xml", "<object> #4 'car'", "degenerate_box"),  # no <bndbox>
        (".", "cam2/deep/c.png", "image_missing"),
    ]
    assert res.boxes["cam1/a.png"].tolist() == [[7, 6, 20, 30], [10, 2, 40, 20]]  # corners in any order
    assert res.labels["cam1/a.png"].tolist() == [1, 3] and res.boxes["b.png"].tolist() == [[10, 10, 40, 50]]


BOMB = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        '<annotation><filename>&lol2;</filename></annotation>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<annotation><filename>&x;</filename></annotation>')


def _doc(filename: str, size=(80, 60), objects="") -> str:
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"</size>{objects}</annotation>")


@pytest.mark.parametrize("text,kind,detail", [
    (BOMB, "not_this_format", "DOCTYPE"),
    (EXTERNAL, "not_this_format", "DOCTYPE"),
    ("<annotation><filename>b.png</annotation>", "not_this_format", "not well-formed"),
    ("<annotations><version>1.1</version></annotations>", "not_this_format", "not <annotation>"),
    (_doc("../../etc/passwd"), "unsafe_image_name", "absolute or leaves"),
    (_doc("/etc/passwd"), "unsafe_image_name", "absolute or leaves"),
    (_doc("C:\\data\\b.png"), "unsafe_image_name", "absolute or leaves"),
    (_doc("sub/../../b.png"), "unsafe_image_name", "absolute or leaves"),
    (_doc(""), "not_this_format", "not a file name"),
    (_doc("b.png", size=(81, 60)), "image_not_asked_for", "another image was annotated"),
    (_doc("zzz.png"), "image_not_asked_for", "was not in this cycle's export"),
])
def test_hostile_files_in_a_folder_are_problems(tmp_path, text, kind, detail):
    task = export_task(tmp_path)
    d = tmp_path / "answer"
    d.mkdir()
    (d / "x.xml").write_text(text)
    (d / "ok.xml").write_text(_doc("cam1/a.png", size=(64, 48)))
    res = voc.read(d, task)
    bad = [p for p in res.problems if p.kind != "image_missing"]
    assert [p.kind for p in bad] == [kind] and detail in bad[0].detail and bad[0].file == str(d / "x.xml")
    assert sorted(res.boxes) == ["cam1/a.png"]
    if kind == "not_this_format" and "file name" not in detail:  # one file alone: refused whole
        with pytest.raises(AlodError, match=str(d / "x.xml")):
            voc.read(d / "x.xml", task)


def test_zip_with_traversal_links_and_size_limits(tmp_path, monkeypatch):
    task = export_task(tmp_path)
    z = tmp_path / "cvat_voc.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("Annotations/b.xml", _doc("b.png", objects="<object><name>car</name><bndbox><xmin>1</xmin>"
                                                             "<ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>"))
        zf.writestr("../evil.xml", _doc("cam1/a.png", size=(64, 48)))
        zf.writestr("/abs.xml", _doc("cam1/a.png", size=(64, 48)))
        zf.writestr("__MACOSX/._b.xml", b"\x00\x05\x16\x07")
    assert voc.sniff(z) and detect_format(z).name == "voc"
    res = voc.read(z, task)
    assert [(p.where, p.kind) for p in res.problems if p.kind != "image_missing"] == [
        ("../evil.xml", "unsafe_image_name"), ("/abs.xml", "unsafe_image_name")]
    assert res.boxes["b.png"].tolist() == [[1, 2, 3, 4]] and "cam1/a.png" not in res.boxes
    # A symbolic link in a folder is not followed; a file over the limit is not read.
    d = tmp_path / "folder"
    d.mkdir()
    (d / "link.xml").symlink_to(tmp_path / "outside.xml")
    (d / "big.xml").write_text(_doc("b.png"))
    monkeypatch.setattr(voc, "MAX_XML_BYTES", 10)
    with pytest.raises(AlodError, match="no Pascal VOC XML file found"):
        voc.read(d, task)


def test_export_refuses_what_cannot_round_trip(tmp_path):
    task = export_task(tmp_path, [("x.png", 10, 10, [], [], []), ("x.jpg", 10, 10, [], [], [])])
    with pytest.raises(AlodError, match="would share the VOC file x.xml"):
        voc.export(task, tmp_path / "out")
    task = export_task(tmp_path, [("x.png", 10, 10, [], [], [])], classes=("a:b",))
    with pytest.raises(AlodError, match="':'"):
        voc.export(task, tmp_path / "out")
    assert not (tmp_path / "out").exists()
