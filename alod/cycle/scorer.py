"""Scoring images with a detector and a strategy: the one loop behind the scoring stage (sharded and
resumable, :mod:`alod.stages.scoring`) and the adaptive selector (:mod:`alod.cycle.selection`).

A strategy's ``inference`` (:mod:`alod.strategies`) decides how the detector runs: ``single`` is
one pass per image (:func:`alod.engine.iter_predictions`); ``stochastic`` strategies get their
Monte Carlo passes from the engine's MC inference when it exists.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from alod.engine import iter_predictions
from alod.models import MCSampling, load_detector
from alod.strategies import check_params, get_strategy


def iter_scored(model, dataset, positions, *, strategy: str, params: dict, batch_size: int, num_workers: int = 0,
                device="cpu", amp: bool = False) -> Iterator[tuple[list[int], np.ndarray, list[dict]]]:
    """Yield ``(positions, scores float64[b], detections)`` per batch of up to ``batch_size`` images.

    ``params`` are the strategy's parameters (checked and completed with defaults here).
    """
    spec = get_strategy(strategy)
    resolved = check_params(strategy, params)
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
    model = load_detector(ckpt, num_classes=index.num_classes, **asdict(cfg.model))
    model.to(ctx.accelerator.device)
    return score_positions(model, ctx.dataset(index), positions, strategy=strategy, params=resolved,
                           batch_size=cfg.score.batch_size, num_workers=cfg.score.num_workers,
                           device=ctx.accelerator.device, amp=cfg.score.amp, desc=desc,
                           progress=ctx.progress and ctx.is_main)
