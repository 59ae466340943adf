"""COCO reader: label mapping, box conversion, crowd regions, empty images, bad records."""
from __future__ import annotations

import json

import numpy as np
import pytest

from alod.data.coco import coco_classes, coco_label_map, read_coco, read_coco_label_map
from alod.data.problems import LabelFileError, ProblemLog


# ----------------------------------------------------------------------------- real data
@pytest.mark.parametrize("split,n_boxes,n_empty", [("train", 929, 2), ("val", 898, 0)])
def test_real_coco128(shared_data, split, n_boxes, n_empty):
    path = shared_data / "coco128" / f"instances_{split}2017.json"
    data = json.loads(path.read_text())
    log = ProblemLog(strict=True)
    parsed = read_coco(path, problems=log)
    ix = parsed.index
    assert log.problems == []  # no box outside its image, not even a note
    assert parsed.layout == "coco" and len(ix) == 128 and ix.num_boxes == n_boxes
    assert ix.num_classes == 80 and ix.classes[:3] == ("person", "bicycle", "car")
    assert int((np.diff(ix.offsets) == 0).sum()) == n_empty  # images without boxes are kept
    assert ix.names.tolist() == [im["file_name"] for im in data["images"]]
    assert ix.widths.tolist() == [im["width"] for im in data["images"]]
    assert ix.heights.tolist() == [im["height"] for im in data["images"]]

    label_of = read_coco_label_map(path)
    assert sorted(label_of) == sorted(c["id"] for c in data["categories"])
    assert sorted(label_of.values()) == list(range(1, 81)) and label_of[90] == 80
    slot = {im["id"]: i for i, im in enumerate(data["images"])}
    seen = [0] * len(ix)
    for a in data["annotations"]:  # every annotation, in file order within its image
        i = slot[a["image_id"]]
        boxes, labels, ignore = ix.annotations(i)
        x, y, w, h = a["bbox"]
        assert boxes[seen[i]].tolist() == [x, y, x + w, y + h]  # float64: the file's values, exactly
        assert labels[seen[i]] == label_of[a["category_id"]] and ignore[seen[i]] == bool(a["iscrowd"])
        seen[i] += 1
    assert seen == np.diff(ix.offsets).tolist()


# ----------------------------------------------------------------------------- hand-written
def coco(images=None, annotations=None, categories=None):
    return {
        "images": images if images is not None else [
            {"id": 10, "file_name": "a.jpg", "width": 640, "height": 480},
            {"id": 7, "file_name": "b.jpg", "width": 320, "height": 240},
            {"id": 3, "file_name": "empty.jpg", "width": 100, "height": 100},
        ],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 7, "category_id": 90, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [10.5, 20, 5, 6], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 10, 10]},  # iscrowd missing
        ],
        "categories": categories if categories is not None else [
            {"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"},
        ],
    }


def test_hand_written(write_json):
    ix = read_coco(write_json(coco())).index
    assert ix.classes == ("person", "car", "toothbrush")  # ascending category id
    assert ix.names.tolist() == ["a.jpg", "b.jpg", "empty.jpg"]  # order of 'images'
    assert ix.offsets.tolist() == [0, 1, 3, 3]
    assert ix.boxes.dtype == np.float64
    assert ix.boxes.tolist() == [[10.5, 20, 15.5, 26], [1, 2, 4, 6], [0, 0, 10, 10]]
    assert ix.labels.tolist() == [1, 3, 2]
    assert ix.ignore.tolist() == [True, False, False]
    assert ix.widths.tolist() == [640, 320, 100] and ix.heights.tolist() == [480, 240, 100]


def test_label_map_is_ascending_and_contiguous():
    cats = [{"id": 90, "name": "z"}, {"id": 1, "name": "a"}, {"id": 44, "name": "m"}]
    assert coco_label_map(cats) == {1: 1, 44: 2, 90: 3}
    assert coco_classes(cats) == ("a", "m", "z")


@pytest.mark.parametrize(
    "cats,text",
    [([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "appear more than once"),
     ([{"id": "1", "name": "a"}], "integer 'id'"),
     ([{"id": 1}], "string 'name'")],
)
def test_broken_categories_are_fatal(write_json, cats, text):
    with pytest.raises(LabelFileError, match=text):
        read_coco(write_json(coco(categories=cats)), problems=ProblemLog(strict=False))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_list_is_fatal(write_json, key):
    data = coco()
    del data[key]
    with pytest.raises(LabelFileError, match=f"needs the lists {key}"):
        read_coco(write_json(data), problems=ProblemLog(strict=False))


def test_list_top_level_suggests_bdd(write_json):
    with pytest.raises(LabelFileError, match="fmt='bdd100k'"):
        read_coco(write_json([]))


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(LabelFileError, match=r"bad.json: line 2, column 18: not valid JSON"):
        read_coco(path, problems=ProblemLog(strict=False))


# ----------------------------------------------------------------------------- bad records
ANN_CASES = {
    # kind: (annotation replacing the first one, text in the message)
    "inverted_box": ({"id": 1, "image_id": 7, "category_id": 90, "bbox": [5, 5, -3, 4]}, "negative width or height"),
    "non_finite": ({"id": 1, "image_id": 7, "category_id": 90, "bbox": [5, float("nan"), 3, 4]}, "NaN or infinite"),
    "unknown_category": ({"id": 1, "image_id": 7, "category_id": 12, "bbox": [5, 5, 3, 4]}, "category_id 12 is not in"),
    "unknown_image_id": ({"id": 1, "image_id": 99, "category_id": 90, "bbox": [5, 5, 3, 4]}, "image_id 99 is not in"),
    "bad_coordinates": ({"id": 1, "image_id": 7, "category_id": 90, "bbox": [5, 5, 3]}, "bbox must be"),
    "bad_record": ("not an annotation", "annotation is a JSON string"),
}


@pytest.mark.parametrize("case", sorted(ANN_CASES))
def test_bad_annotation(write_json, case):
    ann, text = ANN_CASES[case]
    data = coco()
    data["annotations"][0] = ann
    path = write_json(data)
    with pytest.raises(LabelFileError) as err:
        read_coco(path)
    msg = str(err.value)
    assert str(path) in msg and "label 0" in msg and text in msg, msg
    if case not in ("unknown_image_id", "bad_record"):
        assert "frame 1 ('b.jpg')" in msg and "(id 1)" in msg

    log = ProblemLog(strict=False)
    ix = read_coco(path, problems=log).index
    assert log.counts() == {case: 1}
    assert ix.num_boxes == 2 and ix.offsets.tolist() == [0, 1, 2, 2]


IMAGE_CASES = {
    "missing_name": ({"id": 7, "width": 320, "height": 240}, "no file_name"),
    "duplicate_name": ({"id": 7, "file_name": "a.jpg", "width": 320, "height": 240}, "file_name 'a.jpg' appears again"),
    "bad_record": ({"id": 7, "file_name": "b.jpg", "width": 0, "height": 240}, "integer width and height in 1.."),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image_record_skips_the_frame_and_its_boxes(write_json, case):
    im, text = IMAGE_CASES[case]
    data = coco()
    data["images"][1] = im
    path = write_json(data)
    with pytest.raises(LabelFileError, match=text) as err:
        read_coco(path)
    assert "frame 1" in str(err.value)

    log = ProblemLog(strict=False)
    parsed = read_coco(path, problems=log)
    assert log.counts() == {case: 1} and log.problems[0].skipped == "frame"
    assert parsed.index.names.tolist() == ["a.jpg", "empty.jpg"]
    assert parsed.index.num_boxes == 1  # b.jpg's two boxes went with it, reported once
    assert parsed.frame_index.tolist() == [0, 2] and parsed.num_frames == 3


def test_zero_area_box_is_a_note(write_json):
    data = coco()
    data["annotations"][0]["bbox"] = [1, 2, 0, 4]
    log = ProblemLog(strict=True)
    ix = read_coco(write_json(data), problems=log).index
    assert ix.num_boxes == 3
    [note] = log.problems
    assert (note.kind, note.severity, note.frame, note.name, note.label, note.label_id) == (
        "zero_area_box", "note", 1, "b.jpg", 0, 1)


@pytest.mark.parametrize("bbox,kind", [
    ([1e39, 0, 1, 1], "box_outside_image"), ([3e38, 0, 3e38, 1], "box_outside_image"),
    ([0, 0, 1e30, 1], "box_outside_image"), ([1e308, 0, 1e308, 1], "non_finite"),  # x + w overflows
    ([10**400, 0, 1, 1], "non_finite"), ([0, 0, float("inf"), 1], "non_finite"),
])
def test_huge_or_infinite_coordinates(write_json, bbox, kind):
    data = coco()
    data["annotations"][0]["bbox"] = bbox
    log = ProblemLog(strict=False)
    ix = read_coco(write_json(data), problems=log).index
    assert log.counts() == {kind: 1} and ix.num_boxes == 2


def test_boxes_are_checked_against_their_image_record_size(write_json):
    data = coco()  # b.jpg is 320x240: slack 3.2 px horizontally, 2.4 px vertically
    data["annotations"][0]["bbox"] = [318, 230, 5, 12]  # to 323 x 242: a little out -> clipped
    data["annotations"][2]["bbox"] = [300, 0, 30, 10]  # to 330: 10 px out -> refused
    log = ProblemLog(strict=False)
    ix = read_coco(write_json(data), problems=log).index
    assert log.counts() == {"box_clipped": 1, "box_outside_image": 1}
    clipped, outside = log.problems
    assert (clipped.severity, clipped.skipped, clipped.label_id) == ("note", "nothing", 1)
    assert (outside.severity, outside.skipped, outside.label_id, outside.name) == ("error", "box", 3, "b.jpg")
    assert "320x240" in outside.detail
    assert ix.annotations(1)[0].tolist() == [[318.0, 230.0, 320.0, 240.0]]
    # the same box fits the 640x480 a.jpg
    data["annotations"][2]["image_id"] = 10
    assert read_coco(write_json(data), problems=ProblemLog(strict=False)).index.num_boxes == 3


@pytest.mark.parametrize("field,value,kind", [
    ("bbox", [1, 2, True, 4], "bad_coordinates"), ("image_id", True, "unknown_image_id"),
    ("category_id", True, "unknown_category"),
])
def test_json_booleans_are_not_numbers(write_json, field, value, kind):
    data = coco()
    data["images"][0]["id"] = data["annotations"][1]["image_id"] = 1  # true == 1 in Python: it would match
    assert data["categories"][1]["id"] == 1
    data["annotations"][0][field] = value
    log = ProblemLog(strict=False)
    read_coco(write_json(data), problems=log)
    assert log.counts() == {kind: 1}


def test_huge_image_size_is_a_bad_record(write_json):
    data = coco()
    data["images"][1]["width"] = 1e300
    log = ProblemLog(strict=False)
    assert read_coco(write_json(data), problems=log).index.names.tolist() == ["a.jpg", "empty.jpg"]
    assert log.counts() == {"bad_record": 1}
