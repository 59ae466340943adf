"""configs/bdd100k.yaml runs all three stages on a standard BDD100K layout.

The layout is built in a temp dir from the 50 real BDD100K frames (symlinked images; the same
frames serve as train and val). Only sizes are overridden, the way a user would with ``--set``:
a light model at reduced resolution and tiny schedules, so it runs in about a minute on a CPU.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from alod.commands.common import REPO_CONFIGS
from alod.config import load_config
from alod.stages.cycles import finished_cycles, run_cycles
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod_testing import run_layout


@pytest.mark.slow  # three stages at 1280x720-derived sizes on real frames: about 1.5 minutes on 2 cores
def test_bdd100k_config_on_standard_layout(shared_data, tmp_path):
    src = shared_data / "bdd100k_val50"
    root = tmp_path / "bdd100k"
    for split in ("train", "val"):
        img_dir = root / "images" / "100k" / split
        img_dir.mkdir(parents=True)
        for p in (src / "images").iterdir():
            os.symlink(p, img_dir / p.name)
        (root / "labels" / "det_20").mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "det_val50.json", root / "labels" / "det_20" / f"det_{split}.json")
    overrides = [
        f"data.root={root}", f"run.out_dir={tmp_path / 'runs'}", f"run.tb_dir={tmp_path / 'tb'}",
        "model.name=resnet18_fpn_light", "model.min_size=180", "model.max_size=320", "model.fpn_channels=32",
        "model.rpn_pre_nms_top_n_train=300", "model.rpn_post_nms_top_n_train=100",
        "model.rpn_pre_nms_top_n_test=300", "model.rpn_post_nms_top_n_test=100",
        "model.box_batch_size_per_image=32", "train.num_workers=0", "score.num_workers=0",
        "pretrain.epochs=1", "cycles.epochs=1", "schedule.batch_size=20", "schedule.query_size=5",
        "schedule.num_batches=2", "score.shard_size=20", "score.batch_size=4", "cycles.num_vis_images=1",
    ]
    cfg = load_config(REPO_CONFIGS / "bdd100k.yaml", overrides)
    assert cfg.data.kind == "bdd100k" and cfg.data.image_size == (1280, 720)
    ckpt = run_pretrain(cfg, progress=False)
    assert len(json.loads((run_layout(cfg).root / "pretrain" / "partition.json").read_text())["images"]) == 35
    schedule = json.loads(run_scoring(cfg, ckpt=ckpt, progress=False).read_text())
    assert schedule["dataset"]["num_images"] == 50 and len(schedule["cycles"]) == 2
    state = run_cycles(cfg, progress=False)
    assert [c["pool_size"] for c in finished_cycles(state)] == [5, 10]
    metrics = json.loads((run_layout(cfg).root / "cycles" / "cycle_02" / "metrics.json").read_text())
    # No train frames among the 50: the official evaluation reports NaN, written as null.
    assert metrics["AP50/train"] is None and 0.0 <= metrics["mAP50"] <= 1.0
