"""alod.data.sources: the data-kind registry, ``check_data_config`` and ``load_split``."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alod.config import DataConfig
from alod.data.sources import DATA_KINDS, check_data_config, ensure_dataset, get_data_kind, load_split
from alod.utils import AlodError


def quiet(line):
    return None


def test_kinds():
    assert list(DATA_KINDS) == ["synthetic", "bdd100k", "coco", "folder", "voc", "yolo"]
    assert get_data_kind("synthetic").label_format == "bdd100k" and get_data_kind("synthetic").generated
    assert get_data_kind("coco").labels is None  # explicit paths required
    cfg = DataConfig(kind="synthetic")
    assert get_data_kind("synthetic").image_size(cfg) == (cfg.synthetic.width, cfg.synthetic.height)
    assert get_data_kind("bdd100k").image_size(cfg) == (1280, 720)


def test_check_data_config_accepts_valid_sections():
    check_data_config(DataConfig())
    check_data_config(DataConfig(kind="bdd100k", root="anywhere", format="bdd100k_2018"))
    check_data_config(DataConfig(kind="coco", format="coco", train_labels="t.json", train_images="t",
                                 val_labels="v.json", val_images="v"))


@pytest.mark.parametrize("cfg, message", [
    (DataConfig(kind="kitti"), r"^data.kind must be one of synthetic, bdd100k, coco, folder, voc, yolo \(got 'kitti'\)$"),
    (DataConfig(kind="bdd100k", format="kitti"),
     r"^data.format must be one of auto, bdd100k, bdd100k_2018, coco, voc, yolo \(got 'kitti'\)$"),
    (DataConfig(kind="coco"), r"^data.kind=coco needs data.train_labels and data.train_images$"),
    (DataConfig(kind="coco", train_labels="t.json", train_images="t", val_labels="v.json"),
     r"^data.kind=coco needs data.val_labels and data.val_images$"),
])
def test_check_data_config_errors(cfg, message):
    with pytest.raises(AlodError, match=message):
        check_data_config(cfg)


def test_sources_import_without_torch():
    code = "import sys, alod.data.sources; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ensure_dataset_does_nothing_for_real_data(tmp_path):
    ensure_dataset(DataConfig(kind="bdd100k", root=str(tmp_path / "bdd")), progress=False)
    assert not (tmp_path / "bdd").exists()


def test_load_split_paths_cache_and_problems(tmp_path, shared_data):
    src = shared_data / "bdd100k_val50"
    frames = json.loads((src / "det_val50.json").read_text())
    frames[0]["labels"][0]["box2d"]["x2"] = -1.0  # one inverted box
    labels = tmp_path / "det_val.json"
    labels.write_text(json.dumps(frames))
    cache, problems = tmp_path / "cache", tmp_path / "problems_val.jsonl"
    base = dict(kind="bdd100k", root=str(tmp_path / "no_such_root"), val_labels=str(labels),
                val_images=str(src / "images"))

    ix = load_split(DataConfig(**base, strict=False), "val", cache_dir=cache, problems_path=problems, log=quiet)
    assert len(ix) == 50 and ix.num_boxes == 900
    assert list(cache.glob("index-*.npz"))
    assert [json.loads(x)["kind"] for x in problems.read_text().splitlines()] == ["inverted_box"]

    # strict: the first bad record stops the load and no problems file is written
    problems.unlink()
    with pytest.raises(AlodError, match="x2 < x1"):
        load_split(DataConfig(**base, strict=True), "val", problems_path=problems, log=quiet)
    assert not problems.exists()

    with pytest.raises(AlodError, match=r"train labels .*det_train.json not found; see the README"):
        load_split(DataConfig(**base), "train", log=quiet)
    with pytest.raises(ValueError, match="split must be one of"):
        load_split(DataConfig(**base), "test", log=quiet)
