"""Property-based tests: hostile and broken label files never crash ``load_index``.

Hypothesis generates BDD100K frames and COCO records with wrong types, missing keys,
NaN/inf/huge coordinates, booleans for numbers, unicode and path-like image names (absolute, ``..``,
NUL, backslash, drive letters, lone surrogates) and nested junk. Whatever comes in, ``load_index``
either returns an index or raises :class:`~alod.utils.AlodError` (``LabelFileError`` is one) whose
message names the label file: never any other exception. When it returns, the index keeps its
promises (finite float64 boxes inside their image, confined unique names), and in skip mode every
frame of the file is either in the index or reported once.
"""
from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alod.data.loading import load_index
from alod.data.problems import KINDS, NOTE_KINDS, image_name_problem
from alod.utils import AlodError

# database=None: no .hypothesis folder in the repository; a failure prints its reproducing example.
SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- the image folder
GOOD_IMAGES = [f"good{i}.jpg" for i in range(5)] + ["sub/good.jpg"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
    """An image folder (good frames, a truncated one, an empty file, a folder named like an image,
    a symlink to a frame outside it) and a folder for the generated label files."""
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "images"
    (root / "sub").mkdir(parents=True)
    src = sorted((shared_data / "bdd100k_val50" / "images").iterdir())[0]
    for name in GOOD_IMAGES:
        shutil.copyfile(src, root / name)
    data = src.read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "dir.jpg").mkdir()
    (base / "outside.jpg").write_bytes(data)
    (root / "link.jpg").symlink_to(base / "outside.jpg")
    return {"root": root, "labels": base / "labels", "cache": base / "cache", "n": itertools.count()}


# ----------------------------------------------------------------------------- strategies
def mostly(good, *bad):
    """``good`` three times in four, else one of ``bad``: most files get past their first bad
    record, so the checks further in (images, boxes, the cache) are exercised too."""
    return st.integers(0, 3).flatmap(lambda k: good if k < 3 else st.one_of(*bad))


leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.sampled_from([10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
)
junk = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=6)
coordinate = st.one_of(
    st.floats(-50, 1400), st.integers(-20, 1300),
    st.sampled_from([0, 1280, 720, -12.8, -13, 1292.8, 1293, 1e30, -1e30, 1e308, 10**400, float("nan"),
                     float("inf"), -float("inf"), True, False, "10", None]),
    junk,
)


@st.composite
def inside(draw, hi):
    """A sorted pair of coordinates in [0, hi] (most boxes are fine)."""
    a, b = sorted(draw(st.lists(st.floats(0, hi) | st.integers(0, int(hi)), min_size=2, max_size=2)))
    return a, b


@st.composite
def good_box2d(draw):
    (x1, x2), (y1, y2) = draw(inside(1280)), draw(inside(720))
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


HOSTILE_NAMES = ["/etc/passwd", "../../etc/passwd", "sub/../../outside.jpg", "a\x00.jpg", "C:\\x.jpg", "D:/x.jpg",
                 "\\\\srv\\share\\x.jpg", "", ".", "./", "..", "a\udc80.jpg", "\ud800.jpg"]
OTHER_NAMES = ["cut.jpg", "empty.jpg", "dir.jpg", "link.jpg", "missing.jpg", "./good0.jpg", "sub//good.jpg"]
good_name = st.sampled_from(GOOD_IMAGES)
name = mostly(
    good_name,
    st.sampled_from(OTHER_NAMES + HOSTILE_NAMES),
    st.text(alphabet=st.sampled_from(list("ab./\\:\x00é画") + ["\udc80"]), max_size=8),
    junk,
)
good_category = st.sampled_from(["car", "pedestrian", "person", "bike", "traffic light", "other vehicle", "trailer"])
category = mostly(good_category, st.sampled_from(["drivable area", "lane", "ufo", ""]), junk)
box2d = mostly(
    good_box2d(),
    st.fixed_dictionaries({k: coordinate for k in ("x1", "y1", "x2", "y2")}),
    st.fixed_dictionaries({}, optional={k: coordinate for k in ("x1", "y1", "x2", "y2")}),
    junk,
)
bdd_label = mostly(
    st.fixed_dictionaries({"category": category, "box2d": box2d}, optional={"id": junk, "attributes": junk}),
    st.fixed_dictionaries({}, optional={"category": category, "box2d": box2d}),
    junk,
)
good_frame = st.fixed_dictionaries({"name": name, "labels": st.lists(bdd_label, max_size=4)},
                                   optional={"attributes": junk})
bdd_frame = mostly(
    good_frame,
    st.fixed_dictionaries({}, optional={"name": name, "labels": st.one_of(st.lists(bdd_label, max_size=2), junk)}),
    junk,
)
bdd_file = mostly(st.lists(bdd_frame, max_size=6), junk)

image_id = mostly(st.integers(1, 4), st.sampled_from([0, "1", "x", True, 1.0]), junk)
side = mostly(st.sampled_from([1280, 640, 480, 720]), st.integers(-2, 2000),
              st.sampled_from([0, 1e300, 2.0**40, 640.0, 640.5, True]), junk)


@st.composite
def good_bbox(draw):
    x, y = draw(st.floats(0, 600)), draw(st.floats(0, 400))
    return [x, y, draw(st.floats(0, 50)), draw(st.floats(0, 50))]


coco_image = mostly(
    st.fixed_dictionaries({"id": image_id, "file_name": name, "width": side, "height": side}),
    st.fixed_dictionaries({}, optional={"id": image_id, "file_name": name, "width": side, "height": side}),
    junk,
)
bbox = mostly(good_bbox(), st.lists(coordinate, min_size=4, max_size=4), st.lists(coordinate, max_size=5),
                 junk)
category_id = mostly(st.integers(1, 2), st.sampled_from([0, 3, True, "1"]), junk)
coco_annotation = mostly(
    st.fixed_dictionaries({"image_id": image_id, "category_id": category_id, "bbox": bbox},
                          optional={"id": junk, "iscrowd": junk}),
    st.fixed_dictionaries({}, optional={"image_id": image_id, "category_id": category_id, "bbox": bbox}),
    junk,
)
categories = mostly(
    st.sampled_from([[{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}],
                     [{"id": 2, "name": "bus"}, {"id": 1, "name": "car"}]]),
    st.lists(st.fixed_dictionaries({"id": st.one_of(st.integers(0, 3), junk),
                                    "name": st.one_of(st.text(max_size=3), junk)}), max_size=3),
    junk,
)
good_coco = st.fixed_dictionaries({"images": st.lists(coco_image, max_size=5),
                                   "annotations": st.lists(coco_annotation, max_size=8), "categories": categories})
coco_file = mostly(
    good_coco,
    st.fixed_dictionaries({}, optional={"images": junk, "annotations": junk, "categories": categories}),
    junk,
)
options = st.fixed_dictionaries({
    "strict": st.booleans(), "with_root": st.booleans(), "verify_images": st.booleans(), "cache": st.booleans(),
})


# ----------------------------------------------------------------------------- the property
def check_load(world, content, opts, fmt):
    path = world["labels"] / f"labels_{next(world['n'])}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")  # NaN / Infinity as Python writes them
    problems_path = path.with_suffix(".jsonl")
    root = world["root"] if opts["with_root"] else None
    lines: list[str] = []
    try:
        ix = load_index(labels=path, image_root=root, fmt=fmt, strict=opts["strict"], problems_path=problems_path,
                        cache_dir=world["cache"] if opts["cache"] else None,
                        verify_images=opts["verify_images"] and root is not None, progress=False, log=lines.append)
    except AlodError as e:  # LabelFileError included
        assert str(path) in str(e), str(e)
        return
    # Anything else (TypeError, ValueError, OverflowError, UnicodeError, ...) fails the test by itself.

    problems = [json.loads(line) for line in problems_path.read_text().splitlines()]
    assert all(p["kind"] in KINDS and p["file"] == str(path) for p in problems)
    assert all((p["severity"] == "note") == (p["kind"] in NOTE_KINDS) for p in problems)
    if opts["strict"]:
        assert all(p["severity"] == "note" for p in problems)
    # Every frame (COCO: image record) is in the index or reported once as skipped.
    frames = content if fmt != "coco" else content["images"]
    assert len(ix) + sum(p["skipped"] == "frame" for p in problems) == len(frames)

    names = ix.names.tolist()
    assert len(set(names)) == len(names) and all(image_name_problem(n) is None for n in names)
    b = ix.boxes
    assert b.dtype == np.float64 and np.isfinite(b).all()
    assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all() and (b >= 0).all()
    per_image = np.repeat(np.arange(len(ix)), np.diff(ix.offsets))
    assert (b[:, 2] <= ix.widths[per_image]).all() and (b[:, 3] <= ix.heights[per_image]).all()
    assert set(ix.labels.tolist()) <= set(range(1, ix.num_classes + 1))
    if root is not None:
        assert all(ix.image_path(i).is_file() for i in range(len(ix)))
        assert all(math.isfinite(ix.widths[i]) for i in range(len(ix)))


@SETTINGS
@given(content=bdd_file, opts=options, fmt=st.sampled_from(["auto", "bdd100k", "bdd100k_2018"]))
def test_bdd100k_files_never_crash(world, content, opts, fmt):
    check_load(world, content, opts, fmt)


@SETTINGS
@given(content=coco_file, opts=options)
def test_coco_files_never_crash(world, content, opts):
    check_load(world, content, opts, "coco")


def test_deeply_nested_junk_is_a_label_file_error(world):
    """Nesting beyond Python's recursion limit: a clear error from both decoders, not a RecursionError."""
    for fmt, text in (("bdd100k", "[" * 100_000 + "]" * 100_000), ("coco", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")):
        path = world["labels"] / f"deep_{fmt}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        with pytest.raises(AlodError, match="nested too deeply|Too deeply nested") as err:
            load_index(labels=path, fmt=fmt, strict=False, log=lambda s: None)
        assert str(path) in str(err.value)
