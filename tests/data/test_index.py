"""DetectionIndex: CSR layout, access, subset, class counts, fingerprint, .npz round trip."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from alod.data.index import INDEX_FORMAT, DetectionIndex

CLASSES = ("car", "person", "sign")


def make_index(**over) -> DetectionIndex:
    """4 images: 2 boxes, none, 3 boxes (one ignored), 1 box."""
    kw = dict(
        image_root="/data/images",
        names=["b.jpg", "a.jpg", "sub/c.jpg", "d.jpg"],
        widths=[100, 120, 140, 160],
        heights=[50, 60, 70, 80],
        boxes_per_image=[
            np.array([[0, 0, 10, 10], [5, 5, 20, 25]]),
            np.zeros((0, 4)),
            np.array([[1, 2, 3, 4], [10, 10, 30, 40], [0, 0, 50, 50]]),
            np.array([[7, 8, 9, 10.5]]),
        ],
        labels_per_image=[np.array([1, 2]), np.zeros(0), np.array([3, 1, 1]), np.array([2])],
        ignore_per_image=[np.array([False, False]), np.zeros(0, bool), np.array([False, False, True]), np.array([False])],
        classes=CLASSES,
        source="labels.json",
    )
    kw.update(over)
    return DetectionIndex.from_lists(**kw)


@pytest.fixture
def ix() -> DetectionIndex:
    return make_index()


# ------------------------------------------------------------------------------- construction
def test_from_lists_builds_csr_arrays_with_documented_dtypes(ix):
    assert len(ix) == 4 and ix.num_boxes == 6 and ix.num_classes == 3
    np.testing.assert_array_equal(ix.offsets, [0, 2, 2, 5, 6])
    assert ix.offsets.dtype == np.int64
    assert ix.boxes.dtype == np.float64 and ix.boxes.shape == (6, 4)
    assert ix.labels.dtype == np.int64 and ix.ignore.dtype == bool
    assert ix.widths.dtype == np.int32 and ix.heights.dtype == np.int32
    np.testing.assert_array_equal(ix.labels, [1, 2, 3, 1, 1, 2])
    np.testing.assert_array_equal(ix.ignore, [0, 0, 0, 0, 1, 0])
    assert ix.classes == CLASSES and ix.source == "labels.json" and ix.image_root == "/data/images"


def test_from_lists_without_ignore_means_nothing_ignored():
    ix = make_index(ignore_per_image=None)
    assert ix.ignore.shape == (6,) and not ix.ignore.any()


def test_empty_index():
    ix = DetectionIndex.from_lists(image_root="", names=[], widths=[], heights=[], boxes_per_image=[],
                                   labels_per_image=[], classes=CLASSES)
    assert len(ix) == 0 and ix.num_boxes == 0
    assert ix.boxes.shape == (0, 4) and ix.offsets.tolist() == [0]
    assert ix.class_counts() == {c: 0 for c in CLASSES}
    assert len(ix.subset([])) == 0


def test_index_without_boxes():
    ix = make_index(boxes_per_image=[np.zeros((0, 4))] * 4, labels_per_image=[np.zeros(0)] * 4, ignore_per_image=None)
    assert ix.num_boxes == 0 and ix.offsets.tolist() == [0] * 5
    sub = ix.subset([2, 0])
    assert sub.boxes.shape == (0, 4) and sub.offsets.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "change",
    [
        {"offsets": np.array([0, 2, 2, 5], np.int64)},  # one entry short
        {"offsets": np.array([1, 2, 2, 5, 6], np.int64)},  # does not start at 0
        {"offsets": np.array([0, 2, 2, 5, 5], np.int64)},  # does not end at the box count
        {"labels": np.zeros(5, np.int64)},
        {"ignore": np.zeros(7, bool)},
        {"boxes": np.zeros((6, 5), np.float32)},
        {"widths": np.zeros(3, np.int32)},
        {"heights": np.zeros(5, np.int32)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_inconsistent_arrays_are_rejected(ix, change):
    fields = {f.name: getattr(ix, f.name) for f in dataclasses.fields(ix)}
    with pytest.raises(ValueError):
        DetectionIndex(**{**fields, **change})


# ------------------------------------------------------------------------------------- access
def test_annotations_per_image(ix):
    boxes, labels, ignore = ix.annotations(2)
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 4], [10, 10, 30, 40], [0, 0, 50, 50]])
    np.testing.assert_array_equal(labels, [3, 1, 1])
    np.testing.assert_array_equal(ignore, [False, False, True])
    boxes, labels, ignore = ix.annotations(1)
    assert boxes.shape == (0, 4) and labels.shape == (0,) and ignore.shape == (0,)
    np.testing.assert_array_equal(ix.annotations(3)[0], np.array([[7, 8, 9, 10.5]], np.float32))


@pytest.mark.parametrize("name", ["/etc/passwd", "../secret.jpg", "sub/../../x.jpg", "C:/x.jpg", "a\\b.jpg", "a\x00.jpg"])
def test_image_path_refuses_names_outside_the_root(name):
    """Readers never let such names in; an index built by other code cannot open them either."""
    from alod.utils import AlodError

    ix = make_index(names=["b.jpg", name, "sub/c.jpg", "d.jpg"])
    assert ix.image_path(0).as_posix() == "/data/images/b.jpg"
    with pytest.raises(AlodError, match="refusing to open it outside the image folder"):
        ix.image_path(1)


def test_image_path_and_name_to_index(ix):
    assert ix.image_path(2).as_posix() == "/data/images/sub/c.jpg"
    m = ix.name_to_index()
    assert m == {"b.jpg": 0, "a.jpg": 1, "sub/c.jpg": 2, "d.jpg": 3}
    assert all(type(k) is str for k in m)
    for name, i in m.items():
        assert str(ix.names[i]) == name


def test_class_counts(ix):
    # labels 1,2,3,1,(1 ignored),2
    assert ix.class_counts() == {"car": 2, "person": 2, "sign": 1}
    assert ix.class_counts(include_ignored=True) == {"car": 3, "person": 2, "sign": 1}
    assert list(ix.class_counts()) == list(CLASSES)  # in class order


# ------------------------------------------------------------------------------------- subset
def test_subset_keeps_order_and_moves_boxes_with_their_images(ix):
    order = [3, 0, 2]
    sub = ix.subset(order)
    assert len(sub) == 3 and sub.names.tolist() == ["d.jpg", "b.jpg", "sub/c.jpg"]
    np.testing.assert_array_equal(sub.widths, [160, 100, 140])
    np.testing.assert_array_equal(sub.heights, [80, 50, 70])
    np.testing.assert_array_equal(sub.offsets, [0, 1, 3, 6])
    for new, old in enumerate(order):
        for a, b in zip(sub.annotations(new), ix.annotations(old)):
            np.testing.assert_array_equal(a, b)
    assert sub.classes == ix.classes and sub.image_root == ix.image_root and sub.source == ix.source
    assert sub.boxes.dtype == np.float64 and sub.offsets.dtype == np.int64


def test_subset_accepts_numpy_indices_and_does_not_touch_the_original(ix):
    before = ix.boxes.copy()
    sub = ix.subset(np.array([1, 3]))
    assert sub.names.tolist() == ["a.jpg", "d.jpg"] and sub.num_boxes == 1
    sub.boxes[:] = -1  # fancy indexing copies: the parent index is unchanged
    np.testing.assert_array_equal(ix.boxes, before)


def test_subset_of_everything_equals_original(ix):
    assert ix.subset(range(len(ix))).equals(ix)
    assert ix.subset([]).num_boxes == 0


# -------------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_count_and_hash_of_sorted_names(ix):
    fp = ix.fingerprint()
    expected = hashlib.sha256("".join(n + "\n" for n in sorted(["b.jpg", "a.jpg", "sub/c.jpg", "d.jpg"])).encode()).hexdigest()
    assert fp == {"num_images": 4, "names_sha256": expected}


def test_fingerprint_stable_under_order_and_annotations(ix):
    fp = ix.fingerprint()
    assert ix.subset([3, 2, 1, 0]).fingerprint() == fp  # order of images does not matter
    relabelled = make_index(labels_per_image=[np.array([3, 3]), np.zeros(0), np.array([2, 2, 2]), np.array([1])])
    assert relabelled.fingerprint() == fp  # it recognises the split, not its labels
    assert make_index(image_root="/elsewhere").fingerprint() == fp


def test_fingerprint_sensitive_to_names_and_count(ix):
    fp = ix.fingerprint()
    renamed = make_index(names=["b.jpg", "a.jpg", "sub/c.jpg", "e.jpg"])
    assert renamed.fingerprint()["names_sha256"] != fp["names_sha256"]
    assert renamed.fingerprint()["num_images"] == 4
    smaller = ix.subset([0, 1, 2])
    assert smaller.fingerprint()["num_images"] == 3
    assert smaller.fingerprint()["names_sha256"] != fp["names_sha256"]


# -------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(ix, tmp_path):
    path = tmp_path / "split.npz"
    ix.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.npz"]  # no temp file left behind
    back = DetectionIndex.load(path)
    assert back.equals(ix)
    assert back.fingerprint() == ix.fingerprint()
    assert back.classes == CLASSES and isinstance(back.classes, tuple)
    assert back.boxes.dtype == np.float64 and back.labels.dtype == np.int64 and back.ignore.dtype == bool
    assert back.name_to_index() == ix.name_to_index()


def test_boxes_keep_float64_precision_through_save_and_subset(tmp_path):
    # 937.814 is not a float32: float32 would store 937.81402587890625 (the real-frame case where
    # an IoU of 0.8000012 became 0.7999999).
    ix = make_index(boxes_per_image=[np.array([[937.814, 292.95, 952.664, 324.0]]), np.zeros((0, 4)),
                                     np.zeros((0, 4)), np.zeros((0, 4))],
                    labels_per_image=[np.array([1]), np.zeros(0), np.zeros(0), np.zeros(0)], ignore_per_image=None)
    assert ix.boxes.tolist() == [[937.814, 292.95, 952.664, 324.0]]
    ix.save(tmp_path / "x.npz")
    back = DetectionIndex.load(tmp_path / "x.npz")
    assert back.boxes.tolist() == [[937.814, 292.95, 952.664, 324.0]] and back.subset([0]).boxes.dtype == np.float64


def test_float32_boxes_are_widened(ix, tmp_path):
    """An index built or saved with float32 boxes (before float64) still loads, widened exactly."""
    f32 = dataclasses.replace(ix, boxes=ix.boxes.astype(np.float32))
    assert f32.boxes.dtype == np.float64 and f32.equals(ix)
    np.savez(tmp_path / "old.npz", **{**{k: v for k, v in np.load(_saved(ix, tmp_path)).items()},
                                      "boxes": ix.boxes.astype(np.float32)})
    old = DetectionIndex.load(tmp_path / "old.npz")
    assert old.boxes.dtype == np.float64 and old.equals(ix)


def _saved(ix, tmp_path):
    path = tmp_path / "new.npz"
    ix.save(path)
    return path


def test_save_load_empty_index(tmp_path):
    ix = DetectionIndex.from_lists(image_root="", names=[], widths=[], heights=[], boxes_per_image=[],
                                   labels_per_image=[], classes=CLASSES)
    ix.save(tmp_path / "empty.npz")
    assert DetectionIndex.load(tmp_path / "empty.npz").equals(ix)


def test_save_overwrites(ix, tmp_path):
    path = tmp_path / "split.npz"
    ix.save(path)
    sub = ix.subset([1, 2])
    sub.save(path)
    assert DetectionIndex.load(path).equals(sub)


def test_load_rejects_other_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, format=np.array("something/9"), names=np.array(["x"]))
    with pytest.raises(ValueError, match=INDEX_FORMAT):
        DetectionIndex.load(path)


@pytest.mark.parametrize(
    "change",
    [
        {"image_root": "/other"},
        {"source": "other.json"},
        {"classes": ("car", "person", "light")},
        {"names": ["b.jpg", "a.jpg", "sub/c.jpg", "x.jpg"]},
        {"widths": [100, 120, 140, 161]},
        {"heights": [50, 60, 70, 81]},
        {"labels_per_image": [np.array([1, 2]), np.zeros(0), np.array([3, 1, 2]), np.array([2])]},
        {"ignore_per_image": None},
        {"boxes_per_image": [np.array([[0, 0, 10, 10], [5, 5, 20, 25]]), np.zeros((0, 4)),
                             np.array([[1, 2, 3, 4], [10, 10, 30, 40], [0, 0, 50, 50]]),
                             np.array([[7, 8, 9, 10.25]])]},
    ],
    ids=lambda c: next(iter(c)),
)
def test_equals_sees_every_field(ix, change):
    assert ix.equals(make_index())
    assert not ix.equals(make_index(**change))
    assert not make_index(**change).equals(ix)
