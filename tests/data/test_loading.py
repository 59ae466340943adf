"""load_index: format detection, image checks, problem reporting, the index cache."""
from __future__ import annotations

import json
import os
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
        load_index(labels=path, fmt="kitti", log=Log())
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


# ----------------------------------------------------------------------------- hostile image names
HOSTILE = ["/etc/passwd", "../../../../etc/passwd", "sub/../../outside.jpg", "a\x00.jpg", "C:\\x.jpg", "D:/x.jpg"]


def _good_image(root, shared_data, name="good.jpg"):
    src = sorted((shared_data / "bdd100k_val50" / "images").iterdir())[0]
    shutil.copyfile(src, root / name)
    return name


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("fmt", ["bdd100k", "bdd100k_2018", "coco"])
def test_names_outside_the_image_root_are_refused(tmp_path, shared_data, write_json, bad, fmt):
    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"secret")  # what sub/../../outside.jpg would reach
    good = _good_image(root, shared_data)
    if fmt == "coco":
        labels = write_json({"images": [{"id": 1, "file_name": good, "width": 1280, "height": 720},
                                        {"id": 2, "file_name": bad, "width": 1280, "height": 720}],
                             "annotations": [{"id": 8, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                                             {"id": 9, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                             "categories": [{"id": 1, "name": "car"}]})
    else:
        cat = "person" if fmt == "bdd100k_2018" else "pedestrian"
        box = {"x1": 1, "y1": 1, "x2": 5, "y2": 5}
        labels = write_json([{"name": good, "labels": [{"id": "0", "category": cat, "box2d": box}]},
                             {"name": bad, "labels": [{"id": "1", "category": cat, "box2d": box}]}])
    with pytest.raises(LabelFileError) as err:
        load_index(labels=labels, image_root=root, fmt=fmt, log=Log())
    msg = str(err.value)
    assert str(labels) in msg and "frame 1" in msg and repr(bad) in msg and "data.strict: false" in msg

    out = tmp_path / "problems.jsonl"
    for image_root in (root, None):  # names are refused with or without image checks
        ix = load_index(labels=labels, image_root=image_root, fmt=fmt, strict=False, problems_path=out, log=Log())
        assert ix.names.tolist() == [good] and ix.num_boxes == 1  # the bad frame's box went with it
        [p] = [json.loads(line) for line in out.read_text().splitlines()]
        assert (p["kind"], p["frame"], p["name"], p["skipped"]) == ("image_outside_root", 1, bad, "frame")


def test_load_index_confines_names_from_a_reader_that_does_not(monkeypatch, tmp_path, shared_data):
    """A registered format whose reader forgets the name check still cannot open files outside."""
    from alod.data.common import LabelFormat, ParsedLabels
    from alod.data.readers import LABEL_FORMATS

    import numpy as np

    def read_names(path, *, image_root="", image_size=None, problems=None):
        names = json.loads(open(path).read())["names"]
        ix = DetectionIndex.from_lists(image_root=image_root, names=names, widths=[1] * len(names),
                                       heights=[1] * len(names), boxes_per_image=[np.zeros((0, 4))] * len(names),
                                       labels_per_image=[np.zeros(0)] * len(names), classes=("x",))
        return ParsedLabels(index=ix, frame_index=np.arange(len(names)), num_frames=len(names), layout="names")

    monkeypatch.setitem(LABEL_FORMATS, "names", LabelFormat(name="names", family="names", read=read_names))
    root = tmp_path / "images"
    root.mkdir()
    good = _good_image(root, shared_data)
    labels = tmp_path / "names.json"
    labels.write_text(json.dumps({"names": [good, "/etc/passwd", "../names.json", "a\u0000b"]}))
    with pytest.raises(LabelFileError, match="'/etc/passwd' is an absolute path"):
        load_index(labels=labels, image_root=root, fmt="names", log=Log())
    log = Log()
    ix = load_index(labels=labels, image_root=root, fmt="names", strict=False, log=log)
    assert ix.names.tolist() == [good] and "  image_outside_root: 3 -- " in log.text()


def test_symlinked_layout_loads(tmp_path, shared_data):
    """The layout tests/test_bdd100k_config.py builds: every image a symlink to a file outside the
    image folder (the user's own choice of layout, so it is followed)."""
    src = shared_data / "bdd100k_val50"
    img_dir = tmp_path / "bdd100k" / "images" / "100k" / "val"
    img_dir.mkdir(parents=True)
    for p in (src / "images").iterdir():
        os.symlink(p, img_dir / p.name)
    log = Log()
    ix = load_index(labels=src / "det_val50.json", image_root=img_dir, verify_images=True, log=log)
    assert len(ix) == 50 and "problem" not in log.text()
    with pytest.raises(LabelFileError, match="outside the image folder"):
        load_index(labels=src / "det_val50.json", image_root=img_dir, follow_symlinks=False, log=Log())


def test_a_folder_named_as_image_is_unreadable(tmp_path, shared_data, write_json):
    root = tmp_path / "images"
    (root / "dir.jpg").mkdir(parents=True)
    good = _good_image(root, shared_data)
    labels = write_json([{"name": good}, {"name": "dir.jpg"}])
    with pytest.raises(LabelFileError, match="is a folder"):
        load_index(labels=labels, image_root=root, log=Log())


# ----------------------------------------------------------------------------- boxes vs image size
def test_box_outside_the_image_size(write_json, tmp_path):
    data = frames(["a.jpg", "b.jpg"])
    data[1]["labels"].append({"id": "far", "category": "car", "box2d": {"x1": 1500, "y1": 10, "x2": 1900, "y2": 90}})
    data[1]["labels"].append({"id": "near", "category": "car", "box2d": {"x1": -3, "y1": 10, "x2": 40, "y2": 725}})
    labels = write_json(data)
    with pytest.raises(LabelFileError) as err:
        load_index(labels=labels, log=Log())
    msg = str(err.value)
    assert "frame 1 ('b.jpg'), label 2 (id 'far')" in msg and "outside the 1280x720 image" in msg
    assert "data.image_size" in msg  # the likely cause: frames of another size
    # A bigger image_size accepts it.
    assert load_index(labels=labels, image_size=(1920, 1080), log=Log()).num_boxes == 6

    log, out = Log(), tmp_path / "p.jsonl"
    ix = load_index(labels=labels, strict=False, problems_path=out, log=log)
    assert ix.num_boxes == 5 and ix.boxes[-1].tolist() == [0.0, 10.0, 40.0, 720.0]  # clipped, kept
    assert [(p["kind"], p["label_id"], p["severity"], p["skipped"]) for p in map(json.loads, out.read_text().splitlines())] == [
        ("box_outside_image", "far", "error", "box"), ("box_clipped", "near", "note", "nothing")]
    assert any(line.startswith("  box_clipped: 1") and line.endswith("kept") for line in log)


def test_clipped_boxes_do_not_fail_strict_mode(write_json):
    data = frames(["a.jpg"])
    data[0]["labels"].append({"id": "n", "category": "car", "box2d": {"x1": 1270, "y1": 700, "x2": 1285, "y2": 721}})
    log = Log()
    ix = load_index(labels=write_json(data), log=log)
    assert ix.boxes[-1].tolist() == [1270.0, 700.0, 1280.0, 720.0]
    assert "box_clipped: 1" in log.text() and "skipped 0 box(es) and 0 frame(s)" in log.text()


@pytest.mark.parametrize("split", ["train", "val"])
def test_real_coco_has_no_problem(shared_data, tmp_path, split):
    d = shared_data / "coco128"
    out = tmp_path / "p.jsonl"
    ix = load_index(labels=d / f"instances_{split}2017.json", image_root=d / "images" / f"{split}2017",
                    verify_images=True, problems_path=out, log=Log())
    assert len(ix) == 128 and out.read_text() == ""


def test_real_bdd_has_no_problem_and_float64_boxes(shared_data, tmp_path):
    d = shared_data / "bdd100k_val50"
    out = tmp_path / "p.jsonl"
    ix = load_index(labels=d / "det_val50.json", image_root=d / "images", problems_path=out, log=Log())
    assert ix.num_boxes == 901 and out.read_text() == "" and ix.boxes.dtype.name == "float64"


def test_reader_version_is_part_of_the_cache_key(monkeypatch, tmp_path, write_json):
    import alod.data.loading as loading

    cache = tmp_path / "cache"
    labels = write_json(frames(["a.jpg"]))
    load_index(labels=labels, cache_dir=cache, log=Log())
    monkeypatch.setattr(loading, "READER_VERSION", "alod.readers/old")
    log = Log()
    load_index(labels=labels, cache_dir=cache, log=log)
    assert "loaded cached" not in log.text() and len(list(cache.glob("index-*.npz"))) == 2


# ----------------------------------------------------------------------------- verify_images
@pytest.fixture
def verify_set(tmp_path, shared_data):
    """Four real frames, the third truncated (its header intact), and their det_20 labels."""
    src = shared_data / "bdd100k_val50" / "images"
    root = tmp_path / "images"
    root.mkdir()
    names = sorted(p.name for p in src.iterdir())[:4]
    for n in names:
        shutil.copyfile(src / n, root / n)
    data = (root / names[2]).read_bytes()
    (root / names[2]).write_bytes(data[: len(data) // 2])
    labels = tmp_path / "det_val.json"
    labels.write_text(json.dumps(frames(names)))
    return labels, root, names


class CountingDecode:
    def __init__(self, monkeypatch):
        import alod.data.loading as loading

        self.paths = []
        real = loading.decode_check

        def decode(path):
            self.paths.append(os.path.basename(path))
            return real(path)

        monkeypatch.setattr(loading, "decode_check", decode)


def test_verify_strict_names_the_image_and_the_way_out(verify_set):
    labels, root, names = verify_set
    with pytest.raises(LabelFileError) as err:
        load_index(labels=labels, image_root=root, verify_images=True, log=Log())
    msg = str(err.value)
    assert f"frame 2 ('{names[2]}')" in msg and str(root / names[2]) in msg and "truncated" in msg
    assert "data.strict: false" in msg and str(labels) in msg


def test_verify_skip_mode_lists_the_bad_image(verify_set, tmp_path):
    labels, root, names = verify_set
    out = tmp_path / "p.jsonl"
    ix = load_index(labels=labels, image_root=root, verify_images=True, strict=False, problems_path=out, log=Log())
    assert ix.names.tolist() == [names[0], names[1], names[3]]
    [p] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (p["kind"], p["name"], p["skipped"]) == ("unreadable_image", names[2], "frame")


def test_verify_results_are_cached_by_size_and_mtime(verify_set, tmp_path, monkeypatch, capsys):
    labels, root, names = verify_set
    cache = tmp_path / "cache"
    counter = CountingDecode(monkeypatch)
    log = Log()
    load_index(labels=labels, image_root=root, verify_images=True, strict=False, cache_dir=cache,
               progress=True, log=log)
    assert sorted(counter.paths) == sorted(names) and "decoded 4 image(s)" in log.text()
    assert "verifying images" in capsys.readouterr().err  # the progress bar
    [checks] = cache.glob("images-*.json")
    assert json.loads(checks.read_text())["images"][names[2]][2] is not None

    counter.paths.clear()
    log = Log()
    ix = load_index(labels=labels, image_root=root, verify_images=True, strict=False, cache_dir=cache, log=log)
    assert counter.paths == [] and "all 4 image(s) unchanged" in log.text()
    assert len(ix) == 3 and "unreadable_image: 1" in log.text()  # the cached failure is still reported
    with pytest.raises(LabelFileError, match="truncated"):  # and still fails strict mode, without decoding
        load_index(labels=labels, image_root=root, verify_images=True, cache_dir=cache, log=Log())
    assert counter.paths == []

    # repair the truncated file (new size and mtime) and touch another one (new mtime only)
    shutil.copyfile(shared_data_image(labels, names[2]), root / names[2])
    st = os.stat(root / names[0])
    os.utime(root / names[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    ix = load_index(labels=labels, image_root=root, verify_images=True, cache_dir=cache, log=Log())
    assert sorted(counter.paths) == sorted([names[0], names[2]]) and len(ix) == 4


def shared_data_image(labels, name):
    from alod_testing import SHARED_DATA

    return SHARED_DATA / "bdd100k_val50" / "images" / name


def test_verify_without_cache_dir_decodes_every_time(verify_set, monkeypatch):
    labels, root, names = verify_set
    counter = CountingDecode(monkeypatch)
    for _ in range(2):
        load_index(labels=labels, image_root=root, verify_images=True, strict=False, log=Log())
    assert len(counter.paths) == 8
