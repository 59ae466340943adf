"""A refused ``alod import`` leaves every file of the run folder byte-identical: its problems go to
``import_problems.refused-NNN.jsonl`` (a new name per attempt), never over the accepted import's
``import_problems.jsonl``. Also: a YOLO folder is known again by its label files (same sha256)."""
from __future__ import annotations

import json

import pytest

from alod.config import load_config
from alod.data.sources import ensure_dataset, load_split
from alod.stages.annotation import annotation_sha256, run_import
from alod.utils import AlodError
from alod_testing import run_layout, write_tiny_config


def quiet(*_):
    return None


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def selected(tmp_path):
    """A run whose cycle 1 has selected two images (written as the cycles stage would)."""
    cfg = load_config(write_tiny_config(tmp_path), ["cycles.oracle=human"])
    layout = run_layout(cfg)
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=quiet)
    names = [str(n) for n in train.names[:2]]
    layout.cycles_state.parent.mkdir(parents=True)
    layout.cycles_state.write_text(json.dumps({
        "format": "alod.cycles/2", "selector": {"name": "adaptive"}, "oracle": "human",
        "pool": {"names": [], "cycles": [], "sources": []},
        "cycles": [{"cycle": 1, "step": "selected", "rule": "random", "selected": names}]}))
    return cfg, layout, train, names


def _coco(path, train, names, *, extra_category=False):
    cats = [{"id": 1, "name": train.classes[0]}] + ([{"id": 2, "name": "unicorn"}] if extra_category else [])
    path.write_text(json.dumps({
        "images": [{"id": k, "file_name": n, "width": 160, "height": 96} for k, n in enumerate(names, 1)],
        "categories": cats,
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1.5, 2, 10, 20], "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 2 if extra_category else 1, "bbox": [3, 4, 5, 6]}]}))
    return path


def test_a_refused_import_changes_no_stored_file(selected, tmp_path):
    cfg, layout, train, names = selected
    good = _coco(tmp_path / "good.json", train, names, extra_category=True)
    assert run_import(cfg, cycle=1, path=good, progress=False, log=quiet)["status"] == "imported"
    accepted = layout.cycle_import_problems(1).read_text()
    assert [json.loads(x)["kind"] for x in accepted.splitlines()] == ["unknown_category"]
    before = _snapshot(layout.root)

    partial = _coco(tmp_path / "partial.json", train, names[:1])  # one image missing, no --allow-partial
    with pytest.raises(AlodError, match=r"1 of cycle 1's 2 images have no answer.*no stored file changed.*"
                                        r"import_problems\.refused-001\.jsonl"):
        run_import(cfg, cycle=1, path=partial, progress=False, log=quiet)
    none = _coco(tmp_path / "none.json", train, ["not/a/selected.jpg"])
    with pytest.raises(AlodError, match=r"none of cycle 1's 2 images is answered.*refused-002\.jsonl"):
        run_import(cfg, cycle=1, path=none, progress=False, log=quiet)

    after = _snapshot(layout.root)
    new = sorted(set(after) - set(before))
    assert new == ["cycles/cycle_01/import_problems.refused-001.jsonl",
                   "cycles/cycle_01/import_problems.refused-002.jsonl"]
    assert {k: after[k] for k in before} == before  # every stored file byte-identical
    first = [json.loads(x) for x in after[new[0]].decode().splitlines()]
    assert [(p["kind"], p["where"]) for p in first] == [("image_missing", names[1])]
    assert [json.loads(x)["kind"] for x in after[new[1]].decode().splitlines()] == [
        "image_not_asked_for", "image_missing", "image_missing"]
    # The accepted labels stand: the same file again is still "already imported".
    assert run_import(cfg, cycle=1, path=good, progress=False, log=quiet)["status"] == "already imported"


def test_a_yolo_folder_is_known_by_its_label_files(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "classes.txt").write_text("car\n")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    json_xml_only = annotation_sha256(tmp_path)
    first = annotation_sha256(tmp_path, suffixes=(".txt", ".names", ".yaml", ".yml"))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.1\n")
    assert annotation_sha256(tmp_path) == json_xml_only  # what LabelMe folders were always known by
    assert annotation_sha256(tmp_path, suffixes=(".txt", ".names", ".yaml", ".yml")) != first
