"""Stage 2: score the training images with the scorer checkpoint and write ``schedule.json``.

Every image is scored, or with ``score.subset < 1`` a seeded sample of each arrival batch (below).

Scoring streams the pool through a DataLoader in fixed shards of ``score.shard_size`` images
(shard ``k`` = pool positions ``[k * size, (k + 1) * size)``). Each shard is written atomically as
soon as it is done, holding only what the schedule needs: the per-image score and compact per-box
statistics (score, label, entropy as float16/uint8; enough to recompute ``box_count`` or any
reduction of ``entropy`` without inference), never the full detections.

* Resume: a rerun skips shards whose file exists (atomic writes: a file that exists is complete).
* Processes: under ``accelerate launch`` with N processes, process ``r`` scores shards
  ``k % N == r``; the main process merges once all are there. Shard boundaries do not depend on N,
  so the merged scores, and the schedule, are the same for any N.

Strategies that need no inference (``random``) read no checkpoint and write no shards. Stochastic
strategies (``mc_dropout``) are scored with Monte Carlo dropout inference (the strategy's ``passes``,
``dropout`` and ``seed``; image ``i``'s masks seeded by ``(seed, i)``, so shards, resume and the
number of processes change nothing) and otherwise exactly like the others.

Shards live in ``runs/<run>/scores/<key>/`` where ``key`` hashes the checkpoint's sha256, the
strategy and its parameters, the dataset fingerprint and the shard size (and, under
``score.subset < 1``, the sampled positions; with bf16 or ``channels_last``, the numerics; and the
``model:`` settings that change what a checkpoint predicts, those that differ from their defaults):
changing any of them starts a fresh set instead of mixing results.

* Subset (``score.subset < 1``): only the positions :func:`alod.schedule.scoring_sample` returns
  are scored (a seeded sample of each arrival batch from batch 2 on; batch 1 and images in no batch
  are not scored). Shard ``k`` then holds sampled positions ``[k * size, (k + 1) * size)`` of that
  ascending list; the sample depends on ``schedule.seed``, ``schedule.batch_size``,
  ``schedule.query_size``, ``schedule.num_batches`` and the subset only, so shards and processes
  change nothing. An image keeps its pool position, so its score equals its score in a full run.
  The schedule records the images not scored (:mod:`alod.schedule`).
* Selection options (:class:`alod.cycle.batch_rules.SelectOptions`): a batch rule that reads embeddings
  (``score.batch: kmeanspp | coreset``) makes every shard also hold ``embeddings float16[n, d]``
  (the mean-pooled last FPN level of each image, captured in the same forward pass:
  :class:`alod.cycle.scorer.EmbeddingHook`); ``score.class_weights: difficulty`` weights the boxes by
  ``1 - AP50`` of the scorer's own validation ``metrics.json`` (beside the checkpoint); a budget in
  boxes counts the predicted boxes from the shards' per-box scores. The options in effect (and the
  weights) join the shard key, so default keys and shards keep their bytes. A strategy that needs no
  inference (``random``) runs no model here, so it has neither embeddings nor predicted boxes nor
  per-box uncertainty: with an option on it raises ``NotImplementedError`` (the adaptive selector
  runs the detector for them).
* Throughput: every run that scored something logs the images it scored, the seconds and images/s
  (all processes together) and appends them to ``timings`` in the shard folder's ``manifest.json``
  (``{"images", "seconds", "images_per_s", "processes", "shards"}``; ``shards`` = shards scored by
  that run). A resumed scoring thus shows one entry per run.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alod.config import Config, ModelConfig
from alod.cycle.batch_rules import SelectOptions, predicted_counts
from alod.cycle.scorer import iter_scored, stack_embeddings
from alod.cycle.selection import class_weights_from
from alod.engine import autocast_on
from alod.layout import RunLayout
from alod.models import load_detector
from alod.schedule import build_schedule, save_schedule, scoring_sample
from alod.stages.setup import open_stage
from alod.strategies import box_entropy, check_params, get_strategy
from alod.utils import AlodError, atomic_write_bytes, atomic_write_json, sha256_file

SHARD_FORMAT = "alod.scores/1"


def _shard_key(*, ckpt_sha: str, strategy: str, params: dict, fingerprint: dict, shard_size: int,
               positions_sha256: str | None = None, numerics: dict | None = None,
               model: dict | None = None, selection: dict | None = None) -> str:
    key = {"ckpt": ckpt_sha, "strategy": strategy, "params": params, "dataset": fingerprint, "shard": shard_size}
    if positions_sha256 is not None:  # score.subset < 1 only: full-pool keys (and their shards) stay as they were
        key["positions"] = positions_sha256
    if numerics:  # bf16 or channels_last only: fp32 NCHW keys (and their shards) stay as they were
        key["numerics"] = numerics
    if model:  # non-default model settings only: keys of an all-default model stay as they were
        key["model"] = model
    if selection:  # selection options only: keys without them (and their shards) stay as they were
        key["selection"] = selection
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


#: ``model:`` fields that do not change what a given checkpoint predicts: where the initial weights
#: come from, what training samples, and the memory layout (that one is in ``numerics``).
_NOT_INFERENCE = frozenset({"weights", "weights_backbone", "weights_path", "trainable_backbone_layers",
                            "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_batch_size_per_image",
                            "box_batch_size_per_image", "channels_last"})


def scoring_model_settings(cfg: Config) -> dict:
    """The ``model:`` settings, beyond the checkpoint's weights, that change what the scorer
    predicts (input size, proposal and detection counts, the score threshold, RoIAlign sampling,
    anchors, ...), where they differ from :class:`alod.config.ModelConfig`'s defaults. Part of the
    shard key: the checkpoint holds only weights, so scoring it with, say, another
    ``box_score_thresh`` must not resume from the first setting's shards."""
    defaults = json.loads(json.dumps(asdict(ModelConfig())))  # as the manifest writes them (tuples as lists)
    current = json.loads(json.dumps(asdict(cfg.model)))
    return {k: v for k, v in sorted(current.items()) if k not in _NOT_INFERENCE and v != defaults[k]}


def scoring_numerics(cfg: Config, device_type: str) -> dict:
    """What, beyond the checkpoint, changes the scores' last bits: bf16 autocast where ``score.amp``
    turns it on for ``device_type``, and ``model.channels_last``. Part of the shard key, so a rerun
    with other numerics scores afresh instead of mixing shards of both."""
    out = {}
    if autocast_on(device_type, cfg.score.amp):
        out["autocast"] = "bf16"
    if cfg.model.channels_last:
        out["channels_last"] = True
    return out


def _positions_sha256(positions: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(positions, dtype="<i8").tobytes()).hexdigest()


def _shard_positions(positions: np.ndarray, k: int, shard_size: int) -> np.ndarray:
    return positions[k * shard_size : (k + 1) * shard_size]


def _box_stats(det: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = det.get("probs")
    ent = box_entropy(probs) if probs is not None and len(probs) else np.zeros(len(det["scores"]))
    return (
        np.asarray(det["scores"], dtype=np.float16),
        np.asarray(det["labels"], dtype=np.uint8),
        ent.astype(np.float16),
    )


def _write_shard(path: Path, *, positions: np.ndarray, scores: np.ndarray, box_stats: list,
                 unreadable: list[int] = (), embeddings: np.ndarray | None = None) -> None:
    counts = np.array([len(s[0]) for s in box_stats], dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    def cat(k, dtype):
        parts = [s[k] for s in box_stats]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    buf = io.BytesIO()
    extra = {"embeddings": np.asarray(embeddings, dtype=np.float16)} if embeddings is not None else {}
    np.savez(
        buf,
        **extra,
        format=np.array(SHARD_FORMAT),
        positions=positions.astype(np.int64),
        scores=scores.astype(np.float64),
        box_offsets=offsets,
        box_scores=cat(0, np.float16),
        box_labels=cat(1, np.uint8),
        box_entropy=cat(2, np.float16),
        unreadable=np.asarray(list(unreadable), dtype=np.int64),  # positions that failed to decode (score 0)
    )
    atomic_write_bytes(path, buf.getvalue())


def load_shards(shard_dir: Path, n_shards: int, positions: np.ndarray | None = None) -> np.ndarray:
    """Merged per-image scores ``float64[n]`` in pool order from ``n_shards`` shard files.

    ``positions``: the ascending pool positions the shards were made for (``score.subset < 1``);
    ``None``: the whole pool, ``0..n-1``. The scores are aligned with them.
    """
    parts = []
    for k in range(n_shards):
        path = shard_dir / f"shard_{k:05d}.npz"
        if not path.is_file():
            raise AlodError(f"score shard {path} is missing; rerun make_batches.py to finish scoring")
        with np.load(path, allow_pickle=False) as z:
            parts.append((z["positions"], z["scores"]))
    have = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, dtype=np.int64)
    scores = np.concatenate([s for _, s in parts]) if parts else np.zeros(0)
    expected = np.arange(len(have)) if positions is None else np.asarray(positions, dtype=np.int64)
    if not np.array_equal(have, expected):
        raise AlodError(f"score shards in {shard_dir} do not cover the pool in order; delete the folder and rerun")
    return scores


def _stacked(embeddings: list):

    return stack_embeddings(embeddings)


def load_shard_arrays(shard_dir: Path, n_shards: int, *, embeddings: bool = False,
                      box_threshold: float | None = None) -> dict:
    """What the selection options read from the shards, in shard (pool) order: ``embeddings
    float16[n, d]`` (with ``embeddings``) and ``predicted int64[n]``, the boxes with a score
    (float16, as stored) ``>= box_threshold`` (with a threshold). An error names a shard made
    without embeddings (delete the folder and rerun)."""

    embs, counts = [], []
    for k in range(n_shards):
        path = shard_dir / f"shard_{k:05d}.npz"
        with np.load(path, allow_pickle=False) as z:
            if embeddings and "embeddings" not in z.files:
                raise AlodError(f"score shard {path} holds no embeddings; delete {shard_dir} and rerun make_batches.py")
            if embeddings:
                embs.append(z["embeddings"])
            if box_threshold is not None:
                counts.append(predicted_counts(z["box_scores"], z["box_offsets"], box_threshold))
    return {"embeddings": np.concatenate(embs) if embs else None,
            "predicted": np.concatenate(counts) if counts else None}


def unreadable_positions(shard_dir: Path, n_shards: int) -> list[int]:
    """Pool positions whose image failed to decode while scoring (``data.strict: false``; scored 0)."""
    out: list[int] = []
    for k in range(n_shards):
        with np.load(shard_dir / f"shard_{k:05d}.npz", allow_pickle=False) as z:
            if "unreadable" in z.files:
                out += z["unreadable"].tolist()
    return out


def score_pool(
    model,
    dataset,
    *,
    strategy: str,
    params: dict,
    shard_dir: Path,
    shard_size: int,
    batch_size: int,
    num_workers: int = 0,
    accelerator=None,
    amp: bool = False,
    progress: bool = True,
    log=print,
    positions: np.ndarray | None = None,
    class_weights: np.ndarray | None = None, embed: bool = False,
) -> np.ndarray:
    """Score the images of ``dataset`` (resumable shards, split over processes); return ``float64[n]``.

    ``positions``: ascending dataset positions ``int[n]`` to score (``score.subset < 1``); ``None``:
    all of them. The scores are aligned with them. A strategy whose inference is ``stochastic`` gets
    Monte Carlo dropout detections (with ``mc_probs``) from its own ``passes``, ``dropout`` and
    ``seed``. ``class_weights float[C + 1]`` and ``embed`` (shards hold embeddings): module docstring.
    """
    check_params(strategy, params)  # unknown names and parameters fail before any inference
    pool = np.arange(len(dataset)) if positions is None else np.asarray(positions, dtype=np.int64)
    n = len(pool)
    n_shards = (n + shard_size - 1) // shard_size
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    device = accelerator.device if accelerator is not None else "cpu"
    mine = [k for k in range(n_shards) if k % world == rank]
    todo = [k for k in mine if not (shard_dir / f"shard_{k:05d}.npz").is_file()]
    if rank == 0 and len(todo) < len(mine):
        log(f"scoring: resuming, {len(mine) - len(todo)} of {len(mine)} shards of this process already done")
    total = sum(min(shard_size, n - k * shard_size) for k in todo)
    bar = tqdm(total=total, desc=f"scoring ({strategy})", unit="img", disable=not (progress and rank == 0))
    t0, done = time.perf_counter(), 0
    for k in todo:
        shard = _shard_positions(pool, k, shard_size)
        shard_scores, stats, unreadable, embs = [], [], [], []
        for batch_pos, scores, dets in iter_scored(model, dataset, shard, strategy=strategy, params=params,
                                                   batch_size=batch_size, num_workers=num_workers, device=device,
                                                   amp=amp, class_weights=class_weights, embed=embed):
            shard_scores.append(scores)
            embs += [d.get("embedding") for d in dets] if embed else []
            stats.extend(_box_stats(d) for d in dets)
            unreadable += [p for p, d in zip(batch_pos, dets) if "unreadable" in d]
            bar.update(len(dets))
            done += len(dets)
        bar.set_postfix(img_s=f"{done * world / max(1e-9, time.perf_counter() - t0):.1f}")
        _write_shard(shard_dir / f"shard_{k:05d}.npz", positions=shard, scores=np.concatenate(shard_scores),
                     box_stats=stats, unreadable=unreadable, embeddings=_stacked(embs) if embed else None)
    bar.close()
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return load_shards(shard_dir, n_shards, positions=positions)


def missing_shards(shard_dir: Path, *, n: int, shard_size: int) -> tuple[int, int]:
    """``(shards, images)`` not scored yet among the ``n`` images to score in ``shard_dir``."""
    n_shards = (n + shard_size - 1) // shard_size
    todo = [k for k in range(n_shards) if not (shard_dir / f"shard_{k:05d}.npz").is_file()]
    return len(todo), sum(min(shard_size, n - k * shard_size) for k in todo)


def _previous_timings(manifest: Path) -> list:
    """The ``timings`` an earlier run of the same shard set recorded (kept when the manifest is rewritten)."""
    try:
        return list(json.loads(manifest.read_text()).get("timings") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _record_timing(manifest: Path, entry: dict) -> None:
    """Append one scoring run's throughput to ``manifest.json``'s ``timings`` (main process)."""
    doc = json.loads(manifest.read_text())
    doc["timings"] = list(doc.get("timings") or []) + [entry]
    atomic_write_json(manifest, doc)


def run_scoring(cfg: Config, *, ckpt: str | Path | None = None, accelerator=None, progress: bool = True,
                log=print) -> Path:
    """Score the training pool with ``ckpt`` (default: the run's pretraining checkpoint) and write
    ``runs/<run>/schedule.json``. Returns its path.

    A strategy whose inference is ``none`` (``random``) needs no checkpoint: ``ckpt`` is ignored and
    the schedule records ``checkpoint: null``.
    """
    strategy, params = cfg.score.strategy, cfg.score.strategy_params()
    spec = get_strategy(strategy)
    ckpt_path = None
    if spec.inference != "none":
        ckpt_path = Path(ckpt) if ckpt else RunLayout.from_config(cfg.run).pretrain_checkpoint
        if not ckpt_path.is_file():
            raise AlodError(
                f"checkpoint {ckpt_path} not found. Train the scorer first: "
                "accelerate launch train_part_entropy.py --config <config> (or pass --ckpt PATH)"
            )
    with open_stage(cfg, "batches", accelerator=accelerator, amp=cfg.score.amp, progress=progress, log=log) as ctx:
        ctx.ensure_dataset()
        return _score_and_schedule(ctx, spec=spec, params=params, ckpt=ckpt, ckpt_path=ckpt_path, log=log)


def _score_and_schedule(ctx, *, spec, params: dict, ckpt, ckpt_path: Path | None, log) -> Path:
    """The stage's steps: load the pool, draw the scored sample, score (with the model or without),
    write the schedule (main process). Returns the schedule's path."""
    cfg, strategy = ctx.cfg, spec.name
    opts, extras = _selection_options(cfg, spec), {}
    train = ctx.load_split("train")
    fingerprint = train.fingerprint()  # of the whole training split: the cycles check it
    if cfg.score.pool == "unseen":
        train = _unseen_by_scorer(ctx, train)
    sample = _scored_sample(ctx, train)
    if spec.inference == "none":
        if ckpt:
            ctx.log(f"scoring: strategy {strategy!r} needs no model; --ckpt {ckpt} is not read")
        scores = spec.fn([{}] * len(train), **check_params(strategy, params))
        checkpoint = None
    else:
        checkpoint = {"path": str(ckpt_path), "sha256": sha256_file(ckpt_path)}
        scores, extras = _score_with_model(ctx, train, strategy=strategy, params=params, checkpoint=checkpoint,
                                           sample=sample, opts=opts)
    out = ctx.layout.schedule
    if ctx.is_main:
        _write_schedule(ctx, train, scores, out=out, fingerprint=fingerprint, checkpoint=checkpoint,
                        strategy={"name": strategy, "params": params}, extras=extras, log=log)
    ctx.wait()
    return out


def _selection_options(cfg: Config, spec):
    """The selection options (:class:`alod.cycle.batch_rules.SelectOptions`); ``NotImplementedError`` for a
    strategy that runs no model here, which leaves the options nothing to work from."""
    opts = SelectOptions.from_config(cfg)
    if opts.active and spec.inference == "none":
        raise NotImplementedError(
            f"score.strategy={spec.name!r} runs no model in the scoring stage, so the precomputed schedule has no "
            f"embeddings, predicted boxes or per-box uncertainty for the selection options {opts.identity()}; "
            "use cycles.selector: adaptive (it runs the detector for them) or a strategy with inference")
    return opts


def _selection_of(opts, ckpt_path: Path, train) -> tuple[np.ndarray | None, dict]:
    """``(class weights float64[C + 1] or None, the schedule's selection record)`` for ``opts``; the
    weights come from the scorer's validation metrics beside its checkpoint. Unlike adaptive
    selection (which measures the labeled pool, :func:`alod.cycle.selection.labeled_pool_metrics`), this
    reads the split the scorer was validated on: keep that split apart from the one you report."""
    if not opts.active:
        return None, {}
    weights = None
    if opts.class_weights == "difficulty":
        weights = class_weights_from(RunLayout.metrics_beside(ckpt_path), train.classes)
    selection = dict(opts.identity())
    if weights is not None:
        selection["class_weight_values"] = [float(w) for w in weights]
    return weights, selection


def _shard_selection(opts, selection: dict) -> dict | None:
    """What of the options changes the shards: the weights (they change scores) and embeddings."""
    if not selection:
        return None
    out = {k: v for k, v in selection.items() if k == "class_weight_values"}
    if opts.needs_embeddings:
        out["embeddings"] = "fpn_last_mean/float16"
    return out or None


def _selection_extras(opts, selection: dict, shard_dir: Path, n_shards: int, *, sample, n: int) -> dict:
    """``build_schedule``'s ``selection``, ``embeddings`` and ``predicted_boxes`` (aligned with the
    pool; zeros where a subset did not score) from the shards; ``{}`` without options."""
    if not selection:
        return {}
    arrays = load_shard_arrays(shard_dir, n_shards, embeddings=opts.needs_embeddings,
                               box_threshold=opts.box_threshold)

    def full(a):
        if a is None or sample is None:
            return a
        out = np.zeros((n,) + a.shape[1:], dtype=a.dtype)
        out[sample] = a
        return out

    return {"selection": selection, "embeddings": full(arrays["embeddings"]),
            "predicted_boxes": full(arrays["predicted"])}
def _scored_sample(ctx, train) -> np.ndarray | None:
    """Positions ``int64[k]`` of the images ``score.subset < 1`` scores (``None``: all of them)."""
    cfg, subset = ctx.cfg, ctx.cfg.score.subset
    sample = scoring_sample(len(train), batch_size=cfg.schedule.batch_size, query_size=cfg.schedule.query_size,
                            num_batches=cfg.schedule.num_batches, seed=cfg.schedule.seed, subset=subset)
    if sample is not None:
        ctx.log(f"scoring: score.subset={subset:g}: scoring a seeded sample of {len(sample)} of the {len(train)} "
                "images (arrival batches 2 on; batch 1's cycle is a random draw and is not scored)")
    return sample


def _score_with_model(ctx, train, *, strategy: str, params: dict, checkpoint: dict, sample: np.ndarray | None,
                      opts) -> tuple[np.ndarray, dict]:
    """Scores ``float64[len(train)]`` (NaN outside ``sample``) from the scorer ``checkpoint`` (``path``,
    ``sha256``), through resumable shards keyed by everything that changes them, and the schedule's
    selection extras (:func:`_selection_extras`; ``{}`` without selection options ``opts``)."""
    cfg = ctx.cfg
    model = load_detector(checkpoint["path"], num_classes=train.num_classes, **asdict(cfg.model))
    model.to(ctx.accelerator.device)
    # Keyed by the scored images (the whole split, or the unseen part of it; under a subset, the sample).
    positions_sha = _positions_sha256(sample) if sample is not None else None
    shard_size = cfg.score.shard_size
    numerics = scoring_numerics(cfg, ctx.accelerator.device.type)
    model_settings = scoring_model_settings(cfg)
    weights, selection = _selection_of(opts, Path(checkpoint["path"]), train)
    key = _shard_key(ckpt_sha=checkpoint["sha256"], strategy=strategy, params=params, fingerprint=train.fingerprint(),
                     shard_size=shard_size, positions_sha256=positions_sha, numerics=numerics, model=model_settings,
                     selection=_shard_selection(opts, selection))
    shard_dir = ctx.layout.score_shards(key)
    n_scored = len(train) if sample is None else len(sample)
    manifest = shard_dir / "manifest.json"
    todo = (0, 0)
    if ctx.is_main:
        _write_manifest(manifest, checkpoint=checkpoint, strategy=strategy, params=params, train=train,
                        shard_size=shard_size, sample=sample, subset=cfg.score.subset, positions_sha=positions_sha,
                        numerics=numerics, model_settings=model_settings, selection=selection)
        # Counted before any process starts (they all wait below): what this run will score.
        todo = missing_shards(shard_dir, n=n_scored, shard_size=shard_size)
    ctx.wait()
    t0 = time.perf_counter()
    scores = score_pool(
        model, ctx.dataset(train), strategy=strategy, params=params, shard_dir=shard_dir,
        shard_size=shard_size, batch_size=cfg.score.batch_size, num_workers=cfg.score.num_workers,
        accelerator=ctx.accelerator, amp=cfg.score.amp, progress=ctx.progress, log=ctx.log, positions=sample,
        class_weights=weights, embed=bool(selection) and opts.needs_embeddings,
    )
    seconds = time.perf_counter() - t0  # score_pool ends after every process is done
    if sample is not None:
        full = np.full(len(train), np.nan)
        full[sample] = scores
        scores = full
    if ctx.is_main:
        _log_throughput(ctx, manifest, todo=todo, n_scored=n_scored, seconds=seconds, shard_dir=shard_dir)
    n_shards = (n_scored + shard_size - 1) // shard_size
    ctx.report_unreadable({str(train.names[p]): "failed to decode while scoring; scored 0 (ranked as certain)"
                           for p in unreadable_positions(shard_dir, n_shards)}, stage="scoring")
    return scores, _selection_extras(opts, selection, shard_dir, n_shards, sample=sample, n=len(train))


def _write_manifest(manifest: Path, *, checkpoint: dict, strategy: str, params: dict, train, shard_size: int,
                    sample: np.ndarray | None, subset: float, positions_sha: str | None, numerics: dict,
                    model_settings: dict, selection: dict) -> None:
    """``manifest.json`` of a shard folder: what its shards were scored with (earlier timings kept)."""
    manifest.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": SHARD_FORMAT, "checkpoint": checkpoint["path"], "checkpoint_sha256": checkpoint["sha256"],
        "strategy": strategy, "params": params, "dataset": train.fingerprint(), "shard_size": shard_size,
    }
    if sample is not None:
        doc.update(subset=subset, num_scored=len(sample), positions_sha256=positions_sha)
    if numerics:
        doc["numerics"] = numerics
    if model_settings:
        doc["model"] = model_settings
    if selection:
        doc["selection"] = selection
    doc["timings"] = _previous_timings(manifest)
    atomic_write_json(manifest, doc)


def _log_throughput(ctx, manifest: Path, *, todo: tuple[int, int], n_scored: int, seconds: float,
                    shard_dir: Path) -> None:
    """Record and log this run's images per second (main process); ``todo``: (shards, images) it scored."""
    todo_shards, todo_images = todo
    if not todo_images:
        ctx.log(f"scoring: all {n_scored} images were already scored ({shard_dir})")
        return
    rate = todo_images / seconds if seconds > 0 else None
    _record_timing(manifest, {"images": todo_images, "seconds": round(seconds, 3),
                              "images_per_s": round(rate, 3) if rate is not None else None,
                              "processes": ctx.accelerator.num_processes, "shards": todo_shards})
    resumed = f"; {n_scored - todo_images} were scored before" if todo_images < n_scored else ""
    ctx.log(f"scoring: {todo_images} images scored in {seconds:.1f} s ({rate or 0:.1f} images/s, "
            f"{ctx.accelerator.num_processes} process(es)){resumed}; recorded in {manifest}")


def _write_schedule(ctx, train, scores: np.ndarray, *, out: Path, fingerprint: dict, checkpoint: dict | None,
                    strategy: dict, extras: dict, log) -> None:
    """Build ``schedule.json`` from ``scores float64[len(train)]`` (and the selection ``extras``) and
    write it to ``out`` (main process)."""
    cfg = ctx.cfg
    schedule = build_schedule(
        names=[str(x) for x in train.names],
        scores=scores,
        batch_size=cfg.schedule.batch_size,
        query_size=cfg.schedule.query_size,
        num_batches=cfg.schedule.num_batches,
        seed=cfg.schedule.seed,
        dataset=fingerprint,
        checkpoint=checkpoint,
        strategy=strategy,
        pool=cfg.score.pool,
        subset=cfg.score.subset,
        **extras,
    )
    save_schedule(schedule, out)
    log(f"schedule: {len(schedule['cycles'])} cycles of {cfg.schedule.query_size} images "
        f"from batches of {cfg.schedule.batch_size} -> {out}")


def _unseen_by_scorer(ctx, train):
    """``train`` without the images the scorer was trained on (``score.pool: unseen``).

    The pretraining partition (``runs/<run>/pretrain/partition.json``) says which; a scorer ranks
    images it has seen as confidently right, so ranking only the others asks whether that bias
    matters.
    """
    path = ctx.layout.partition
    if not path.is_file():
        raise AlodError(f"score.pool: unseen needs the pretraining partition {path}; run the pretraining stage "
                        "first (or use score.pool: all)")
    seen = set(json.loads(path.read_text())["images"])
    keep = np.array([i for i, n in enumerate(train.names.tolist()) if n not in seen], dtype=np.int64)
    ctx.log(f"scoring: score.pool=unseen: ranking the {len(keep)} images the scorer did not train on "
            f"(of {len(train)})")
    return train.subset(keep)
