"""YOLO reader and ``data.kind: yolo``: COCO128 converted to YOLO reads back COCO's boxes, class
files (classes.txt, obj.names, data.yaml), images without label files, hostile lines and files,
strict vs non-strict, the cache seeing the images, and a hypothesis fuzz of label lines."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alod.config import DataConfig
from alod.data.loading import load_index
from alod.data.problems import LabelFileError, ProblemLog
from alod.data.readers import detect_format
from alod.data.sources import check_data_config, load_split
from alod.data.yolo import read_yolo
from alod.utils import AlodError
from alod_testing import write_png


def quiet(line):
    return None


# ----------------------------------------------------------------------------- real data
def test_coco128_as_yolo_reads_back_cocos_boxes(shared_data, tmp_path):
    """COCO128's train2017 labels written as YOLO (as ultralytics ships COCO128) and read back: the
    image sizes come from the JPEG headers and equal COCO's records, and the boxes equal COCO's."""
    src = shared_data / "coco128"
    coco = load_index(labels=src / "instances_train2017.json", image_root=src / "images" / "train2017", fmt="coco",
                      log=quiet)
    doc = json.loads((src / "instances_train2017.json").read_text())
    size = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    name = {im["id"]: im["file_name"] for im in doc["images"]}
    cat = {c["id"]: k for k, c in enumerate(sorted(doc["categories"], key=lambda c: c["id"]))}
    labels = tmp_path / "coco128" / "labels" / "train2017"
    labels.mkdir(parents=True)
    lines: dict[str, list[str]] = {}
    for a in doc["annotations"]:
        if a.get("iscrowd"):
            continue  # YOLO has no crowd regions
        (x, y, w, h), (W, H) = a["bbox"], size[a["image_id"]]
        lines.setdefault(name[a["image_id"]], []).append(
            f"{cat[a['category_id']]} {(x + w / 2) / W:.10f} {(y + h / 2) / H:.10f} {w / W:.10f} {h / H:.10f}")
    for file_name, rows in lines.items():
        (labels / (os.path.splitext(file_name)[0] + ".txt")).write_text("\n".join(rows) + "\n")
    (tmp_path / "coco128" / "data.yaml").write_text(
        "path: .\ntrain: images/train2017\nnames:\n" + "".join(f"  {k}: {json.dumps(c)}\n" for k, c in enumerate(coco.classes)))

    log = ProblemLog(strict=True)
    parsed = read_yolo(labels, image_root=src / "images" / "train2017", problems=log)
    ix = parsed.index
    assert parsed.layout == "yolo" and ix.classes == coco.classes and len(ix) == len(coco) == 128
    assert ix.names.tolist() == sorted(coco.names.tolist())  # every image, labeled or not
    pos = coco.name_to_index()
    for i, n in enumerate(ix.names.tolist()):
        j = pos[n]
        assert (ix.widths[i], ix.heights[i]) == (coco.widths[j], coco.heights[j]), n
        b, lab, _ = ix.annotations(i)
        cb, clab, cig = coco.annotations(j)
        np.testing.assert_allclose(b, cb[~cig], rtol=0, atol=1e-6, err_msg=n)
        assert lab.tolist() == clab[~cig].tolist()
    # Only notes: 10-digit rounding puts a few right and bottom edges past the border by < 1e-6 px.
    assert set(log.counts()) <= {"box_clipped", "zero_area_box"}


# ----------------------------------------------------------------------------- hand-written
@pytest.fixture
def yolo(tmp_path):
    """``yolo(labels: dict[stem, text], images: dict[name, (w, h)], classes="car\\nperson\\n")
    -> (labels folder, image folder)`` in the ultralytics layout under ``tmp_path/ds``."""
    def write(labels: dict, images: dict | None = None, classes: str | None = "car\nperson\n"):
        root = tmp_path / "ds"
        lab, img = root / "labels" / "train", root / "images" / "train"
        lab.mkdir(parents=True, exist_ok=True)
        img.mkdir(parents=True, exist_ok=True)
        for stem, text in labels.items():
            (lab / f"{stem}.txt").parent.mkdir(parents=True, exist_ok=True)
            (lab / f"{stem}.txt").write_text(text)
        for name, (w, h) in (images if images is not None else {f"{s}.png": (100, 50) for s in labels}).items():
            write_png(img / name, w, h, "gray")
        if classes is not None:
            (lab / "classes.txt").write_text(classes)
        return lab, img
    return write


def test_hand_written(yolo):
    lab, img = yolo({"a": "0 0.5 0.5 0.2 0.4\n\n1 0.25 0.75 0.5 0.5\n", "sub/b": "1 0.5 0.5 1 1\n", "c": ""},
                    {"a.png": (100, 50), "sub/b.jpg": (40, 30), "c.png": (10, 10), "d.PNG": (8, 8)})
    parsed = read_yolo(lab, image_root=img)
    ix = parsed.index
    assert ix.names.tolist() == ["a.png", "c.png", "d.PNG", "sub/b.jpg"] and parsed.num_frames == 4
    assert ix.classes == ("car", "person") and ix.boxes.dtype == np.float64
    assert ix.boxes.tolist() == [[40, 15, 60, 35], [0, 25, 50, 50], [0, 0, 40, 30]]
    assert ix.labels.tolist() == [1, 2, 2] and not ix.ignore.any()
    assert ix.offsets.tolist() == [0, 2, 2, 2, 3]  # c: an empty file, d: no file: both no objects
    assert ix.widths.tolist() == [100, 10, 8, 40] and ix.heights.tolist() == [50, 10, 8, 30]  # from the headers


@pytest.mark.parametrize("where,name,text", [
    ("labels", "classes.txt", "car\nperson\n"),
    ("labels", "obj.names", "car\nperson\n"),
    ("root", "data.yaml", "names: [car, person]\nnc: 2\n"),
    ("root", "data.yaml", "names:\n  1: person\n  0: car\n"),
    ("parent", "data.yml", "train: ../images/train\nnames: ['car', 'person']\n"),
])
def test_class_files(yolo, where, name, text):
    lab, img = yolo({"a": "1 0.5 0.5 0.1 0.1\n"}, classes=None)
    folder = {"labels": lab, "parent": lab.parent, "root": lab.parent.parent}[where]
    (folder / name).write_text(text)
    ix = read_yolo(lab, image_root=img).index
    assert ix.classes == ("car", "person") and ix.labels.tolist() == [2]


def test_nearest_class_file_wins_and_data_classes_override(yolo):
    lab, img = yolo({"a": "1 0.5 0.5 0.1 0.1\n"}, classes="dog\ncat\n")
    (lab.parent.parent / "data.yaml").write_text("names: [car, person]\n")
    assert read_yolo(lab, image_root=img).index.classes == ("dog", "cat")  # the labels folder's own
    ix = read_yolo(lab, image_root=img, classes=("a", "b", "c")).index
    assert ix.classes == ("a", "b", "c") and ix.labels.tolist() == [2]


def test_darknet_layout_labels_beside_images(tmp_path):
    d = tmp_path / "obj"
    write_png(d / "a.jpg", 20, 10, "red")
    (d / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (d / "classes.txt").write_text("car\n")  # in the same folder: the class file, not a label file
    ix = read_yolo(d, image_root=d).index
    assert ix.names.tolist() == ["a.jpg"] and ix.boxes.tolist() == [[5, 2.5, 15, 7.5]]


@pytest.mark.parametrize("text,fatal", [
    ("car\n\nperson\n", "line 2 is blank"),
    ("car\ncar\n", r"repeated: \['car'\]"),
    ("\n", "names no class"),
])
def test_broken_class_txt_is_fatal(yolo, text, fatal):
    lab, img = yolo({"a": ""}, classes=text)
    with pytest.raises(LabelFileError, match=fatal):
        read_yolo(lab, image_root=img, problems=ProblemLog(strict=False))


@pytest.mark.parametrize("text,fatal", [
    ("names: [car, person]\nnc: 3\n", "nc is 3 but 'names' holds 2 names"),
    ("names: {0: car, 2: person}\n", "needs the ids 0..1 as keys"),
    ("names: car\n", "no 'names' list"),
    ("names: [car, [1, 2]]\n", "non-empty strings"),
    ("names: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nnames: [*b, *b]\n", "non-empty strings"),  # aliases: no expansion, refused
    ("names: [car\n", "not valid YAML"),
])
def test_broken_data_yaml_is_fatal(yolo, text, fatal):
    lab, img = yolo({"a": ""}, classes=None)
    (lab.parent.parent / "data.yaml").write_text(text)
    with pytest.raises(LabelFileError, match=fatal):
        read_yolo(lab, image_root=img, problems=ProblemLog(strict=False))


#: case -> (line, problem kind, text in the message, severity)
BAD_LINES = {
    "two_fields": ("0 0.5", "bad_record", "2 fields", "error"),
    "prediction": ("0 0.5 0.5 0.1 0.1 0.93", "bad_record", "6 fields", "error"),
    "polygon": ("0 0.1 0.1 0.2 0.1 0.2 0.2", "bad_record", "segmentation polygon", "error"),
    "class_text": ("car 0.5 0.5 0.1 0.1", "bad_record", "class id 'car' is not an integer", "error"),
    "class_float": ("1.0 0.5 0.5 0.1 0.1", "bad_record", "is not an integer", "error"),
    "class_negative": ("-1 0.5 0.5 0.1 0.1", "unknown_category", "class id -1 is not in 0..1", "error"),
    "class_too_big": ("2 0.5 0.5 0.1 0.1", "unknown_category", "class id 2 is not in 0..1", "error"),
    "text_coordinate": ("0 0.5 half 0.1 0.1", "bad_coordinates", "must be numbers", "error"),
    "nan": ("0 nan 0.5 0.1 0.1", "non_finite", "NaN or infinite", "error"),
    "inf": ("0 0.5 0.5 inf 0.1", "non_finite", "NaN or infinite", "error"),
    "huge": ("0 0.5 0.5 1e999 0.1", "non_finite", "NaN or infinite", "error"),
    "negative_size": ("0 0.5 0.5 -0.1 0.1", "inverted_box", "x2 < x1", "error"),
    "far_outside": ("0 1.5 0.5 0.1 0.1", "box_outside_image", "outside the 100x50 image", "error"),
    "pixels_not_normalised": ("0 50 25 20 10", "box_outside_image", "outside the 100x50 image", "error"),
    "a_little_outside": ("0 0.5 0.5 1.02 0.5", "box_clipped", "clipped to", "note"),
    "zero_size": ("0 0.5 0.5 0 0.1", "zero_area_box", "zero-area box", "note"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_strict_raises_non_strict_skips(yolo, case):
    line, kind, detail, severity = BAD_LINES[case]
    lab, img = yolo({"a": "0 0.5 0.5 0.2 0.2\n", "b": f"1 0.5 0.5 0.2 0.2\n\n{line}\n"})
    if severity == "error":
        with pytest.raises(LabelFileError) as err:  # names the folder, frame, image, line and what is wrong
            read_yolo(lab, image_root=img)
        msg = str(err.value)
        assert str(lab) in msg and "frame 1 ('b.png'), label 2: b.txt line 3" in msg and detail in msg, msg
    log = ProblemLog(strict=False)
    ix = read_yolo(lab, image_root=img, problems=log).index
    assert [(p.kind, p.frame, p.label, p.severity) for p in log.problems] == [(kind, 1, 2, severity)]
    assert detail in log.problems[0].detail
    assert ix.names.tolist() == ["a.png", "b.png"]
    assert ix.num_boxes == (2 if severity == "error" else 3)  # a bad line drops its box only


def test_frame_problems(yolo, tmp_path):
    lab, img = yolo({"a": "0 0.5 0.5 0.2 0.2\n", "b": "0 0.5 0.5 0.2 0.2\n", "gone": "0 0.5 0.5 0.1 0.1\n",
                     "latin": "", "big": ""},
                    {"a.png": (10, 10), "a.jpg": (10, 10), "b.png": (10, 10), "latin.png": (10, 10),
                     "big.png": (10, 10), "back\\slash.png": (10, 10)})
    (img / "b.png").write_bytes(b"not an image at all")      # its header cannot be read
    (lab / "latin.txt").write_bytes(b"0 0.5 0.5 0.1 0.1 \xe9\n")  # not UTF-8
    (lab / "big.txt").write_bytes(b"0 0.5 0.5 0.1 0.1\n" * (1 + (16 << 20) // 18))  # over MAX_LABEL_BYTES
    log = ProblemLog(strict=False)
    parsed = read_yolo(lab, image_root=img, problems=log)
    assert [(p.kind, p.frame, p.name) for p in log.problems] == [
        ("duplicate_name", 1, "a.png"),         # a.jpg sorts first and takes a.txt
        ("unreadable_image", 2, "b.png"),
        ("image_outside_root", 3, "back\\slash.png"),
        ("bad_record", 4, "big.png"),
        ("bad_record", 5, "latin.png"),
        ("missing_image", 6, None),             # a label file without an image
    ]
    assert "larger than 16 MiB" in log.problems[3].detail and "not UTF-8" in log.problems[4].detail
    assert "gone.txt has no image gone." in log.problems[5].detail
    assert parsed.index.names.tolist() == ["a.jpg"] and parsed.num_frames == 7
    with pytest.raises(LabelFileError, match="'a.png' has the stem of 'a.jpg'"):
        read_yolo(lab, image_root=img)


def test_fatal_inputs(yolo, tmp_path):
    lab, img = yolo({"a": ""})
    with pytest.raises(LabelFileError, match="needs the image folder"):
        read_yolo(lab, image_root="")
    with pytest.raises(LabelFileError, match="not a folder; data.format=yolo reads a folder"):
        read_yolo(lab / "a.txt", image_root=img)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "classes.txt").write_text("car\n")
    with pytest.raises(LabelFileError, match="holds no .txt label file"):
        read_yolo(empty, image_root=img)
    (lab / "classes.txt").unlink()
    with pytest.raises(LabelFileError, match="no class names: set data.classes, or put one of classes.txt"):
        read_yolo(lab, image_root=img)


# ----------------------------------------------------------------------------- load_index
def test_load_index_needs_images_and_the_cache_sees_them(yolo, tmp_path):
    lab, img = yolo({"a": "0 0.5 0.5 0.5 0.5\n"})
    with pytest.raises(AlodError, match="label format yolo needs the image folder"):
        load_index(labels=lab, fmt="yolo", log=quiet)
    with pytest.raises(LabelFileError, match=r"name the format of a folder of label files \(voc, yolo\)"):
        detect_format(lab)
    cache = tmp_path / "cache"
    assert load_index(labels=lab, image_root=img, fmt="yolo", cache_dir=cache, log=quiet).boxes.tolist() == [
        [25, 12.5, 75, 37.5]]
    messages = []
    load_index(labels=lab, image_root=img, fmt="yolo", cache_dir=cache, log=messages.append)
    assert any("loaded cached index" in m for m in messages)
    write_png(img / "a.png", 200, 100, "gray")  # the same labels, a bigger image: other pixel boxes
    os.utime(img / "a.png", ns=(1, 1))
    messages = []
    ix = load_index(labels=lab, image_root=img, fmt="yolo", cache_dir=cache, log=messages.append)
    assert ix.boxes.tolist() == [[50, 25, 150, 75]] and not any("loaded cached" in m for m in messages)
    assert load_index(labels=lab, image_root=img, fmt="yolo", classes=("x",), log=quiet).classes == ("x",)


# ----------------------------------------------------------------------------- data.kind: yolo
def test_kind_yolo_default_paths_and_one_class_numbering(tmp_path):
    root = tmp_path / "ds"
    for split, stems in (("train", {"t1": "2 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.1 0.1\n"}), ("val", {"v1": "1 0.5 0.5 0.2 0.2\n"})):
        for stem, text in stems.items():
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text(text)
            write_png(root / "images" / split / f"{stem}.png", 40, 20, "gray")
    (root / "data.yaml").write_text("names: [cat, dog, eel]\n")  # ultralytics: one file for both splits
    cfg = DataConfig(kind="yolo", root=str(root))
    check_data_config(cfg)
    train = load_split(cfg, "train", cache_dir=tmp_path / "cache", log=quiet)
    val = load_split(cfg, "val", cache_dir=tmp_path / "cache", log=quiet)
    assert train.classes == val.classes == ("cat", "dog", "eel")
    assert train.labels.tolist() == [3, 1] and val.labels.tolist() == [2]
    cfg = DataConfig(kind="yolo", root=str(root), classes=("a", "b", "c"))
    check_data_config(cfg)
    assert load_split(cfg, "val", log=quiet).classes == ("a", "b", "c")


# ----------------------------------------------------------------------------- fuzz
_FIELD = st.sampled_from(["0", "1", "2", "-1", "0.5", "1e999", "nan", "-inf", "x", "1.0", "0.0", "", "9" * 30]) | \
    st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.text(max_size=4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(_FIELD, max_size=7).map(" ".join) | st.text(max_size=30), max_size=6))
def test_label_lines_fuzz(tmp_path, lines):
    """Any label lines: non-strict reading never raises and keeps only finite boxes inside the image
    with labels in 1..C; strict reading raises LabelFileError or nothing."""
    d = tmp_path / "fz"
    d.mkdir(exist_ok=True)
    if not (d / "a.png").exists():
        write_png(d / "a.png", 64, 48, "gray")
        (d / "classes.txt").write_text("car\nperson\n")
    try:
        (d / "a.txt").write_text("\n".join(lines), encoding="utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate: not a file anyone can write
    ix = read_yolo(d, image_root=d, problems=ProblemLog(strict=False)).index
    assert ix.names.tolist() == ["a.png"] and np.isfinite(ix.boxes).all()
    b = ix.boxes
    assert ((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= 64) & (b[:, 3] <= 48) & (b[:, 2] >= b[:, 0])).all()
    assert ((ix.labels >= 1) & (ix.labels <= 2)).all()
    try:
        read_yolo(d, image_root=d)
    except LabelFileError:
        pass
