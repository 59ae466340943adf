"""BDD100K reader: both layouts, name mapping, ignored regions, bad records, streaming decoder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from alod.data.bdd100k import (
    BDD100K_CLASSES,
    detect_bdd_layout,
    iter_json_array,
    read_bdd100k,
)
from alod.data.problems import LabelFileError, ProblemLog
from alod.utils import AlodError

LABEL = BDD100K_CLASSES.index  # LABEL(name) + 1 is the label id


def box(x1, y1, x2, y2):
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def lab(category, b, id_="0", **extra):
    return {"id": id_, "category": category, "box2d": b, **extra}


# ----------------------------------------------------------------------------- real data
def test_real_det_val50(shared_data):
    path = shared_data / "bdd100k_val50" / "det_val50.json"
    parsed = read_bdd100k(path)
    ix = parsed.index
    assert parsed.layout == "bdd100k" and parsed.num_frames == 50
    assert len(ix) == 50 and ix.num_boxes == 901
    assert ix.classes == BDD100K_CLASSES
    assert ix.class_counts() == {
        "pedestrian": 76, "rider": 3, "car": 512, "truck": 21, "bus": 9, "train": 0,
        "motorcycle": 3, "bicycle": 1, "traffic light": 123, "traffic sign": 153,
    }  # fmt: skip
    assert not ix.ignore.any()
    assert (ix.widths == 1280).all() and (ix.heights == 720).all()
    frames = json.loads(path.read_text())
    assert ix.names.tolist() == [f["name"] for f in frames]
    assert ix.source == str(path)
    # every box of the file, exactly (float64)
    assert ix.boxes.tolist() == [[b["x1"], b["y1"], b["x2"], b["y2"]]
                                 for f in frames for b in (lab["box2d"] for lab in f["labels"])]
    assert ix.boxes.dtype == np.float64 and ix.labels.dtype == np.int64 and ix.ignore.dtype == bool
    np.testing.assert_array_equal(parsed.frame_index, np.arange(50))


# ----------------------------------------------------------------------------- layouts
def det20_frames():
    return [
        {
            "name": "a.jpg",
            "attributes": {"weather": "clear", "scene": "city street", "timeofday": "daytime"},
            "timestamp": 10000,
            "labels": [
                lab("car", box(1, 2, 30, 40), "00a1", attributes={"occluded": False, "truncated": False}),
                lab("other person", box(5, 5, 9, 20), "00a2"),
                lab("traffic sign", box(100.5, 10.25, 120.75, 30.125), "00a3"),
            ],
        },
        {"name": "b.jpg", "labels": None},  # null labels: an image without boxes
        {"name": "c.jpg"},  # no labels field at all
        {
            "name": "d.jpg",
            "labels": [
                lab("other vehicle", box(0, 0, 10, 10)),
                lab("trailer", box(1, 1, 11, 11)),
                lab("van", box(2, 2, 12, 12)),
                lab("caravan", box(3, 3, 13, 13)),
                lab("train", box(4, 4, 14, 14)),
            ],
        },
    ]


def test_det20_hand_written(write_json):
    parsed = read_bdd100k(write_json(det20_frames()), layout="bdd100k", image_size=(640, 360))
    ix = parsed.index
    assert ix.names.tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert ix.offsets.tolist() == [0, 3, 3, 3, 8]
    assert (ix.widths == 640).all() and (ix.heights == 360).all()
    names = [BDD100K_CLASSES[k - 1] for k in ix.labels]
    assert names == ["car", "pedestrian", "traffic sign", "car", "truck", "car", "car", "train"]
    assert ix.ignore.tolist() == [False, True, False, True, True, False, False, False]
    assert ix.boxes[2].tolist() == [100.5, 10.25, 120.75, 30.125]
    assert parsed.layout == "bdd100k"


def frames_2018():
    return [
        {
            "name": "x.jpg",
            "attributes": {"weather": "rainy", "scene": "highway", "timeofday": "night"},
            "timestamp": 10000,
            "labels": [
                {"id": 0, "category": "person", "box2d": box(1, 1, 5, 9), "attributes": {"occluded": True}},
                {"id": 1, "category": "bike", "box2d": box(2, 2, 6, 6)},
                {"id": 2, "category": "motor", "box2d": box(3, 3, 7, 7)},
                {"id": 3, "category": "drivable area", "poly2d": [{"vertices": [[0, 0], [5, 5], [0, 5]],
                                                                   "types": "LLL", "closed": True}]},
                {"id": 4, "category": "lane", "poly2d": [{"vertices": [[0, 0], [5, 5]], "types": "LL"}]},
                {"id": 5, "category": "traffic light", "box2d": box(4, 4, 8, 8),
                 "attributes": {"trafficLightColor": "green"}},
            ],
        },
        {"name": "y.jpg", "labels": [{"id": 6, "category": "drivable area", "poly2d": []}]},
    ]


@pytest.mark.parametrize("layout", ["bdd100k_2018", "auto"])
def test_2018_layout(write_json, layout):
    log = ProblemLog(strict=True)
    parsed = read_bdd100k(write_json(frames_2018()), layout=layout, problems=log)
    ix = parsed.index
    assert parsed.layout == "bdd100k_2018"
    assert len(log) == 0  # polygons are not boxes, not problems
    assert ix.offsets.tolist() == [0, 4, 4]
    assert [BDD100K_CLASSES[k - 1] for k in ix.labels] == ["pedestrian", "bicycle", "motorcycle", "traffic light"]


def test_2018_file_read_as_det20_reports_polygons(write_json):
    expected = r"frame 0 \('x.jpg'\), label 3 \(id 3\): unknown category 'drivable area'"
    with pytest.raises(LabelFileError, match=expected):
        read_bdd100k(write_json(frames_2018()), layout="bdd100k")


def test_detect_bdd_layout():
    assert detect_bdd_layout(["car", "person"]) == "bdd100k_2018"
    assert detect_bdd_layout(["car", "lane"]) == "bdd100k_2018"
    assert detect_bdd_layout(["car", "pedestrian"]) == "bdd100k"
    assert detect_bdd_layout(["car", "traffic sign"]) is None


def test_unknown_layout_is_an_alod_error(write_json):
    with pytest.raises(AlodError, match="unknown BDD100K layout"):
        read_bdd100k(write_json([]), layout="det20")


def test_empty_list(write_json):
    ix = read_bdd100k(write_json([])).index
    assert len(ix) == 0 and ix.num_boxes == 0 and ix.offsets.tolist() == [0]


# ----------------------------------------------------------------------------- bad records
BAD_CASES = {
    # kind: (bad frame placed at position 1, text the message must contain)
    "inverted_box": ({"name": "bad.jpg", "labels": [lab("car", box(50, 0, 10, 10), "7")]}, "x2 < x1 or y2 < y1"),
    "inverted_box_y": ({"name": "bad.jpg", "labels": [lab("car", box(0, 50, 10, 10), "7")]}, "x2 < x1 or y2 < y1"),
    "non_finite": ({"name": "bad.jpg", "labels": [lab("car", box(0, 0, float("nan"), 10), "7")]}, "NaN"),
    "non_finite_inf": ({"name": "bad.jpg", "labels": [lab("car", box(0, 0, float("inf"), 10), "7")]}, "infinite"),
    "non_finite_big": ({"name": "bad.jpg", "labels": [lab("car", box(0, 0, 10**400, 10), "7")]}, "too large"),
    "unknown_category": (
        {"name": "bad.jpg", "labels": [lab("spaceship", box(0, 0, 1, 1), "7")]}, "unknown category 'spaceship'"
    ),
    "bad_coordinates": ({"name": "bad.jpg", "labels": [lab("car", box(0, 0, "10", 10), "7")]}, "must be numbers"),
    "missing_box2d": ({"name": "bad.jpg", "labels": [{"id": "7", "category": "car"}]}, "no box2d"),
    "label_not_object": ({"name": "bad.jpg", "labels": ["car"]}, "label is a JSON string"),
    "labels_not_list": ({"name": "bad.jpg", "labels": {"car": 1}}, "'labels' is a JSON object"),
    "missing_name": ({"labels": [lab("car", box(0, 0, 1, 1))]}, "no image name"),
    "empty_name": ({"name": "", "labels": []}, "no image name"),
    "frame_not_object": (["bad.jpg"], "frame is a JSON array"),
    "duplicate_name": ({"name": "good.jpg", "labels": []}, "appears again"),
    "image_outside_root": ({"name": "/etc/passwd", "labels": []}, "is an absolute path"),
    "image_outside_root_dotdot": ({"name": "../../etc/passwd", "labels": []}, "has a '..' component"),
    "box_outside_image": ({"name": "bad.jpg", "labels": [lab("car", box(0, 0, 1e30, 10), "7")]},
                          "outside the 1280x720 image"),
    "box_outside_image_left": ({"name": "bad.jpg", "labels": [lab("car", box(-13, 0, 10, 10), "7")]},
                               "by more than 12.8 px horizontally"),
    "box_outside_image_below": ({"name": "bad.jpg", "labels": [lab("car", box(0, 700, 10, 728), "7")]},
                                "or 7.2 px vertically"),
    "bool_coordinate": ({"name": "bad.jpg", "labels": [lab("car", box(0, 0, True, 10), "7")]}, "must be numbers"),
}


def with_bad(bad):
    return [
        {"name": "good.jpg", "labels": [lab("car", box(0, 0, 10, 10)), lab("bus", box(1, 1, 20, 20))]},
        bad,
        {"name": "after.jpg", "labels": [lab("truck", box(2, 2, 5, 5))]},
    ]


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_strict_error_names_file_frame_name_and_problem(write_json, case):
    bad, text = BAD_CASES[case]
    path = write_json(with_bad(bad))
    with pytest.raises(LabelFileError) as err:
        read_bdd100k(path)
    msg = str(err.value)
    assert str(path) in msg and "frame 1" in msg and text in msg, msg
    if isinstance(bad, dict) and bad.get("name"):
        assert f"'{bad['name']}'" in msg
    if case in ("inverted_box", "non_finite", "unknown_category", "bad_coordinates"):
        assert "label 0 (id '7')" in msg
    assert "To fix:" in msg and "strict=False" in msg


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_skip_mode_keeps_good_boxes(write_json, case):
    bad, _ = BAD_CASES[case]
    log = ProblemLog(strict=False)
    ix = read_bdd100k(write_json(with_bad(bad)), problems=log).index
    assert len(log.errors) == 1
    p = log.errors[0]
    assert p.frame == 1 and p.skipped in ("box", "frame")
    if p.skipped == "frame":
        assert ix.names.tolist() == ["good.jpg", "after.jpg"]
        assert ix.num_boxes == 3
    else:
        assert ix.names.tolist() == ["good.jpg", "bad.jpg", "after.jpg"]
        assert ix.offsets.tolist() == [0, 2, 2, 3]


def test_skip_mode_mixed_frame_keeps_its_good_boxes(write_json):
    frames = [{"name": "m.jpg", "labels": [
        lab("car", box(0, 0, 10, 10), "a"),
        lab("car", box(10, 0, 0, 10), "b"),  # inverted
        lab("ufo", box(0, 0, 1, 1), "c"),
        lab("bus", box(1, 1, 2, 2), "d"),
    ]}]
    log = ProblemLog(strict=False)
    parsed = read_bdd100k(write_json(frames), problems=log)
    assert log.counts() == {"inverted_box": 1, "unknown_category": 1}
    assert [(p.label, p.label_id) for p in log.problems] == [(1, "b"), (2, "c")]
    assert [BDD100K_CLASSES[k - 1] for k in parsed.index.labels] == ["car", "bus"]


def test_zero_area_boxes_are_kept_as_notes(write_json):
    frames = [{"name": "z.jpg", "labels": [lab("car", box(5, 5, 5, 10)), lab("car", box(1, 1, 9, 9))]}]
    log = ProblemLog(strict=True)  # a note never raises
    ix = read_bdd100k(write_json(frames), problems=log).index
    assert ix.num_boxes == 2
    assert [(p.kind, p.severity, p.skipped, p.label) for p in log.problems] == [("zero_area_box", "note", "nothing", 0)]
    assert log.errors == []


def test_skipped_frames_leave_gaps_in_frame_index(write_json):
    frames = [{"name": "a.jpg"}, {"labels": []}, {"name": "c.jpg"}]
    parsed = read_bdd100k(write_json(frames), problems=ProblemLog(strict=False))
    assert parsed.frame_index.tolist() == [0, 2] and parsed.num_frames == 3


def test_top_level_not_a_list_is_fatal_even_when_skipping(write_json):
    with pytest.raises(LabelFileError, match="top level is an object.*fmt='coco'"):
        read_bdd100k(write_json({"images": []}), problems=ProblemLog(strict=False))


# ----------------------------------------------------------------------------- streaming decoder
@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 22])
def test_stream_matches_json_load(shared_data, chunk):
    path = shared_data / "bdd100k_val50" / "det_val50.json"
    assert list(iter_json_array(path, chunk_chars=chunk)) == json.loads(path.read_text())


MALFORMED = [
    '[{"name": "a.jpg", "labels": []},\n {"name": "b.jpg" "labels": []}]',  # missing comma
    '[{"name": "a.jpg", "labels": [\n  {"id": "1", "category": "car", "box2d": {"x1": 1,}}]}]',
    '[{"name": "a.jpg"},\n\n  {"name": "b.jpg", "labels": [}]',
    '[{"name": "a.jpg"},\n {"name": "b.jpg"}',  # truncated
    '[{"name": "a.jpg"}]\n garbage',
    '[{"name": "a.jpg"},]',
    "",
]


@pytest.mark.parametrize("text", MALFORMED)
@pytest.mark.parametrize("chunk", [2, 1 << 22])
def test_malformed_json_reports_line_and_column_like_json(tmp_path, text, chunk):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(text)
    with pytest.raises(LabelFileError) as err:
        list(iter_json_array(path, chunk_chars=chunk))
    assert f"line {ref.value.lineno}, column {ref.value.colno}" in str(err.value)
    assert str(path) in str(err.value) and "not valid JSON" in str(err.value)


def test_malformed_json_is_fatal_even_when_skipping(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"name": "a.jpg"},\n {"name": ]')
    with pytest.raises(LabelFileError, match=r"line 2, column 11: not valid JSON"):
        read_bdd100k(path, problems=ProblemLog(strict=False))
