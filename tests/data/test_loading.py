"""load_index: format detection, image checks, problem reporting, the index cache."""
from __future__ import annotations

import json
import shutil

import pytest

from alod.data.bdd100k import read_bdd100k
from alod.data.coco import read_coco
from alod.data.index import DetectionIndex
from alod.data.loading import load_index
from alod.data.problems import LabelFileError
from alod.data.readers import detect_format
from alod.utils import AlodError


class Log(list):
    """A ``log`` callable that keeps the lines."""

    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


def frames(names, bad_at=None):
    out = []
    for i, n in enumerate(names):
        x2 = 0 if i == bad_at else 10  # x2 < x1 = 5: an inverted box
        out.append({"name": n, "labels": [
            {"id": f"{i}a", "category": "car", "box2d": {"x1": 5, "y1": 0, "x2": x2, "y2": 10}},
            {"id": f"{i}b", "category": "bus", "box2d": {"x1": 1, "y1": 1, "x2": 9, "y2": 9}},
        ]})
    return out


@pytest.fixture
def bdd_set(tmp_path, shared_data):
    """Three real images (one empty, one not an image) and a det_20 file naming four frames."""
    src = shared_data / "bdd100k_val50" / "images"
    root = tmp_path / "images"
    root.mkdir()
    real = sorted(p.name for p in src.iterdir())[:2]
    for n in real:
        shutil.copyfile(src / n, root / n)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not a JPEG")
    labels = tmp_path / "det_val.json"
    labels.write_text(json.dumps(frames(real + ["missing.jpg", "empty.jpg", "text.jpg"])))
    return labels, root, real


# ----------------------------------------------------------------------------- real data, formats
def test_real_bdd_with_image_checks(shared_data):
    d = shared_data / "bdd100k_val50"
    log = Log()
    ix = load_index(labels=d / "det_val50.json", image_root=d / "images", verify_images=True, log=log)
    assert len(ix) == 50 and ix.num_boxes == 901 and ix.image_root == str(d / "images")
    assert ix.image_path(0).is_file()
    assert "50 images, 901 boxes" in log.text() and "problem" not in log.text()


def test_real_coco_auto(shared_data):
    d = shared_data / "coco128"
    ix = load_index(labels=d / "instances_val2017.json", image_root=d / "images" / "val2017", log=Log())
    assert len(ix) == 128 and ix.num_boxes == 898 and ix.num_classes == 80
    assert detect_format(d / "instances_val2017.json") == "coco"
    assert detect_format(shared_data / "bdd100k_val50" / "det_val50.json") == "bdd100k"


def test_detect_format_rejects_non_json(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("name,x1,y1\n")
    with pytest.raises(LabelFileError, match="cannot tell the label format"):
        detect_format(p)


def test_argument_errors(tmp_path, write_json):
    path = write_json([])
    with pytest.raises(AlodError, match="does not exist"):
        load_index(labels=tmp_path / "nope.json", log=Log())
    with pytest.raises(AlodError, match="unknown label format"):
        load_index(labels=path, fmt="yolo", log=Log())
    with pytest.raises(AlodError, match="image folder"):
        load_index(labels=path, image_root=tmp_path / "no_images", log=Log())
    with pytest.raises(AlodError, match="verify_images=True needs an image_root"):
        load_index(labels=path, verify_images=True, log=Log())


# ----------------------------------------------------------------------------- image checks
def test_strict_missing_image_names_frame(bdd_set):
    labels, root, _ = bdd_set
    with pytest.raises(LabelFileError) as err:
        load_index(labels=labels, image_root=root, log=Log())
    msg = str(err.value)
    assert str(labels) in msg and "frame 2 ('missing.jpg')" in msg and "does not exist" in msg


def test_skip_mode_image_problems(bdd_set, tmp_path):
    labels, root, real = bdd_set
    log, out = Log(), tmp_path / "run" / "label_problems.jsonl"
    ix = load_index(labels=labels, image_root=root, strict=False, problems_path=out, log=log)
    # without verify: only the missing and the empty file are caught
    assert ix.names.tolist() == real + ["text.jpg"]
    problems = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["kind"], p["frame"], p["name"], p["skipped"]) for p in problems] == [
        ("missing_image", 2, "missing.jpg", "frame"),
        ("unreadable_image", 3, "empty.jpg", "frame"),
    ]
    assert all(p["file"] == str(labels) and p["action"] and p["detail"] for p in problems)
    assert "  missing_image: 1 -- " in log.text() and "  unreadable_image: 1 -- " in log.text()
    assert "skipped 0 box(es) and 2 frame(s)" in log.text()

    ix = load_index(labels=labels, image_root=root, strict=False, verify_images=True, log=log)
    assert ix.names.tolist() == real


# ----------------------------------------------------------------------------- reporting
def test_skip_mode_reports_counts_and_writes_every_problem(tmp_path, write_json):
    data = frames(["a.jpg", "b.jpg", "c.jpg"], bad_at=1)
    data.append({"labels": []})
    data.append({"name": "d.jpg", "labels": [
        {"id": "x", "category": "ufo", "box2d": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}},
        {"id": "y", "category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 0, "y2": 1}},  # zero area: a note
    ]})
    labels = write_json(data)
    log, out = Log(), tmp_path / "problems.jsonl"
    ix = load_index(labels=labels, strict=False, problems_path=out, log=log)
    assert ix.names.tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert ix.num_boxes == 2 + 1 + 2 + 1  # b.jpg lost its inverted box, d.jpg the ufo
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert kinds == ["inverted_box", "missing_name", "unknown_category", "zero_area_box"]
    per_kind = [line for line in log if line.startswith("  ")]
    assert len(per_kind) == 4  # one line per kind
    assert any(line.startswith("  zero_area_box: 1") and line.endswith("kept") for line in per_kind)
    assert "skipped 2 box(es) and 1 frame(s)" in log.text() and str(out) in log.text()


def test_without_problems_path_examples_are_printed(write_json):
    log = Log()
    load_index(labels=write_json(frames(["a.jpg", "b.jpg"], bad_at=0)), strict=False, log=log)
    assert "pass problems_path" in log.text() and "e.g. " in log.text() and "frame 0 ('a.jpg')" in log.text()


def test_problems_file_is_written_empty_when_clean(tmp_path, write_json):
    out = tmp_path / "p.jsonl"
    load_index(labels=write_json(frames(["a.jpg"])), problems_path=out, log=Log())
    assert out.read_text() == ""


# ----------------------------------------------------------------------------- cache
def test_cache_equals_fresh_parse(tmp_path, shared_data):
    labels = shared_data / "bdd100k_val50" / "det_val50.json"
    images = shared_data / "bdd100k_val50" / "images"
    cache = tmp_path / "cache"
    log = Log()
    first = load_index(labels=labels, image_root=images, cache_dir=cache, log=log)
    [npz] = cache.glob("index-*.npz")
    assert len(npz.stem) == len("index-") + 16 and npz.with_suffix(".json").is_file()
    assert "loaded cached" not in log.text()
    second = load_index(labels=labels, image_root=images, cache_dir=cache, log=log)
    assert "loaded cached index" in log.text()
    fresh = read_bdd100k(labels, image_root=images).index
    assert first.equals(fresh) and second.equals(fresh)
    assert DetectionIndex.load(npz).boxes.shape == (901, 4)


def test_cache_coco(tmp_path, shared_data):
    labels = shared_data / "coco128" / "instances_train2017.json"
    cache = tmp_path / "cache"
    load_index(labels=labels, cache_dir=cache, log=Log())
    log = Log()
    cached = load_index(labels=labels, cache_dir=cache, log=log)
    assert "loaded cached index" in log.text() and cached.equals(read_coco(labels).index)


def test_cache_invalidated_when_labels_change(tmp_path, write_json):
    cache = tmp_path / "cache"
    labels = write_json(frames(["a.jpg", "b.jpg"]))
    one = load_index(labels=labels, cache_dir=cache, log=Log())
    labels.write_text(json.dumps(frames(["a.jpg", "b.jpg", "c.jpg"])))
    log = Log()
    two = load_index(labels=labels, cache_dir=cache, log=log)
    assert "loaded cached" not in log.text()
    assert len(one) == 2 and len(two) == 3 and len(list(cache.glob("index-*.npz"))) == 2


def test_cache_key_covers_parameters(tmp_path, write_json):
    cache = tmp_path / "cache"
    labels = write_json(frames(["a.jpg"]))
    load_index(labels=labels, cache_dir=cache, log=Log())
    other = load_index(labels=labels, cache_dir=cache, image_size=(640, 360), log=Log())
    assert other.widths.tolist() == [640]
    load_index(labels=labels, cache_dir=cache, strict=False, log=Log())
    load_index(labels=labels, cache_dir=cache, fmt="bdd100k", log=Log())
    assert len(list(cache.glob("index-*.npz"))) == 4


def test_cached_load_still_writes_problems(tmp_path, write_json):
    cache = tmp_path / "cache"
    labels = write_json(frames(["a.jpg", "b.jpg"], bad_at=1))
    out1, out2 = tmp_path / "p1.jsonl", tmp_path / "p2.jsonl"
    log1, log2 = Log(), Log()
    fresh = load_index(labels=labels, cache_dir=cache, strict=False, problems_path=out1, log=log1)
    cached = load_index(labels=labels, cache_dir=cache, strict=False, problems_path=out2, log=log2)
    assert "loaded cached index" in log2.text()
    assert cached.equals(fresh)
    assert out1.read_text() == out2.read_text() != ""
    assert [line for line in log1 if "inverted_box" in line] == [line for line in log2 if "inverted_box" in line]


@pytest.mark.parametrize("damage", ["truncate_npz", "garbage_sidecar", "delete_sidecar"])
def test_corrupt_cache_warns_and_reparses(tmp_path, write_json, damage):
    cache = tmp_path / "cache"
    labels = write_json(frames(["a.jpg", "b.jpg"]))
    fresh = load_index(labels=labels, cache_dir=cache, log=Log())
    [npz] = cache.glob("index-*.npz")
    if damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "garbage_sidecar":
        npz.with_suffix(".json").write_text("{not json")
    else:
        npz.with_suffix(".json").unlink()
    log = Log()
    again = load_index(labels=labels, cache_dir=cache, log=log)
    assert "warning: index cache" in log.text() and "re-parsing" in log.text()
    assert again.equals(fresh)
    log = Log()
    load_index(labels=labels, cache_dir=cache, log=log)  # the rewritten cache is good again
    assert "loaded cached index" in log.text() and "warning" not in log.text()


def test_strict_failure_writes_no_cache(tmp_path, write_json):
    cache = tmp_path / "cache"
    with pytest.raises(LabelFileError):
        load_index(labels=write_json(frames(["a.jpg"], bad_at=0)), cache_dir=cache, log=Log())
    assert not list(cache.glob("index-*")) if cache.exists() else True
