"""End to end on real COCO data: configs/coco.yaml on COCO128, pretrain -> scoring -> 2 cycles.

COCO128 is what a user's own COCO-format dataset looks like and the generated scenes are not:
80 categories with ids 1..90 (gaps), images of many sizes in both orientations, images without
annotations, crowd regions. The model is made tiny with ``--set`` overrides (TINY's model section)
so the run takes seconds; only the plumbing is checked, not accuracy. ``cycles.num_vis_images=4``
puts validation images of different sizes into one TensorBoard grid (which used to crash cycle 1).
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from alod.config import load_config
from alod.models import load_checkpoint
from alod.stages.cycles import finished_cycles, run_cycles
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod_testing import REPO, TINY, run_layout

COCO_CONFIG = REPO / "configs" / "coco.yaml"


def _tiny_overrides(tmp_path) -> list[str]:
    model = [f"model.{k}={json.dumps(v)}" for k, v in TINY["model"].items()]
    return [
        f"run.out_dir={tmp_path / 'runs'}", f"run.tb_dir={tmp_path / 'tensor_logs'}",
        *model, "model.min_size=64", "model.max_size=96",  # smaller than TINY's: 128 COCO frames per pass
        "train.batch_size=8", "train.eval_batch_size=16",
        "pretrain.epochs=1", "score.batch_size=16", "score.shard_size=64",
        "cycles.epochs=1", "cycles.num_cycles=2", "cycles.num_vis_images=4",
    ]


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads per process oversubscribe the cores
    and this run took 130 s instead of 30 s (the subprocess tests get OMP_NUM_THREADS=1 likewise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_coco_yaml_points_at_coco128_from_the_repo_root(shared_data, monkeypatch):
    """The shipped paths are relative to the working directory; from the repo root they find COCO128."""
    monkeypatch.chdir(REPO)
    cfg = load_config(COCO_CONFIG)
    coco = (shared_data / "coco128").resolve()
    assert cfg.data.kind == "coco" and cfg.model.name == "resnet18_fpn_light"
    assert REPO.joinpath(cfg.data.train_labels).resolve() == coco / "instances_train2017.json"
    assert REPO.joinpath(cfg.data.val_labels).resolve() == coco / "instances_val2017.json"
    assert REPO.joinpath(cfg.data.train_images).resolve() == coco / "images" / "train2017"
    assert REPO.joinpath(cfg.data.val_images).resolve() == coco / "images" / "val2017"
    assert cfg.model.min_size <= 320 and cfg.model.max_size <= 320


def test_coco128_pipeline_end_to_end(shared_data, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(REPO)  # configs/coco.yaml's data paths are relative to the repository root
    cfg = load_config(COCO_CONFIG, _tiny_overrides(tmp_path))
    layout = run_layout(cfg)
    assert layout.root == tmp_path / "runs" / "coco128"

    messages: list[str] = []
    ckpt = run_pretrain(cfg, progress=False, log=messages.append)
    assert any("pretrain: val mAP50" in m for m in messages)

    # 80 classes in ascending category-id order: label k is the k-th smallest id (id 90 -> label 80).
    data = json.loads((shared_data / "coco128" / "instances_train2017.json").read_text())
    names_by_id = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    state = load_checkpoint(ckpt)
    assert state["extra"]["classes"] == names_by_id and len(names_by_id) == 80
    assert names_by_id[0] == "person" and names_by_id[-1] == "toothbrush"
    assert state["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 81  # + background
    part = json.loads(layout.partition.read_text())
    assert len(part["images"]) == round(0.7 * 128)

    sched_path = run_scoring(cfg, ckpt=ckpt, progress=False)
    sched = json.loads(sched_path.read_text())
    assert len(sched["images"]) == 128 and sched["dataset"]["num_images"] == 128
    # 128 images in batches of 32 make 4 cycles of 16: cycle 1 random, later cycles by score.
    assert [(c["cycle"], c["rule"], len(c["images"])) for c in sched["cycles"]] == [
        (1, "random", 16), (2, "top", 16), (3, "top", 16), (4, "top", 16)]

    final = run_cycles(cfg, progress=False)
    done = finished_cycles(final)
    assert [(c["cycle"], c["pool_size"]) for c in done] == [(1, 16), (2, 32)]
    for c in done:
        assert math.isfinite(c["mAP50"]) and 0.0 <= c["mAP50"] <= 1.0
        metrics = json.loads(layout.cycle_metrics(c["cycle"]).read_text())
        assert metrics["mAP50"] == c["mAP50"]
        # Per-class AP under the COCO names (null for classes absent from val).
        assert {f"AP50/{n}" for n in names_by_id} <= set(metrics)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(layout.tb_root), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "val_predictions" in acc.Tags()["images"]
    assert sorted(e.step for e in acc.Images("val_predictions")) == [1, 2]
    assert sorted(e.step for e in acc.Scalars("mAP50")) == [1, 2]
