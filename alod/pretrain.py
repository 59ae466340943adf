"""Stage 1: train the scorer on a fixed, seeded partition of the training set.

Writes under ``runs/<run>/pretrain/``: ``partition.json`` (the fraction, seed and exact image names),
``checkpoint_last.pt`` after every epoch, ``metrics.json`` (validation mAP after training), and
``tensor_logs/<run>/pretrain/`` for TensorBoard. Rerunning resumes from the last epoch; a finished
run only re-evaluates if ``metrics.json`` is missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alod.config import Config, TrainConfig, dump_config
from alod.utils import AlodError, atomic_write_json, atomic_write_text, seed_everything

PARTITION_FORMAT = "alod.partition/1"


def pretrain_dir(cfg: Config) -> Path:
    return cfg.run_dir / "pretrain"


def pretrain_checkpoint(cfg: Config) -> Path:
    from alod.engine import CHECKPOINT_LAST

    return pretrain_dir(cfg) / CHECKPOINT_LAST


def partition_indices(n_images: int, *, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of the ``round(fraction * n)`` images in the pretraining partition."""
    k = int(round(fraction * n_images))
    if k < 1:
        raise AlodError(f"pretrain.fraction={fraction} of {n_images} images leaves no image to train on")
    return np.sort(np.random.default_rng(seed).permutation(n_images)[:k])


def fit_settings(train: TrainConfig) -> dict:
    """The ``train:`` section as keyword arguments of :func:`alod.engine.fit` (shared with the cycles)."""
    return dict(
        batch_size=train.batch_size,
        lr=train.lr,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
        warmup_fraction=train.warmup_fraction,
        grad_clip_norm=train.grad_clip_norm,
        min_steps=train.min_steps,
        num_workers=train.num_workers,
    )


def write_resolved_config(cfg: Config) -> None:
    atomic_write_text(cfg.run_dir / "config.yaml", dump_config(cfg))


def run_pretrain(cfg: Config, *, accelerator=None, progress: bool = True, log=print) -> Path:
    """Train (or resume) the scorer and evaluate it. Returns the checkpoint path."""
    from alod.data.dataset import DetectionDataset
    from alod.data.sources import ensure_synthetic, load_split
    from alod.data.transforms import get_transform
    from alod.engine import fit, make_accelerator, predict
    from alod.evaluation import evaluate_detections, json_safe
    from alod.models import build_detector
    from alod.tb import RunLogger

    accelerator = accelerator or make_accelerator(amp=cfg.train.amp)
    main = accelerator.is_main_process
    out = pretrain_dir(cfg)
    if main:
        ensure_synthetic(cfg.data, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        write_resolved_config(cfg)
    accelerator.wait_for_everyone()
    quiet = (lambda *_: None) if not main else log
    train = load_split(cfg.data, "train", run_dir=cfg.run_dir, log=quiet)
    val = load_split(cfg.data, "val", run_dir=cfg.run_dir, log=quiet)

    part = partition_indices(len(train), fraction=cfg.pretrain.fraction, seed=cfg.pretrain.seed)
    names = [str(n) for n in train.names[part]]
    record = {
        "format": PARTITION_FORMAT,
        "fraction": cfg.pretrain.fraction,
        "seed": cfg.pretrain.seed,
        "dataset": train.fingerprint(),
        "images": names,
    }
    part_path = out / "partition.json"
    if part_path.is_file():
        old = json.loads(part_path.read_text())
        if old.get("images") != names:
            raise AlodError(
                f"{part_path} records a different pretraining partition (other data, fraction or seed); "
                f"use another run.name or delete {out} to start over"
            )
    elif main:
        atomic_write_json(part_path, record)

    seed_everything(cfg.run.seed + accelerator.process_index)
    model = build_detector(cfg.model, num_classes=train.num_classes)
    logger = RunLogger(cfg.tb_run_dir / "pretrain", jsonl=out / "metrics.jsonl") if main else None

    def on_epoch_end(epoch: int, logs: dict) -> None:
        logger.scalars({k: v for k, v in logs.items() if k != "seconds"}, step=epoch + 1, prefix="train/",
                       record={"stage": "pretrain", "epoch": epoch + 1})
        logger.flush()
        log(f"pretrain epoch {epoch + 1}: loss {logs['loss']:.3f}, lr {logs['lr']:.4f}, {logs['seconds']:.0f}s")

    result = fit(
        model,
        DetectionDataset(train.subset(part), transform=get_transform(cfg.train.transforms)),
        epochs=cfg.pretrain.epochs,
        **fit_settings(cfg.train),
        seed=cfg.run.seed,
        accelerator=accelerator,
        ckpt_dir=out,
        config=cfg.to_dict(),
        extra={"stage": "pretrain", "partition": str(part_path), "classes": list(train.classes)},
        on_epoch_end=on_epoch_end if main else None,
        desc="pretrain",
        progress=progress,
    )
    metrics_path = out / "metrics.json"
    if result["history"] or not metrics_path.is_file():
        dets = predict(model, DetectionDataset(val), batch_size=cfg.train.eval_batch_size, accelerator=accelerator,
                       amp=cfg.train.amp, desc="evaluate val", progress=progress)
        if main:
            metrics = evaluate_detections(val, dets)
            atomic_write_json(metrics_path, json_safe(metrics))
            logger.scalars(metrics, step=result["epochs"], prefix="val/", record={"stage": "pretrain"})
            log(f"pretrain: val mAP50 {metrics['mAP50']:.3f}, mAP {metrics['mAP']:.3f} -> {metrics_path}")
    if logger is not None:
        logger.close()
    accelerator.wait_for_everyone()
    return pretrain_checkpoint(cfg)
