"""The built-in scene generator: deterministic by seed, BDD100K layout and categories, imbalance."""
from __future__ import annotations

from dataclasses import asdict
import hashlib
import json

from alod.data.bdd100k import BDD100K_CLASSES, IGNORE_MAPPING
from alod.data.loading import load_index
from alod.config import SyntheticConfig
from alod.data.synthetic import generate_dataset

SPEC = SyntheticConfig(seed=3, num_train=40, num_val=6, width=160, height=96, max_objects=10)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_dataset(tmp_path / "a", **asdict(SPEC), progress=False)
    b = generate_dataset(tmp_path / "b", **asdict(SPEC), progress=False)
    assert _digest(a) == _digest(b)
    c = generate_dataset(tmp_path / "c", **asdict(SyntheticConfig(**{**SPEC.__dict__, "seed": 4})), progress=False)
    assert _digest(c) != _digest(a)


def test_image_depends_only_on_seed_split_index(tmp_path):
    small = generate_dataset(tmp_path / "s", **asdict(SPEC), progress=False)
    big = generate_dataset(tmp_path / "l", **asdict(SyntheticConfig(**{**SPEC.__dict__, "num_train": 50})), progress=False)
    for name in ("train_00000.jpg", "train_00039.jpg"):
        assert (small / "images/100k/train" / name).read_bytes() == (big / "images/100k/train" / name).read_bytes()


def test_layout_categories_and_imbalance(tmp_path):
    root = generate_dataset(tmp_path / "d", **asdict(SyntheticConfig(seed=0, num_train=150, num_val=4, width=160, height=96)),
                            progress=False)
    frames = json.loads((root / "labels/det_20/det_train.json").read_text())
    assert len(frames) == 150 and all({"name", "attributes", "labels"} <= set(f) for f in frames)
    counts: dict[str, int] = {}
    heights = []
    for f in frames:
        for lab in f["labels"]:
            counts[lab["category"]] = counts.get(lab["category"], 0) + 1
            heights.append(lab["box2d"]["y2"] - lab["box2d"]["y1"])
    assert set(counts) <= set(BDD100K_CLASSES) | set(IGNORE_MAPPING)
    assert counts["car"] > 3 * counts.get("rider", 0) and counts["car"] > 3 * counts.get("train", 0)
    assert counts["traffic sign"] > counts.get("bus", 0)
    assert min(heights) < 10 and max(heights) > 40  # objects of very different size
    # The alod reader takes it as it takes BDD100K.
    index = load_index(labels=root / "labels/det_20/det_train.json", image_root=root / "images/100k/train",
                       image_size=(160, 96), log=lambda *_: None)
    assert len(index) == 150 and index.num_boxes == sum(counts.values())
    assert index.classes == BDD100K_CLASSES
    assert int(index.ignore.sum()) == sum(counts.get(k, 0) for k in IGNORE_MAPPING)


def test_existing_dataset_is_reused_and_interrupted_one_redone(tmp_path):
    root = generate_dataset(tmp_path / "r", **asdict(SPEC), progress=False)
    stamp = (root / "labels/det_20/det_train.json").stat().st_mtime_ns
    generate_dataset(root, **asdict(SPEC), progress=False)
    assert (root / "labels/det_20/det_train.json").stat().st_mtime_ns == stamp
    (root / "alod_synthetic.json").unlink()  # as if killed before the spec file was written
    generate_dataset(root, **asdict(SPEC), progress=False)
    assert (root / "alod_synthetic.json").is_file()


def test_generated_boxes_load_without_any_problem(tmp_path):
    """The generator clips its boxes to the scene, so the reader (which checks boxes against the
    scene size) finds nothing to say: no error, no note, and every image decodes."""
    spec = SyntheticConfig(seed=1, num_train=30, num_val=4)  # the demo's 320x192 scenes
    root = generate_dataset(tmp_path / "d", **asdict(spec), progress=False)
    out = tmp_path / "problems.jsonl"
    for split in ("train", "val"):
        ix = load_index(labels=root / f"labels/det_20/det_{split}.json", image_root=root / f"images/100k/{split}",
                        image_size=(spec.width, spec.height), verify_images=True, problems_path=out,
                        log=lambda *_: None)
        assert len(ix) == (30 if split == "train" else 4) and out.read_text() == ""
        assert ix.boxes[:, 2].max() <= spec.width and ix.boxes[:, 3].max() <= spec.height
