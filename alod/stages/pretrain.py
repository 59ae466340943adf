"""Stage 1: train the scorer on a fixed, seeded partition of the training set (``pretrain.images:
partition``) or on cycle 1's images (``cycle1``, :func:`scorer_images`).

Writes under ``runs/<run>/pretrain/`` (:class:`alod.layout.RunLayout`): ``config.yaml``,
``partition.json`` (the fraction, seed and exact image names), ``checkpoint_last.pt`` after every
epoch, ``metrics.json`` (validation mAP after training), ``metrics.jsonl``, and
``tensor_logs/<run>/pretrain/`` for TensorBoard. Rerunning resumes from the last epoch; a finished
run only re-evaluates if ``metrics.json`` is missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alod.config import Config
from alod.data.sources import training_split_labeled
from alod.schedule import cycle1_images
from alod.stages.setup import evaluate_detector, open_stage, train_detector
from alod.tb import RunLogger
from alod.utils import AlodError, atomic_write_json

PARTITION_FORMAT = "alod.partition/1"


def partition_indices(n_images: int, *, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of the ``round(fraction * n)`` images in the pretraining partition."""
    k = int(round(fraction * n_images))
    if k < 1:
        raise AlodError(f"pretrain.fraction={fraction} of {n_images} images leaves no image to train on")
    return np.sort(np.random.default_rng(seed).permutation(n_images)[:k])


def scorer_images(train, cfg: Config) -> np.ndarray:
    """Sorted positions of the images the scorer trains on (``pretrain.images``).

    ``partition``: the seeded ``pretrain.fraction`` of the pool (labels spent outside the cycles'
    budget). ``cycle1``: the schedule's cycle-1 draw (:func:`alod.schedule.cycle1_images` with
    ``schedule.*``), labels that every run of the seed gets anyway, so a comparison charges nothing
    extra for them.
    """
    if cfg.pretrain.images == "cycle1":
        s = cfg.schedule
        first = set(cycle1_images(train.names, batch_size=s.batch_size, query_size=s.query_size,
                                  num_batches=s.num_batches, seed=s.seed))
        return np.array([i for i, n in enumerate(train.names) if str(n) in first], dtype=np.int64)
    return partition_indices(len(train), fraction=cfg.pretrain.fraction, seed=cfg.pretrain.seed)


def run_pretrain(cfg: Config, *, accelerator=None, progress: bool = True, log=print) -> Path:
    """Train (or resume) the scorer and evaluate it. Returns the checkpoint path."""
    with open_stage(cfg, "pretrain", accelerator=accelerator, amp=cfg.train.amp, progress=progress, log=log) as ctx:
        ctx.ensure_dataset()
        return _pretrain(ctx, log)


def _pretrain(ctx, log) -> Path:
    cfg, layout = ctx.cfg, ctx.layout
    if not training_split_labeled(cfg.data):
        raise AlodError(
            f"pretraining needs labeled training images, and data.kind={cfg.data.kind} has none. To start a new "
            "project, skip pretraining: run the cycles with cycles.selector=adaptive (cycle 1 is random, no scorer), "
            "or make a precomputed schedule with score.strategy=random (no checkpoint needed), or bring a "
            "checkpoint with --ckpt / model.weights_path")
    train = ctx.load_split("train")
    val = ctx.load_split("val")

    part = scorer_images(train, cfg)
    names = [str(n) for n in train.names[part]]
    if layout.partition.is_file():
        old = json.loads(layout.partition.read_text())
        if old.get("images") != names:
            raise AlodError(
                f"{layout.partition} records a different pretraining partition (other data, fraction or seed); "
                f"use another run.name or delete {layout.pretrain_dir} to start over"
            )
    elif ctx.is_main:
        atomic_write_json(layout.partition, {
            "format": PARTITION_FORMAT,
            **({"images_from": "cycle1"} if cfg.pretrain.images == "cycle1" else {}),
            "fraction": cfg.pretrain.fraction,
            "seed": cfg.pretrain.seed,
            "dataset": train.fingerprint(),
            "images": names,
        })

    logger = RunLogger(layout.pretrain_tb, jsonl=layout.pretrain_log) if ctx.is_main else None

    def on_epoch_end(epoch: int, logs: dict) -> None:
        logger.scalars({k: v for k, v in logs.items() if k != "seconds"}, step=epoch + 1, prefix="train/",
                       record={"stage": "pretrain", "epoch": epoch + 1})
        logger.flush()
        log(f"pretrain epoch {epoch + 1}: loss {logs['loss']:.3f}, lr {logs['lr']:.4f}, {logs['seconds']:.0f}s")

    model, result = train_detector(
        ctx, train.subset(part), num_classes=train.num_classes,
        model_seed=cfg.run.seed + ctx.accelerator.process_index, epochs=cfg.pretrain.epochs, seed=cfg.run.seed,
        ckpt_dir=layout.pretrain_dir, desc="pretrain", on_epoch_end=on_epoch_end,
        extra={"stage": "pretrain", "partition": str(layout.partition), "classes": list(train.classes)},
    )
    if result["history"] or not layout.pretrain_metrics.is_file():
        metrics, _ = evaluate_detector(ctx, model, val, metrics_path=layout.pretrain_metrics, desc="evaluate val")
        if ctx.is_main:
            logger.scalars(metrics, step=result["epochs"], prefix="val/", record={"stage": "pretrain"})
            log(f"pretrain: val mAP50 {metrics['mAP50']:.3f}, mAP {metrics['mAP']:.3f} -> {layout.pretrain_metrics}")
    if logger is not None:
        logger.close()
    ctx.wait()
    return layout.pretrain_checkpoint
