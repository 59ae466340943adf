"""Scoring images with a detector and a strategy: the one loop behind the scoring stage (sharded and
resumable, :mod:`alod.stages.scoring`) and the adaptive selector (:mod:`alod.cycle.selection`).

A strategy's ``inference`` (:mod:`alod.strategies`) decides how the detector runs: ``single`` is
one pass per image (:func:`alod.engine.iter_predictions`); ``stochastic`` strategies get their
Monte Carlo passes from the engine's MC inference when it exists.

The same pass can also capture a per-image embedding (:class:`EmbeddingHook`, for the batch rules of
:mod:`alod.cycle.batch_rules`) and weight boxes by class (``class_weights``, :mod:`alod.strategies`).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from alod.engine import iter_predictions
from alod.models import MCSampling, load_detector
from alod.strategies import check_params, get_strategy, weights_kwargs


def iter_scored(model, dataset, positions, *, strategy: str, params: dict, batch_size: int, num_workers: int = 0,
                device="cpu", amp: bool = False, class_weights: np.ndarray | None = None,
                embed: bool = False) -> Iterator[tuple[list[int], np.ndarray, list[dict]]]:
    """Yield ``(positions, scores float64[b], detections)`` per batch of up to ``batch_size`` images.

    ``params`` are the strategy's parameters (checked and completed with defaults here).
    ``class_weights float[C + 1]``: passed to a weighted strategy (:mod:`alod.strategies`).
    ``embed``: each detection also holds ``embedding float16[d]`` (:class:`EmbeddingHook`; ``None``
    for an image that failed to decode).
    """
    spec = get_strategy(strategy)
    resolved = {**check_params(strategy, params), **weights_kwargs(spec, class_weights)}
    if embed:
        with EmbeddingHook(model) as hook:
            yield from _with_embeddings(iter_scored(model, dataset, positions, strategy=strategy, params=params,
                                                    batch_size=batch_size, num_workers=num_workers, device=device,
                                                    amp=amp, class_weights=class_weights), hook)
        return
    batch_pos: list[int] = []
    batch: list[dict] = []
    sampling = spec.sampling(resolved)
    mc = None
    if sampling is not None:
        mc = MCSampling(**sampling)
    for pos, det in iter_predictions(model, dataset, positions, batch_size=batch_size, num_workers=num_workers,
                                     device=device, amp=amp, mc=mc):
        batch_pos.append(pos)
        batch.append(det)
        if len(batch) == batch_size:
            yield list(batch_pos), spec.fn(batch, **resolved), list(batch)
            batch_pos.clear()
            batch.clear()
    if batch:
        yield list(batch_pos), spec.fn(batch, **resolved), list(batch)


def score_positions(model, dataset, positions, *, strategy: str, params: dict, batch_size: int,
                    num_workers: int = 0, device="cpu", amp: bool = False, desc: str = "scoring",
                    progress: bool = True) -> np.ndarray:
    """Scores ``float64[len(positions)]`` of ``dataset``'s images at ``positions``, in that order."""
    out = []
    with tqdm(total=len(positions), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for _, scores, _ in iter_scored(model, dataset, positions, strategy=strategy, params=params,
                                        batch_size=batch_size, num_workers=num_workers, device=device, amp=amp):
            out.append(np.asarray(scores, dtype=np.float64))
            bar.update(len(scores))
    return np.concatenate(out) if out else np.zeros(0)


class EmbeddingHook:
    """Captures one embedding per image from the detector's own forward pass (no second pass).

    A context manager: while open, forward hooks on ``model.transform`` (for each image's size in
    the padded batch) and ``model.backbone`` (its feature maps) queue, per image and in batch order,
    the mean over the image's own pixels (padding excluded, so the result does not depend on the
    other images of its batch) of the last FPN level before the extra ``pool`` level:
    ``float16[d]``, ``d`` = the FPN width (``model.fpn_channels``; 256 in torchvision's presets).
    :meth:`pop` takes them in order. Works for ``model(images)`` and :func:`alod.models.predict_mc`.
    """

    def __init__(self, model):
        self.model = model
        self.queue: list[np.ndarray] = []
        self._sizes: list[tuple[int, int]] = []
        self._handles: list = []

    def __enter__(self) -> "EmbeddingHook":
        self._handles = [self.model.transform.register_forward_hook(self._on_transform),
                         self.model.backbone.register_forward_hook(self._on_backbone)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _on_transform(self, module, inputs, output) -> None:
        image_list = output[0]
        self._padded = tuple(int(x) for x in image_list.tensors.shape[-2:])
        self._sizes = [(int(h), int(w)) for h, w in image_list.image_sizes]

    def _on_backbone(self, module, inputs, output) -> None:
        feats = output if not hasattr(output, "keys") else [v for k, v in output.items() if k != "pool"][-1]
        fh, fw = int(feats.shape[-2]), int(feats.shape[-1])
        ph, pw = self._padded
        for b, (h, w) in enumerate(self._sizes):
            crop = feats[b, :, : max(1, math.ceil(h * fh / ph)), : max(1, math.ceil(w * fw / pw))]
            self.queue.append(crop.float().mean(dim=(1, 2)).cpu().numpy().astype(np.float16))

    def pop(self) -> np.ndarray:
        if not self.queue:
            raise RuntimeError("EmbeddingHook: no embedding queued; was the detector's forward run inside the hook?")
        return self.queue.pop(0)


def _with_embeddings(batches, hook: EmbeddingHook):
    """``iter_scored``'s batches with each readable detection's ``embedding`` taken from ``hook``."""
    for pos, scores, dets in batches:
        for d in dets:
            d["embedding"] = None if "unreadable" in d else hook.pop()
        yield pos, scores, dets


def stack_embeddings(embeddings: list) -> np.ndarray:
    """``float16[n, d]`` from per-image ``float16[d]`` or ``None`` (an unreadable image: zeros)."""
    dims = {len(e) for e in embeddings if e is not None}
    if len(dims) > 1:
        raise RuntimeError(f"embeddings of different sizes {sorted(dims)}")
    d = dims.pop() if dims else 0
    out = np.zeros((len(embeddings), d), dtype=np.float16)
    for i, e in enumerate(embeddings):
        if e is not None:
            out[i] = e
    return out


def predicted_boxes(det: dict, threshold: float) -> int:
    """Boxes of ``det`` with ``score >= threshold``, the score rounded to float16 as the score shards
    keep it (so the adaptive and the precomputed selector count alike)."""
    return int((np.asarray(det["scores"], dtype=np.float16) >= threshold).sum())


def box_score_sum(det: dict) -> float:
    """The sum of ``det``'s box scores (float16, as the shards keep them): the raw signal of
    ``schedule.box_estimate: calibrated`` (:func:`alod.cycle.batch_rules.calibrated_counts`)."""
    return float(np.asarray(det["scores"], dtype=np.float16).astype(np.float64).sum())


def score_positions_details(model, dataset, positions, *, strategy: str, params: dict, batch_size: int,
                            num_workers: int = 0, device="cpu", amp: bool = False, class_weights=None,
                            embed: bool = False, box_threshold: float | None = None, score_sums: bool = False,
                            desc: str = "scoring", progress: bool = True) -> dict:
    """:func:`score_positions` with what the selection options need, from the same pass.

    Returns ``{"scores": float64[n], "embeddings": float16[n, d] or None (without ``embed``),
    "predicted": int64[n] or None (without ``box_threshold``)}`` for ``positions`` in order; with
    ``score_sums``, ``"predicted"`` is instead each image's sum of box scores, ``float64[n]``. A
    strategy that needs no inference (``random``) is scored once over all positions, as
    :func:`score_with_checkpoint` does, and the detector runs only for the rest.
    """
    spec = get_strategy(strategy)
    run_as = "box_count" if spec.inference == "none" else strategy  # any single-pass strategy gives the detections
    scores, embs, counts = [], [], []
    with tqdm(total=len(positions), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for _, s, dets in iter_scored(model, dataset, positions, strategy=run_as,
                                      params=params if run_as == strategy else {}, batch_size=batch_size,
                                      num_workers=num_workers, device=device, amp=amp,
                                      class_weights=class_weights if run_as == strategy else None, embed=embed):
            scores.append(np.asarray(s, dtype=np.float64))
            embs += [d.get("embedding") for d in dets]
            if score_sums:
                counts += [box_score_sum(d) for d in dets]
            elif box_threshold is not None:
                counts += [predicted_boxes(d, box_threshold) for d in dets]
            bar.update(len(dets))
    if spec.inference == "none":
        scores = [spec.fn([{}] * len(positions), **check_params(strategy, params))]
    return {"scores": np.concatenate(scores) if scores else np.zeros(0),
            "embeddings": stack_embeddings(embs) if embed else None,
            "predicted": (np.asarray(counts, dtype=np.float64) if score_sums else
                          np.asarray(counts, dtype=np.int64) if box_threshold is not None else None)}
def score_with_checkpoint(ctx, index, positions: list[int], *, ckpt: Path, strategy: str, params: dict,
                          desc: str) -> np.ndarray:
    """Scores ``float64[len(positions)]`` of ``index``'s images ``positions`` under ``strategy``, with
    the detector in ``ckpt`` (:func:`alod.models.load_detector`; not read for a strategy that needs no
    inference). ``ctx`` is the stage context (:class:`alod.stages.setup.StageContext`)."""
    spec = get_strategy(strategy)
    resolved = check_params(strategy, params)
    if spec.inference == "none":
        return spec.fn([{}] * len(positions), **resolved)
    cfg = ctx.cfg
    model = checkpoint_model(ctx, index, ckpt)
    return score_positions(model, ctx.dataset(index), positions, strategy=strategy, params=resolved,
                           batch_size=cfg.score.batch_size, num_workers=cfg.score.num_workers,
                           device=ctx.accelerator.device, amp=cfg.score.amp, desc=desc,
                           progress=ctx.progress and ctx.is_main)


def checkpoint_model(ctx, index, ckpt: Path):
    """The detector of ``ckpt`` (:func:`alod.models.load_detector`) for ``index``'s classes, built
    from the run's ``model:`` settings, on the stage's device."""
    return load_detector(ckpt, num_classes=index.num_classes, **asdict(ctx.cfg.model)).to(ctx.accelerator.device)


def score_details_with_checkpoint(ctx, index, positions: list[int], *, ckpt: Path, strategy: str, params: dict,
                                  class_weights=None, embed: bool = False, box_threshold: float | None = None,
                                  score_sums: bool = False, desc: str) -> dict:
    """:func:`score_with_checkpoint` plus embeddings and predicted box counts from the same pass
    (:func:`score_positions_details`): ``{"scores", "embeddings", "predicted"}``. The detector runs
    even for a strategy that needs no inference: the options need its predictions."""
    resolved = check_params(strategy, params)
    model, cfg = checkpoint_model(ctx, index, ckpt), ctx.cfg
    return score_positions_details(model, ctx.dataset(index), positions, strategy=strategy, params=resolved,
                                   batch_size=cfg.score.batch_size, num_workers=cfg.score.num_workers,
                                   device=ctx.accelerator.device, amp=cfg.score.amp, class_weights=class_weights,
                                   embed=embed, box_threshold=box_threshold, score_sums=score_sums, desc=desc,
                                   progress=ctx.progress and ctx.is_main)
