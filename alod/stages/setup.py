"""What every stage does the same way: checking the config, set-up, training a detector, evaluating it.

* :func:`check_config`: the one place every registry checks its own section of a loaded config
  (strategies, selectors, oracles, data kinds and label formats, the scoring subset, the selection
  options, and each ``compare.variants`` run config); the CLI
  (:func:`load_checked_config`) and :func:`open_stage` call it, so a bad YAML is refused before
  any work.
* :func:`open_stage`: the config checked, the run folder's lock (:class:`alod.utils.RunLock`), the
  accelerator, the resolved config written next to the stage's outputs, every process waiting for
  the main one; returns a :class:`StageContext` (a context manager that releases the lock) that
  loads the splits with the run's index cache. It does no other work: generating the built-in
  dataset is the explicit next step, :meth:`StageContext.ensure_dataset`, which every stage entry
  point calls.
* :func:`train_detector`: a fresh detector trained (or resumed) with the ``train:`` settings.
* :func:`evaluate_detector`: predictions on the validation split, the metrics dict on every
  process, ``metrics.json`` written atomically by the main process.

Stages (``alod.stages.*``), orchestrators and the CLI use this module; it never imports a stage.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alod.cycle.batch_rules import check_selection_options
from alod.config import Config, TrainConfig, apply_overrides, dump_config, load_config
from alod.cycle.oracles import check_oracle
from alod.cycle.selection import check_selector
from alod.data.sources import check_data_config, ensure_dataset, load_split
from alod.evaluation import evaluate_detections, json_safe
from alod.layout import RunLayout
from alod.schedule import check_subset
from alod.strategies import check_strategy_section
from alod.utils import AlodError, RunLock, atomic_write_json, atomic_write_text, seed_everything


def check_config(cfg: Config) -> Config:
    """Each registry checks its own section of ``cfg`` (a config :func:`alod.config.load_config`
    already checked for types and ranges); returns ``cfg``.

    Raises:
        AlodError: the first problem, one line naming the key and the valid choices.
    """
    check_subset(subset=cfg.score.subset, batch_size=cfg.schedule.batch_size, query_size=cfg.schedule.query_size)
    check_data_config(cfg.data)
    check_strategy_section(cfg.score)
    check_selector(cfg.cycles.selector)
    check_oracle(cfg.cycles.oracle)
    check_selection_options(cfg.score, cfg.schedule, cfg.cycles.selector)
    base = dataclasses.replace(cfg, compare=dataclasses.replace(cfg.compare, variants={}))
    for name, table in cfg.compare.variants.items():  # each variant's run config passes the same checks,
        for mode in cfg.compare.modes:  # under the selector each compare mode runs it with
            moded = dataclasses.replace(base, cycles=dataclasses.replace(base.cycles, selector=mode))
            variant = apply_overrides(moded, table, where=f"compare.variants.{name}")
            try:
                check_config(variant)
            except AlodError as e:
                raise AlodError(f"compare.variants.{name}: {e}") from None
    return cfg


def load_checked_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """:func:`alod.config.load_config` followed by :func:`check_config`: what the CLI loads."""
    return check_config(load_config(path, overrides))


def _quiet(*_args) -> None:
    return None


@dataclass
class StageContext:
    """One stage's run: its config, the run layout, the accelerator, and where messages go.

    ``log`` prints on the main process only (other processes get a no-op), so stages can log
    without asking which process they are.
    """

    cfg: Config
    layout: RunLayout
    accelerator: Any
    progress: bool
    log: Callable[[str], object]
    lock: Any = None  # the RunLock the main process holds

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> StageContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    def dataset(self, index, *, transform=None):
        """A :class:`~alod.data.dataset.DetectionDataset`; with ``data.strict: false`` it skips images
        that fail to decode instead of stopping the run."""
        from alod.data.dataset import DetectionDataset  # why: keeps torch out of config checks (alod CLI)

        return DetectionDataset(index, transform=transform, skip_unreadable=not self.cfg.data.strict)

    def report_unreadable(self, names_reasons: dict[str, str], *, stage: str) -> None:
        """List images that failed to decode in ``unreadable_images.jsonl`` and say how many (main process)."""
        if not names_reasons or not self.is_main:
            return
        path = self.layout.unreadable_images
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            for name, reason in sorted(names_reasons.items()):
                f.write(json.dumps({"stage": stage, "image": name, "reason": reason}, sort_keys=True) + "\n")
        self.log(f"{stage}: {len(names_reasons)} image(s) could not be decoded and were skipped "
                 f"(data.strict: false); listed in {path}")

    def ensure_dataset(self) -> None:
        """Generate the built-in dataset if the config names it and it is not there yet (main
        process, logged; :func:`alod.data.sources.ensure_dataset`); every process waits for it."""
        if self.is_main:
            ensure_dataset(self.cfg.data, progress=self.progress, log=self.log)
        self.wait()

    def load_split(self, split: str):
        """The :class:`~alod.data.index.DetectionIndex` of ``split``, through the run's index cache."""
        return load_split(self.cfg.data, split, cache_dir=self.layout.cache_dir,
                          problems_path=self.layout.problems_path(split), log=self.log)


def open_stage(cfg: Config, stage: str, *, accelerator=None, amp: bool = False, progress: bool = True,
               log: Callable[[str], object] = print) -> StageContext:
    """Set up ``stage`` (one of :data:`alod.layout.STAGES`) for ``cfg``; use as ``with open_stage(...) as ctx``.

    Checks ``cfg`` (:func:`check_config`), takes the run folder's lock and writes the resolved
    config (main process), and waits for every process. Nothing else: the stage then calls
    :meth:`StageContext.ensure_dataset` itself.

    Raises:
        AlodError: a bad config, or another command holds the run folder's lock.

    ``accelerator``: reuse one (``alod demo`` runs the three stages in one process); ``None`` makes
    one with bf16 autocast on GPU when ``amp``.
    """
    from alod.engine import make_accelerator  # why: keeps torch out of config checks (alod CLI)

    check_config(cfg)
    accelerator = accelerator or make_accelerator(amp=amp)
    layout = RunLayout.from_config(cfg.run)
    main = accelerator.is_main_process
    lock = None
    if main:
        lock = RunLock(layout.lock, owner_path=layout.lock_owner, log=log).acquire()
        try:
            atomic_write_text(layout.stage_config(stage), dump_config(cfg))
        except BaseException:
            lock.release()
            raise
    accelerator.wait_for_everyone()
    return StageContext(cfg=cfg, layout=layout, accelerator=accelerator, progress=progress,
                        log=log if main else _quiet, lock=lock)


def fit_settings(train: TrainConfig) -> dict:
    """The ``train:`` section as keyword arguments of :func:`alod.engine.fit`."""
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


def train_detector(ctx: StageContext, index, *, num_classes: int, model_seed: int, epochs: int, seed: int,
                   ckpt_dir: Path, extra: dict, desc: str,
                   on_epoch_end: Callable[[int, dict], None] | None = None,
                   init_weights: dict | None = None, plateau=None):
    """Build a fresh detector and train it on ``index``; resume from ``ckpt_dir`` when it holds a checkpoint.

    ``model_seed`` seeds the initial weights (the caller adds the process rank if it wants one);
    ``seed`` the data order and augmentation (:func:`alod.engine.fit`). When every epoch is already
    in the checkpoint, nothing trains and the model holds the final weights. ``init_weights``: a
    state dict to start from instead of the random initialisation (warm start); ``plateau``: an
    :class:`alod.engine.Plateau` for early stopping.

    Returns:
        ``(model, result)`` with ``result`` as :func:`alod.engine.fit` returns it.
    """
    from alod.data.transforms import get_transform  # why: keeps torch out of config checks (alod CLI)
    from alod.engine import fit  # why: as above
    from alod.models import build_detector  # why: as above

    cfg = ctx.cfg
    seed_everything(model_seed)
    model = build_detector(num_classes=num_classes, **asdict(cfg.model))
    if init_weights is not None:
        model.load_state_dict(init_weights)
    result = fit(
        model,
        ctx.dataset(index, transform=get_transform(cfg.train.transforms)),
        epochs=epochs,
        **fit_settings(cfg.train),
        seed=seed,
        accelerator=ctx.accelerator,
        ckpt_dir=ckpt_dir,
        config=cfg.to_dict(),
        extra=extra,
        on_epoch_end=on_epoch_end if ctx.is_main else None,
        plateau=plateau,
        desc=desc,
        progress=ctx.progress,
    )
    ctx.report_unreadable({str(index.names[i]): why for i, why in result["unreadable"].items()}, stage=desc)
    return model, result


def evaluate_detector(ctx: StageContext, model, val, *, metrics_path: Path, desc: str) -> tuple[dict, list[dict]]:
    """Predict ``val`` (split over processes), evaluate, write ``metrics_path`` (main process).

    Images that failed to decode (``data.strict: false``) are listed and left out of the metrics.

    Returns:
        ``(metrics, detections)`` on every process: the :func:`alod.evaluation.evaluate_detections`
        dict (NaN for classes without ground truth) and one detections dict per ``val`` image.
    """
    from alod.engine import predict  # why: keeps torch out of config checks (alod CLI)

    cfg = ctx.cfg
    dets = predict(model, ctx.dataset(val), batch_size=cfg.train.eval_batch_size, accelerator=ctx.accelerator,
                   amp=cfg.train.amp, desc=desc, progress=ctx.progress)
    metrics = {}
    if ctx.is_main:
        bad = [i for i, d in enumerate(dets) if "unreadable" in d]
        scored, scored_dets = val, dets
        if bad:  # an image nobody could look at is neither a hit nor a miss: evaluate without it
            ctx.report_unreadable({str(val.names[i]): dets[i]["unreadable"] for i in bad}, stage=desc)
            keep = np.setdiff1d(np.arange(len(val)), bad)
            scored, scored_dets = val.subset(keep), [dets[i] for i in keep]
        metrics = evaluate_detections(scored, scored_dets)
        atomic_write_json(metrics_path, json_safe(metrics))
    return broadcast(ctx.accelerator, metrics), dets


def broadcast(accelerator, obj):
    """``obj`` from the main process, on every process (a no-op with one process)."""
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list  # why: keeps torch out of config checks (alod CLI)

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]
