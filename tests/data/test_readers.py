"""The label-format registry: its entries, format detection, and a new format added in one place.

The toy format below is what "adding a label format" means: one module's worth of code (a reader,
optionally a prediction reader, and a :class:`LabelFormat` entry) plus one line in
``LABEL_FORMATS`` (here ``monkeypatch.setitem``). ``load_index``, ``alod evaluate``'s driver and
the format checks then accept it without any other change.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from alod.data.bdd100k import BDD100K_2018_FORMAT, BDD100K_FORMAT
from alod.data.coco import COCO_FORMAT
from alod.data.common import LabelFormat, ParsedLabels, rows_to_detections
from alod.data.index import DetectionIndex
from alod.data.loading import load_index
from alod.data.problems import UNKNOWN_CATEGORY, LabelFileError, Problem, ProblemLog
from alod.data.readers import (
    FORMAT_CHOICES,
    LABEL_FORMATS,
    check_format_choice,
    detect_format,
    format_choices,
    get_label_format,
    label_format_for,
)
from alod.data.voc import VOC_FORMAT
from alod.data.yolo import YOLO_FORMAT
from alod.utils import AlodError


def quiet(line):
    return None


# ----------------------------------------------------------------------------- the registry
def test_registry_lists_the_formats():
    assert list(LABEL_FORMATS) == ["bdd100k", "bdd100k_2018", "coco", "voc", "yolo"]
    assert FORMAT_CHOICES == ("auto", "bdd100k", "bdd100k_2018", "coco", "voc", "yolo") == format_choices()
    assert LABEL_FORMATS["bdd100k"] is BDD100K_FORMAT and LABEL_FORMATS["bdd100k_2018"] is BDD100K_2018_FORMAT
    assert LABEL_FORMATS["coco"] is COCO_FORMAT and LABEL_FORMATS["voc"] is VOC_FORMAT
    assert LABEL_FORMATS["yolo"] is YOLO_FORMAT
    for name, entry in LABEL_FORMATS.items():
        assert entry.name == name and get_label_format(name) is entry
    assert [e.family for e in LABEL_FORMATS.values()] == ["bdd100k", "bdd100k", "coco", "voc", "yolo"]
    # VOC's devkit measures widths as xmax - xmin + 1, as BDD100K's evaluation does; YOLO's
    # normalised coordinates are continuous, as COCO's.
    assert [e.box_convention for e in LABEL_FORMATS.values()] == ["bdd100k", "bdd100k", "coco", "bdd100k", "coco"]
    # Only VOC and YOLO read a folder (or a list of files) and take a class list; only YOLO needs the images.
    assert [n for n, e in LABEL_FORMATS.items() if e.reads_folders or e.accepts_classes or e.fingerprint] == [
        "voc", "yolo"]
    assert [n for n, e in LABEL_FORMATS.items() if e.needs_images] == ["yolo"]


def test_detection_on_real_files(shared_data):
    bdd = shared_data / "bdd100k_val50" / "det_val50.json"
    coco = shared_data / "coco128" / "instances_val2017.json"
    assert detect_format(bdd) == "bdd100k" and detect_format(coco) == "coco"
    assert label_format_for(bdd, "auto") is BDD100K_FORMAT
    assert label_format_for(coco, "auto") is COCO_FORMAT
    assert label_format_for(bdd, "bdd100k_2018") is BDD100K_2018_FORMAT  # a named format is not sniffed


def test_detection_skips_a_byte_order_mark_and_whitespace(tmp_path):
    p = tmp_path / "labels.json"
    p.write_bytes(b"\xef\xbb\xbf \n {}")
    assert detect_format(p) == "coco"


def test_unknown_format_names_the_valid_ones(tmp_path):
    with pytest.raises(AlodError, match=r"unknown label format 'kitti'; choose one of bdd100k, bdd100k_2018, coco, voc, "
                                        r"yolo$"):
        get_label_format("kitti")
    with pytest.raises(AlodError, match=r"choose one of auto, bdd100k, bdd100k_2018, coco, voc, yolo$"):
        check_format_choice("kitti")
    check_format_choice("auto")
    with pytest.raises(AlodError, match="unknown label format"):
        get_label_format(["coco"])  # an unhashable value from YAML is a clear error too


def test_evaluate_cli_offers_the_registry(tmp_path):
    import argparse

    from alod.commands import evaluate as cmd

    parser = argparse.ArgumentParser()
    cmd.configure_parser(parser)
    fmt = next(a for a in parser._actions if a.dest == "fmt")
    assert tuple(fmt.choices) == FORMAT_CHOICES


# ----------------------------------------------------------------------------- a toy format
TOY_HEADER = "#toy image,width,height,class,x1,y1,x2,y2"
TOY_CLASSES = ("cat", "dog")


def read_toy(path, *, image_root="", image_size=None, problems=None) -> ParsedLabels:
    """A CSV of boxes, one per line after the header; a row without a class gives an image with no
    boxes. Images keep their first-seen order; an unknown class is a bad record."""
    problems = ProblemLog(strict=True) if problems is None else problems
    file = os.fspath(path)
    lines = open(file, encoding="utf-8").read().splitlines()[1:]
    names, sizes, boxes, labels, first_line = [], [], [], [], []
    for k, line in enumerate(lines):
        name, w, h, cls, *xs = line.split(",")
        if name not in names:
            names.append(name)
            sizes.append((int(w), int(h)))
            boxes.append([])
            labels.append([])
            first_line.append(k)
        if not cls:
            continue
        if cls not in TOY_CLASSES:
            problems.add(Problem(UNKNOWN_CATEGORY, file, names.index(name), name, k, None,
                                 f"unknown class {cls!r}", "box"))
            continue
        boxes[names.index(name)].append([float(v) for v in xs])
        labels[names.index(name)].append(TOY_CLASSES.index(cls) + 1)
    index = DetectionIndex.from_lists(
        image_root=os.fspath(image_root), names=names, widths=[s[0] for s in sizes],
        heights=[s[1] for s in sizes],
        boxes_per_image=[np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes],
        labels_per_image=[np.asarray(lab, dtype=np.int64) for lab in labels],
        classes=TOY_CLASSES, source=file,
    )
    return ParsedLabels(index=index, frame_index=np.arange(len(names), dtype=np.int64),
                        num_frames=len(names), layout="toy")


def read_toy_predictions(path, gt, *, gt_path=None):
    """Predictions as CSV lines ``image,class,score,x1,y1,x2,y2``."""
    slot_of = gt.name_to_index()
    per_image = [[] for _ in range(len(gt))]
    n = 0
    for line in open(path, encoding="utf-8").read().splitlines():
        name, cls, score, *xs = line.split(",")
        per_image[slot_of[name]].append((*map(float, xs), float(score), TOY_CLASSES.index(cls) + 1))
        n += 1
    missing = sum(not r for r in per_image)
    return [rows_to_detections(r) for r in per_image], {"frames": None, "detections": n, "missing_frames": missing}


TOY_FORMAT = LabelFormat(
    name="toy",
    family="toy",
    read=read_toy,
    sniff=lambda head: head.startswith(b"#toy"),
    read_predictions=read_toy_predictions,
    box_convention="coco",
)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The toy format registered (the one registry line) and a label file with a bad row."""
    monkeypatch.setitem(LABEL_FORMATS, "toy", TOY_FORMAT)
    path = tmp_path / "labels.toy"
    path.write_text("\n".join([
        TOY_HEADER,
        "a.jpg,64,48,cat,1,2,30,40",
        "a.jpg,64,48,dog,10,10,20.5,20",
        "b.jpg,32,32,,,,,",
        "c.jpg,32,32,horse,0,0,5,5",
    ]) + "\n")
    return path


def test_a_registered_format_loads_end_to_end(toy, tmp_path):
    assert "toy" in format_choices() and detect_format(toy) == "toy"
    check_format_choice("toy")

    with pytest.raises(LabelFileError, match="unknown class 'horse'"):
        load_index(labels=toy, fmt="toy", log=quiet)

    problems = tmp_path / "problems.jsonl"
    for fmt in ("toy", "auto"):
        for _ in range(2):  # the second load comes from the index cache
            lines = []
            ix = load_index(labels=toy, fmt=fmt, strict=False, problems_path=problems,
                            cache_dir=tmp_path / "cache", log=lines.append)
            assert ix.names.tolist() == ["a.jpg", "b.jpg", "c.jpg"] and ix.classes == TOY_CLASSES
            assert ix.boxes.tolist() == [[1, 2, 30, 40], [10, 10, 20.5, 20]] and ix.labels.tolist() == [1, 2]
            assert ix.widths.tolist() == [64, 32, 32] and ix.offsets.tolist() == [0, 2, 2, 2]
            assert "layout toy" in "\n".join(lines)
            assert [json.loads(x)["kind"] for x in problems.read_text().splitlines()] == ["unknown_category"]
        assert any("loaded cached index" in line for line in lines)


def test_a_registered_format_evaluates(toy, tmp_path):
    from alod.evaluation import evaluate_files

    pred = tmp_path / "pred.csv"
    pred.write_text("a.jpg,cat,0.9,1,2,30,40\na.jpg,dog,0.8,40,40,50,47\n")
    # The label file has an unknown class: evaluation wants strict ground truth.
    with pytest.raises(LabelFileError, match="horse"):
        evaluate_files(gt=toy, pred=pred, log=quiet)
    toy.write_text("\n".join(toy.read_text().splitlines()[:-1]) + "\n")
    lines = []
    r = evaluate_files(gt=toy, pred=pred, log=lines.append)
    assert r["data_format"] == "toy" and r["box_convention"] == "coco" and r["classes"] == ["cat", "dog"]
    assert r["AP/cat"] == pytest.approx(1.0) and r["AP/dog"] == pytest.approx(0.0)
    assert "exact_gt_coordinates" not in r  # nothing is re-read: the index holds the file's values
    assert r["counts"]["detections"] == 2 and r["counts"]["images_without_predictions"] == 1


def test_a_format_without_prediction_reader_is_refused_by_evaluate(monkeypatch, toy, tmp_path):
    import dataclasses

    from alod.evaluation import evaluate_files

    monkeypatch.setitem(LABEL_FORMATS, "toy", dataclasses.replace(TOY_FORMAT, read_predictions=None))
    pred = tmp_path / "pred.csv"
    pred.write_text("")
    with pytest.raises(AlodError, match="label format 'toy' has no prediction reader"):
        evaluate_files(gt=toy, pred=pred, log=quiet)
