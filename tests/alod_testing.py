"""Helpers shared by tests (importable as ``alod_testing``: pytest puts tests/ on sys.path)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

TINY = {
    "run": {"name": "tiny", "seed": 0},
    "data": {
        "kind": "synthetic",
        "synthetic": {"seed": 0, "num_train": 36, "num_val": 8, "width": 160, "height": 96, "max_objects": 6},
    },
    "model": {
        "name": "resnet18_fpn_light", "min_size": 96, "max_size": 160, "fpn_channels": 32,
        "anchor_sizes": [8, 16, 32, 64], "box_batch_size_per_image": 32,
        "rpn_post_nms_top_n_train": 100, "rpn_post_nms_top_n_test": 100, "box_head_width": 64,
    },
    "train": {"batch_size": 4, "lr": 0.01, "eval_batch_size": 4},
    "pretrain": {"fraction": 0.7, "epochs": 1},
    "score": {"strategy": "entropy", "params": {"entropy": {"aggregate": "sum"}}, "batch_size": 4, "shard_size": 10},
    "schedule": {"batch_size": 12, "query_size": 4, "seed": 0},
    "cycles": {"epochs": 2, "num_vis_images": 2},
}


def write_tiny_config(tmp: Path, *, data_root: Path | None = None, **sections) -> Path:
    """A tiny config under ``tmp`` (runs, logs and generated data all inside it)."""
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["run"]["out_dir"] = str(tmp / "runs")
    cfg["run"]["tb_dir"] = str(tmp / "tensor_logs")
    cfg["data"]["root"] = str(data_root or tmp / "data")
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_png(path: Path, width: int, height: int, colour) -> Path:
    """A plain-coloured RGB PNG at ``path`` (parents created)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


#: Three images (subfolders, sizes differ) with pre-annotations, for the annotation-format tests:
#: name, width, height, boxes, labels, scores.
EXPORT_CLASSES = ("car", "person", "bike")
EXPORT_SPECS = [
    ("cam1/a.png", 64, 48, [[5, 6, 20, 30], [30, 10, 60, 40]], [1, 2], [0.9, 0.6]),
    ("b.png", 80, 60, [[10, 10, 40, 50]], [3], [0.8]),
    ("cam2/deep/c.png", 50, 70, [[1.5, 2, 3, 4.25]], [1], [0.5]),
]


def export_task(tmp_path: Path, specs=EXPORT_SPECS, classes=EXPORT_CLASSES, *, cycle: int = 1):
    """An :class:`alod.annotate.core.ExportTask` whose images are written under ``tmp_path/dataset``."""
    import numpy as np

    from alod.annotate.core import ExportImage, ExportTask

    images = []
    for i, (name, w, h, boxes, labels, scores) in enumerate(specs):
        path = write_png(tmp_path / "dataset" / name, w, h, (40 * i, 100, 200))
        images.append(ExportImage(name=name, path=path, width=w, height=h,
                                  boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
                                  labels=np.asarray(labels, np.int64), scores=np.asarray(scores, np.float64)))
    return ExportTask(images=images, classes=tuple(classes), cycle=cycle, run="t")


def tiny_model_config(**overrides):
    """TINY's model section as a :class:`alod.config.ModelConfig`, with ``box_score_thresh=0`` so
    that a random-init or barely trained model still returns boxes."""
    from alod.config import ModelConfig

    fields = dict(TINY["model"], anchor_sizes=tuple(TINY["model"]["anchor_sizes"]), box_score_thresh=0.0)
    return ModelConfig(**{**fields, **overrides})


def run_layout(cfg):
    """The :class:`alod.layout.RunLayout` of a loaded config."""
    from alod.layout import RunLayout

    return RunLayout.from_config(cfg.run)


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
