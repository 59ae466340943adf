"""Pascal VOC reader and ``data.kind: voc``: BCCD's exact counts, list vs folder, difficult ->
ignored, class order, hostile files, strict vs non-strict, and configs/bccd.yaml end to end."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from alod.config import DataConfig, load_config
from alod.data.loading import load_index
from alod.data.problems import LabelFileError, ProblemLog
from alod.data.readers import detect_format
from alod.data.sources import check_data_config, load_split
from alod.data.voc import read_voc
from alod.evaluation import evaluate_detections
from alod.utils import AlodError
from alod_testing import REPO, write_png


def quiet(line):
    return None


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def bccd(shared_data):
    root = shared_data / "bccd" / "BCCD"
    if not root.is_dir():
        pytest.skip(f"BCCD not found at {root}")
    return root


def test_real_bccd_folder(bccd):
    log = ProblemLog(strict=True)  # the two notes never raise
    parsed = read_voc(bccd / "Annotations", problems=log)
    ix = parsed.index
    assert parsed.layout == "voc" and parsed.num_frames == 364 and len(ix) == 364
    # 4,888 boxes *including* the two zero-area ones: they are kept (as BDD100K and COCO keep theirs).
    assert ix.num_boxes == 4888 and not ix.ignore.any()
    assert ix.classes == ("Platelets", "RBC", "WBC")  # sorted names
    assert ix.class_counts() == {"RBC": 4155, "WBC": 372, "Platelets": 361}
    assert set(ix.widths.tolist()) == {640} and set(ix.heights.tolist()) == {480}
    assert [(p.kind, p.name, p.label, p.severity) for p in log.problems] == [
        ("zero_area_box", "BloodImage_00338.jpg", 12, "note"),
        ("zero_area_box", "BloodImage_00343.jpg", 3, "note"),
    ]
    # Coordinates as written (1-based, inclusive): BloodImage_00000's first object is WBC 260,177-491,376.
    boxes, labels, _ = ix.annotations(ix.name_to_index()["BloodImage_00000.jpg"])
    assert boxes[0].tolist() == [260, 177, 491, 376] and ix.classes[labels[0] - 1] == "WBC"
    assert boxes.min() >= 1 and boxes[:, 2].max() == 640  # xmax may equal the width


@pytest.mark.parametrize("split,n_images,n_boxes,n_zero", [
    ("train", 205, 2805, 1), ("val", 87, 1138, 1), ("test", 72, 945, 0),
])
def test_real_bccd_splits(bccd, split, n_images, n_boxes, n_zero, tmp_path):
    problems = tmp_path / "problems.jsonl"
    ix = load_index(labels=bccd / "ImageSets" / "Main" / f"{split}.txt", image_root=bccd / "JPEGImages",
                    fmt="voc", problems_path=problems, log=quiet)
    assert len(ix) == n_images and ix.num_boxes == n_boxes
    assert len(problems.read_text().splitlines()) == n_zero


def test_list_and_folder_read_the_same_boxes(bccd):
    folder = read_voc(bccd / "Annotations", problems=ProblemLog(strict=False)).index
    listed = read_voc(bccd / "ImageSets" / "Main" / "train.txt", problems=ProblemLog(strict=False)).index
    ids = (bccd / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert listed.names.tolist() == [f"{i}.jpg" for i in ids]  # the list's order
    sub = folder.subset([folder.name_to_index()[n] for n in listed.names.tolist()])
    assert listed.classes == folder.classes  # all three classes occur in train
    for key in ("names", "widths", "heights", "offsets", "boxes", "labels", "ignore"):
        assert np.array_equal(getattr(listed, key), getattr(sub, key)), key


# ----------------------------------------------------------------------------- hand-written
def voc_xml(filename="a.jpg", size=(100, 80), objects=(("car", (10, 20, 30, 40), None),), *, root="annotation",
            raw: str = "") -> str:
    """One VOC file; ``objects``: ``(name, (xmin, ymin, xmax, ymax) or None, difficult or None)``."""
    parts = [f"<{root}>", "<folder>JPEGImages</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, box, difficult in objects:
        obj = "<object>" + ("" if name is None else f"<name>{name}</name>") + "<pose>Unspecified</pose>"
        if difficult is not None:
            obj += f"<difficult>{difficult}</difficult>"
        if box is not None:
            obj += "<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
            obj += "</bndbox>"
        parts.append(obj + "</object>")
    return "".join(parts) + raw + f"</{root}>"


@pytest.fixture
def voc(tmp_path):
    """``voc(files: dict[id, xml text], ids=None) -> (Annotations folder, list file)`` in a VOC layout
    under ``tmp_path/VOC`` (the list holds ``ids``, default every id in order)."""
    def write(files: dict[str, str], ids=None):
        ann = tmp_path / "VOC" / "Annotations"
        ann.mkdir(parents=True, exist_ok=True)
        for key, text in files.items():
            (ann / f"{key}.xml").write_text(text, encoding="utf-8")
        lst = tmp_path / "VOC" / "ImageSets" / "Main" / "train.txt"
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text("".join(f"{i}\n" for i in (ids if ids is not None else files)))
        return ann, lst
    return write


THREE = {
    "a": voc_xml("a.jpg", objects=[("dog", (10, 20, 30, 40), 0), ("cat", (1, 1, 100, 80), 1)]),
    "b": voc_xml("b.jpg", size=(64, 48), objects=[("cat", ("5.5", "6", "20", "30.25"), None)]),
    "c": voc_xml("c.jpg", objects=[]),
}


def test_hand_written(voc):
    ann, lst = voc(THREE)
    ix = read_voc(lst).index
    assert ix.classes == ("cat", "dog") and ix.names.tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert ix.offsets.tolist() == [0, 2, 3, 3]  # an image without objects is kept
    assert ix.boxes.dtype == np.float64
    assert ix.boxes.tolist() == [[10, 20, 30, 40], [1, 1, 100, 80], [5.5, 6, 20, 30.25]]
    assert ix.labels.tolist() == [2, 1, 1] and ix.ignore.tolist() == [False, True, False]  # difficult=1 -> ignored
    assert ix.widths.tolist() == [100, 64, 100] and ix.heights.tolist() == [80, 48, 80]
    folder = read_voc(ann).index  # the same files as a folder, sorted: the same index
    for key in ("names", "widths", "heights", "offsets", "boxes", "labels", "ignore"):
        assert np.array_equal(getattr(ix, key), getattr(folder, key)), key
    assert folder.classes == ix.classes


def test_list_takes_the_first_word_and_skips_blank_lines(voc):
    _, lst = voc(THREE)
    lst.write_text("b  1\n\n a -1\n")  # a per-class list (cat_train.txt) has a second column
    assert read_voc(lst).index.names.tolist() == ["b.jpg", "a.jpg"]


def test_folder_skips_hidden_and_other_files(voc):
    ann, _ = voc(THREE)
    (ann / "._a.xml").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork
    (ann / "notes.txt").write_text("not a label file")
    (ann / "D.XML").write_text(voc_xml("d.jpg"))
    assert read_voc(ann).index.names.tolist() == ["d.jpg", "a.jpg", "b.jpg", "c.jpg"]  # "D.XML" sorts first


def test_difficult_boxes_are_crowd_regions_in_evaluation(voc):
    _, lst = voc(THREE)
    gt = read_voc(lst).index  # a.jpg: dog (10,20,30,40) and a difficult cat over the whole image

    def dets(on_difficult: bool):
        a = [[10, 20, 30, 40, 2, 0.9]] + ([[0, 0, 100, 80, 1, 0.95]] if on_difficult else [])
        rows = [np.array(a, float), np.array([[5.5, 6, 20, 30.25, 1, 0.8]]), np.zeros((0, 6))]
        return [{"boxes": r[:, :4], "labels": r[:, 4].astype(np.int64), "scores": r[:, 5]} for r in rows]

    # A detection on the difficult box is no false positive, and missing it costs nothing ...
    for on_difficult in (True, False):
        m = evaluate_detections(gt, dets(on_difficult))
        assert m["AP50/cat"] == pytest.approx(1.0) and m["AP50/dog"] == pytest.approx(1.0)
    # ... whereas as an ordinary box, missing it halves the recall.
    plain = dataclasses.replace(gt, ignore=np.zeros_like(gt.ignore))
    assert evaluate_detections(plain, dets(False))["AP50/cat"] == pytest.approx(0.5, abs=0.01)


def test_classes_fix_the_order_and_unknown_names_are_problems(voc):
    _, lst = voc(THREE)
    ix = read_voc(lst, classes=("dog", "cat", "bird")).index
    assert ix.classes == ("dog", "cat", "bird") and ix.labels.tolist() == [1, 2, 2]
    with pytest.raises(LabelFileError, match=r"frame 0 \('a.jpg'\), label 0: Annotations/a.xml: object 0 \('dog'\): "
                                             r"class 'dog' is not in the class list \['cat'\]"):
        read_voc(lst, classes=("cat",))
    log = ProblemLog(strict=False)
    ix = read_voc(lst, classes=("cat",), problems=log).index
    assert log.counts() == {"unknown_category": 1} and ix.num_boxes == 2 and ix.labels.tolist() == [1, 1]


BOMB = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><annotation><filename>&lol3;</filename></annotation>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<annotation><filename>&x;</filename></annotation>')

#: case -> (XML text of file "b", problem kind, text in the message, what is skipped)
BAD_FILES = {
    "malformed": ("<annotation><filename>b.jpg</annotation>", "bad_record", "ParseError: mismatched tag", "frame"),
    "entity_bomb": (BOMB, "bad_record", "DTDForbidden", "frame"),
    "external_entity": (EXTERNAL, "bad_record", "DTDForbidden", "frame"),
    "not_voc": (voc_xml(root="html"), "bad_record", "root element is <html>", "frame"),
    "no_filename": (voc_xml(None), "missing_name", "no <filename>", "frame"),
    "no_size": (voc_xml("b.jpg", size=None), "bad_record", "<size> needs integer", "frame"),
    "zero_size": (voc_xml("b.jpg", size=(0, 80)), "bad_record", "<size> needs integer", "frame"),
    "traversal": (voc_xml("../../etc/passwd"), "image_outside_root", "has a '..' component", "frame"),
    "absolute": (voc_xml("/etc/passwd"), "image_outside_root", "is an absolute path", "frame"),
    "duplicate": (voc_xml("a.jpg"), "duplicate_name", "'a.jpg' is used by an earlier file", "frame"),
    "no_name": (voc_xml("b.jpg", objects=[(None, (1, 2, 3, 4), None)]), "bad_record", "without a <name>", "box"),
    "no_bndbox": (voc_xml("b.jpg", objects=[("cat", None, None)]), "bad_coordinates", "needs numeric", "box"),
    "text_coord": (voc_xml("b.jpg", objects=[("cat", (1, "two", 3, 4), None)]), "bad_coordinates",
                   "'ymin': 'two'", "box"),
    "nan": (voc_xml("b.jpg", objects=[("cat", (1, "nan", 3, 4), None)]), "non_finite", "NaN or infinite", "box"),
    "huge": (voc_xml("b.jpg", objects=[("cat", (1, 2, "1e999", 4), None)]), "non_finite", "NaN or infinite", "box"),
    "negative": (voc_xml("b.jpg", objects=[("cat", (-50, 2, 30, 4), None)]), "box_outside_image",
                 "lies outside the 100x80 image", "box"),
    "beyond": (voc_xml("b.jpg", objects=[("cat", (1, 2, 3, 95), None)]), "box_outside_image",
               "lies outside the 100x80 image", "box"),
    "inverted": (voc_xml("b.jpg", objects=[("cat", (30, 2, 10, 4), None)]), "inverted_box", "x2 < x1", "box"),
    "difficult": (voc_xml("b.jpg", objects=[("cat", (1, 2, 3, 4), "maybe")]), "bad_record",
                  "<difficult> must be 0 or 1", "box"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_strict_raises_non_strict_skips(voc, case):
    text, kind, detail, skipped = BAD_FILES[case]
    _, lst = voc({"a": THREE["a"], "b": text, "c": THREE["c"]})
    with pytest.raises(LabelFileError) as err:  # a clean error naming the list, the frame and the XML file
        read_voc(lst)
    msg = str(err.value)
    assert str(lst) in msg and "frame 1" in msg and "Annotations/b.xml" in msg and detail in msg, msg
    assert "data.strict: false" in msg

    log = ProblemLog(strict=False)
    parsed = read_voc(lst, problems=log)
    assert log.counts() == {kind: 1} and log.problems[0].skipped == skipped
    expected = ["a.jpg", "c.jpg"] if skipped == "frame" else ["a.jpg", "b.jpg", "c.jpg"]
    assert parsed.index.names.tolist() == expected and parsed.num_frames == 3
    assert parsed.index.num_boxes == 2  # a.jpg's two boxes; b's one bad box (or frame) is gone


def test_box_a_little_outside_is_clipped_and_zero_area_kept(voc):
    objects = [("cat", (-1, 0, 100.5, 80), None), ("cat", (7, 8, 7, 20), None)]
    _, lst = voc({"a": voc_xml("a.jpg", objects=objects)})
    log = ProblemLog(strict=True)  # notes never raise
    ix = read_voc(lst, problems=log).index
    assert ix.boxes.tolist() == [[0, 0, 100, 80], [7, 8, 7, 20]]
    assert [(p.kind, p.label, p.severity) for p in log.problems] == [("box_clipped", 0, "note"),
                                                                      ("zero_area_box", 1, "note")]


@pytest.mark.parametrize("bad_id,text", [("../../../etc/passwd", "has a '..' component"),
                                         ("/etc/passwd", "is an absolute path")])
def test_list_id_cannot_leave_the_annotations_folder(voc, bad_id, text):
    _, lst = voc(THREE, ids=["a", bad_id, "c"])
    with pytest.raises(LabelFileError, match=rf"frame 1 \(no name\): image id '{bad_id}'.*{text}"):
        read_voc(lst)
    log = ProblemLog(strict=False)
    assert read_voc(lst, problems=log).index.names.tolist() == ["a.jpg", "c.jpg"]
    assert log.counts() == {"image_outside_root": 1}


def test_list_id_without_a_file(voc):
    _, lst = voc(THREE, ids=["a", "gone", "c"])
    with pytest.raises(LabelFileError, match=r"frame 1 \(no name\): Annotations/gone.xml: the annotation file does not exist"):
        read_voc(lst)


def test_fatal_inputs(tmp_path, voc):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LabelFileError, match="the folder holds no .xml file"):
        read_voc(empty)
    lost = tmp_path / "lost.txt"  # not in a VOC layout: no <voc_root>/Annotations
    lost.write_text("a\n")
    with pytest.raises(LabelFileError, match="is not a folder"):
        read_voc(lost)
    _, lst = voc(THREE)
    lst.write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(LabelFileError, match="not UTF-8 text"):
        read_voc(lst)
    lst.write_text("\n \n")
    with pytest.raises(LabelFileError, match="names no image id"):
        read_voc(lst)


# ----------------------------------------------------------------------------- load_index
def test_load_index_folder_format_and_classes_checks(voc, tmp_path):
    ann, lst = voc(THREE)
    with pytest.raises(LabelFileError, match="is a folder: 'auto' recognises a label file by its first bytes; "
                                             r"name the format of a folder of label files \(voc, yolo\)"):
        detect_format(ann)
    with pytest.raises(LabelFileError, match=r"such as voc, yolo, must be named in data.format"):
        load_index(labels=lst, log=quiet)  # auto on a list of ids
    with pytest.raises(AlodError, match="is a folder; label format coco reads one label file"):
        load_index(labels=ann, fmt="coco", log=quiet)
    coco = tmp_path / "c.json"
    coco.write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(AlodError, match="label format coco takes its classes from the label file"):
        load_index(labels=coco, fmt="coco", classes=("cat",), log=quiet)
    assert load_index(labels=ann, fmt="voc", classes=("dog", "cat"), log=quiet).classes == ("dog", "cat")


def test_alod_evaluate_refuses_voc_cleanly(voc, tmp_path):
    from alod.evaluation import evaluate_files

    ann, _ = voc(THREE)
    pred = tmp_path / "pred.json"
    pred.write_text("[]")
    with pytest.raises(AlodError, match="label format 'voc' has no prediction reader"):
        evaluate_files(gt=ann, pred=pred, fmt="voc")


def test_cache_sees_every_xml_file(voc, tmp_path):
    ann, lst = voc(THREE)
    cache = tmp_path / "cache"
    for labels in (ann, lst):
        assert load_index(labels=labels, fmt="voc", cache_dir=cache, log=quiet).num_boxes == 3
    (ann / "c.xml").write_text(voc_xml("c.jpg", objects=[("dog", (1, 2, 3, 4), None)]))  # the list is unchanged
    for labels in (ann, lst):
        messages = []
        assert load_index(labels=labels, fmt="voc", cache_dir=cache, log=messages.append).num_boxes == 4
        assert not any("loaded cached index" in m for m in messages)
    messages = []
    load_index(labels=lst, fmt="voc", cache_dir=cache, log=messages.append)
    assert any("loaded cached index" in m for m in messages)
    # A class list is part of the key.
    assert load_index(labels=lst, fmt="voc", cache_dir=cache, classes=("dog", "cat"), log=quiet).classes == ("dog", "cat")


# ----------------------------------------------------------------------------- data.kind: voc
@pytest.fixture
def splits(tmp_path, voc):
    """A VOC layout whose train list names cat, dog and eel and whose val list only dog and eel."""
    files = {
        "t1": voc_xml("t1.png", objects=[("eel", (1, 1, 9, 9), None), ("cat", (2, 2, 8, 8), None)]),
        "t2": voc_xml("t2.png", objects=[("dog", (1, 1, 9, 9), None)]),
        "v1": voc_xml("v1.png", objects=[("dog", (1, 1, 9, 9), None), ("eel", (3, 3, 9, 9), 1)]),
    }
    ann, _ = voc(files)
    main = ann.parent / "ImageSets" / "Main"
    (main / "train.txt").write_text("t1\nt2\n")
    (main / "val.txt").write_text("v1\n")
    for name in ("t1", "t2", "v1"):
        write_png(ann.parent / "JPEGImages" / f"{name}.png", 100, 80, (0, 0, 0))
    return ann.parent


def test_kind_voc_maps_val_onto_the_training_classes(splits, tmp_path):
    cfg = DataConfig(kind="voc", root=str(splits))  # default paths: ImageSets/Main/{split}.txt, JPEGImages
    check_data_config(cfg)
    train = load_split(cfg, "train", cache_dir=tmp_path / "cache", log=quiet)
    val = load_split(cfg, "val", cache_dir=tmp_path / "cache", log=quiet)
    assert train.classes == val.classes == ("cat", "dog", "eel")
    assert train.labels.tolist() == [3, 1, 2]
    assert val.labels.tolist() == [2, 3] and val.ignore.tolist() == [False, True]  # not [1, 2]: val alone names 2
    assert load_split(cfg, "val", log=quiet).labels.tolist() == [2, 3]  # without a cache too


def test_kind_voc_refuses_a_val_class_the_training_split_lacks(splits):
    (splits / "ImageSets" / "Main" / "train.txt").write_text("t2\n")  # dog only
    cfg = DataConfig(kind="voc", root=str(splits))
    with pytest.raises(AlodError, match=r"val labels .*val.txt name classes that the training labels .*train.txt "
                                        r"do not: \['eel'\] \(training classes: \['dog'\]\)"):
        load_split(cfg, "val", log=quiet)


def test_kind_voc_with_data_classes(splits):
    cfg = DataConfig(kind="voc", root=str(splits), classes=("eel", "dog", "cat"))
    check_data_config(cfg)
    assert load_split(cfg, "train", log=quiet).labels.tolist() == [1, 3, 2]
    assert load_split(cfg, "val", log=quiet).labels.tolist() == [2, 1]
    cfg = DataConfig(kind="voc", root=str(splits), classes=("dog", "cat"))
    with pytest.raises(LabelFileError, match="class 'eel' is not in the class list"):
        load_split(cfg, "val", log=quiet)


def test_config_checks_for_voc():
    check_data_config(DataConfig(kind="voc", root="VOC2007", classes=("a", "b")))
    with pytest.raises(AlodError, match=r"data.classes must be unique; repeated: \['a'\]"):
        check_data_config(DataConfig(kind="voc", root="VOC2007", classes=("a", "b", "a")))
    with pytest.raises(AlodError, match="data.format=voc has no class list in its files; use data.kind=voc"):
        check_data_config(DataConfig(kind="coco", format="voc", train_labels="t.txt", train_images="t",
                                     val_labels="v.txt", val_images="v"))
    with pytest.raises(AlodError, match="only for data.kind=folder / voc"):
        check_data_config(DataConfig(kind="coco", classes=("a",), train_labels="t.json", train_images="t",
                                     val_labels="v.json", val_images="v"))


def test_bccd_yaml_loads_from_the_repo_root(bccd, monkeypatch, tmp_path):
    """configs/bccd.yaml's data section, with its paths relative to the repository root as shipped:
    train (the pool) 205 images, test (the reported val) 72, one class numbering."""
    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / "configs" / "bccd.yaml")
    assert cfg.run.name == "bccd" and cfg.data.kind == "voc" and cfg.data.classes is None
    assert REPO.joinpath(cfg.data.val_labels).resolve() == (bccd / "ImageSets" / "Main" / "test.txt").resolve()
    train = load_split(cfg.data, "train", cache_dir=tmp_path, log=quiet)
    val = load_split(cfg.data, "val", cache_dir=tmp_path, log=quiet)
    assert (len(train), train.num_boxes, len(val), val.num_boxes) == (205, 2805, 72, 945)
    assert train.classes == val.classes == ("Platelets", "RBC", "WBC")
    assert val.class_counts() == {"Platelets": 69, "RBC": 805, "WBC": 71}
    assert (cfg.model.min_size, cfg.model.max_size, cfg.model.anchor_sizes) == (240, 320, (16, 32, 64, 128))
