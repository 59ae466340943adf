"""``data.kind: folder``: the training split is the listing of an image folder without labels
(sorted, recursive, image extensions in any case, hidden files left out, unsafe names and
unreadable headers as bad records, sizes from the headers, cached by the listing); the classes come
from ``data.classes`` and must equal the labeled val split's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from alod_testing import write_tiny_config
from PIL import Image

from alod.stages.setup import load_checked_config
from alod.data.problems import LabelFileError
from alod.data.sources import (
    check_data_config,
    list_image_folder,
    load_split,
    training_split_labeled,
)
from alod.utils import AlodError

CLASSES = ("car", "person")
quiet = lambda *_: None


def _img(path: Path, size: tuple[int, int], fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path, format=fmt)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "imgs"
    _img(root / "b.jpg", (40, 30))
    _img(root / "A.JPEG", (41, 31), "JPEG")
    _img(root / "sub" / "deep" / "c.PNG", (42, 32), "PNG")
    _img(root / "sub" / "d.bmp", (43, 33))
    _img(root / "e.WebP", (44, 34), "WEBP")
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "x.gif").write_bytes(b"GIF89a")  # not one of the extensions
    _img(root / ".hidden.jpg", (5, 5))
    _img(root / ".thumbs" / "t.jpg", (5, 5))
    return root


def test_listing_sorted_recursive_extensions_sizes_no_boxes(folder):
    index = list_image_folder(folder, classes=CLASSES, log=quiet)
    assert list(index.names) == ["A.JPEG", "b.jpg", "e.WebP", "sub/d.bmp", "sub/deep/c.PNG"]
    sizes = {str(n): (int(w), int(h)) for n, w, h in zip(index.names, index.widths, index.heights)}
    assert sizes == {"A.JPEG": (41, 31), "b.jpg": (40, 30), "e.WebP": (44, 34), "sub/d.bmp": (43, 33),
                     "sub/deep/c.PNG": (42, 32)}
    assert index.num_boxes == 0 and index.classes == CLASSES and index.image_root == str(folder)
    assert index.image_path(4) == folder / "sub" / "deep" / "c.PNG"


def test_unsafe_name_and_unreadable_header(folder, tmp_path):
    (folder / "bad\\name.jpg").write_bytes((folder / "b.jpg").read_bytes())  # a backslash: not a plain name
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.jpg").write_bytes(b"")
    with pytest.raises(LabelFileError, match="bad"):  # strict: the first bad one stops the load, named
        list_image_folder(folder, classes=CLASSES, log=quiet)
    (folder / "bad\\name.jpg").unlink()
    with pytest.raises(LabelFileError, match="empty.jpg' is empty"):  # every file is stat'ed first
        list_image_folder(folder, classes=CLASSES, log=quiet)
    (folder / "empty.jpg").unlink()
    with pytest.raises(LabelFileError, match="broken.png': its header cannot be read"):
        list_image_folder(folder, classes=CLASSES, log=quiet)
    (folder / "bad\\name.jpg").write_bytes(b"x")
    (folder / "empty.jpg").write_bytes(b"")

    problems = tmp_path / "problems.jsonl"
    lines = []
    index = list_image_folder(folder, classes=CLASSES, strict=False, problems_path=problems, log=lines.append)
    assert list(index.names) == ["A.JPEG", "b.jpg", "e.WebP", "sub/d.bmp", "sub/deep/c.PNG"]
    got = sorted((d["name"], d["kind"]) for d in map(json.loads, problems.read_text().splitlines()))
    assert got == [("bad\\name.jpg", "image_outside_root"), ("broken.png", "unreadable_image"),
                   ("empty.jpg", "unreadable_image")]


def test_cache_keyed_by_listing(folder, tmp_path):
    cache = tmp_path / "cache"
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    first = list_image_folder(folder, classes=CLASSES, strict=False, cache_dir=cache, log=quiet)
    lines, problems = [], tmp_path / "p.jsonl"
    again = list_image_folder(folder, classes=CLASSES, strict=False, cache_dir=cache, problems_path=problems,
                              log=lines.append)
    assert any("loaded cached folder index" in x for x in lines) and again.equals(first)
    assert [json.loads(x)["name"] for x in problems.read_text().splitlines()] == ["broken.png"]  # replayed
    _img(folder / "b.jpg", (50, 60))  # same name, new size and mtime: read again
    st = os.stat(folder / "b.jpg")
    os.utime(folder / "b.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    lines = []
    changed = list_image_folder(folder, classes=CLASSES, strict=False, cache_dir=cache, log=lines.append)
    assert not any("cached" in x for x in lines)
    assert (int(changed.widths[1]), int(changed.heights[1])) == (50, 60)


def _folder_cfg(tmp_path, data: dict, *sets):
    path = write_tiny_config(tmp_path, data=data)
    return load_checked_config(path, list(sets))


def test_config_checks(tmp_path, folder):
    base = {"kind": "folder", "train_images": str(folder), "val_labels": str(tmp_path / "val.json")}
    with pytest.raises(AlodError, match="needs data.classes"):
        _folder_cfg(tmp_path, base)
    with pytest.raises(AlodError, match="unique; repeated: \\['car'\\]"):
        _folder_cfg(tmp_path, {**base, "classes": ["car", "person", "car"]})
    with pytest.raises(AlodError, match="non-empty list"):
        _folder_cfg(tmp_path, {**base, "classes": []})
    with pytest.raises(AlodError, match="evaluation needs a labeled val split"):
        _folder_cfg(tmp_path, {k: v for k, v in base.items() if k != "val_labels"} | {"classes": ["car"]})
    with pytest.raises(AlodError, match="train_labels is not used"):
        _folder_cfg(tmp_path, {**base, "classes": ["car"], "train_labels": "x.json"})
    with pytest.raises(AlodError, match="only for data.kind=folder"):
        _folder_cfg(tmp_path, {"classes": ["car"]})
    cfg = _folder_cfg(tmp_path, {**base, "classes": list(CLASSES)})
    check_data_config(cfg.data)
    assert cfg.data.classes == CLASSES and not training_split_labeled(cfg.data)
    assert training_split_labeled(_folder_cfg(tmp_path, {}).data)


def test_load_split_train_folder_and_val_classes(tmp_path, folder):
    val_dir = tmp_path / "val"
    _img(val_dir / "v.jpg", (40, 30))
    val = tmp_path / "val.json"
    val.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "v.jpg", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 10], "iscrowd": 0}]}))
    data = {"kind": "folder", "train_images": str(folder), "val_labels": str(val), "val_images": str(val_dir)}
    cfg = _folder_cfg(tmp_path, {**data, "classes": list(CLASSES)})
    train = load_split(cfg.data, "train", cache_dir=tmp_path / "cache", log=quiet)
    assert len(train) == 5 and train.classes == CLASSES
    v = load_split(cfg.data, "val", log=quiet)
    assert v.classes == CLASSES and np.array_equal(v.labels, [2])
    cfg = _folder_cfg(tmp_path, {**data, "classes": ["person", "car"]})
    with pytest.raises(AlodError, match="are not data.classes"):
        load_split(cfg.data, "val", log=quiet)
    # The default training folder is <data.root>/images/train.
    cfg = _folder_cfg(tmp_path, {"kind": "folder", "root": str(tmp_path / "proj"), "val_labels": str(val),
                                 "classes": list(CLASSES)})
    with pytest.raises(AlodError, match="proj/images/train does not exist"):
        load_split(cfg.data, "train", log=quiet)
