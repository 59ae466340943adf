"""Scoring strategies: pure functions from detections to one score per image.

``score(dets: list[dict], **params) -> np.ndarray[n_images]`` (float64); higher means "label
first". ``dets[i]`` is image ``i``'s detections as returned by :func:`alod.engine.predict`:
``boxes float32[N, 4]``, ``labels int64[N]`` (1..C), ``scores float32[N]`` and
``probs float32[N, C + 1]`` (the softmax over background + C classes of each box's RoI).

A per-box uncertainty and the image-level reduction are separate (``BOX_UNCERTAINTY`` and
``REDUCTIONS`` below), so ``entropy`` with ``aggregate: max`` is one line of YAML. Selection (top-k,
random, per batch) is the schedule's job, not a strategy's.

Adding a strategy: one function decorated with ``@register_strategy("name")``, one test with an
exact expected ranking, one line of YAML (``score.strategy: name``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from alod.utils import AlodError

Strategy = Callable[..., np.ndarray]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str):
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return deco


# Reductions of per-box values to one number per image. An image without boxes scores 0 under every
# reduction: nothing detected means nothing to be uncertain about (box_count also gives 0).
REDUCTIONS: dict[str, Callable[[np.ndarray], float]] = {
    "sum": lambda v: float(v.sum()) if v.size else 0.0,
    "mean": lambda v: float(v.mean()) if v.size else 0.0,
    "max": lambda v: float(v.max()) if v.size else 0.0,
}


def box_entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row of ``probs [N, K]`` (rows sum to 1): ``float64[N]``.

    ``0 log 0`` is taken as 0. The full distribution is used, background included: a box the model
    half believes is background is uncertain too.
    """
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1) if p.ndim == 2 else np.zeros(0)


def box_least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_k p_k`` per row of ``probs [N, K]``."""
    p = np.asarray(probs, dtype=np.float64)
    return 1.0 - p.max(axis=-1) if len(p) else np.zeros(0)


def box_margin(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)`` per row: small margins between the two best classes score high."""
    p = np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        return np.zeros(0)
    top2 = np.sort(p, axis=-1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


BOX_UNCERTAINTY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "entropy": box_entropy,
    "least_confidence": box_least_confidence,
    "margin": box_margin,
}


def _reduction(aggregate: str) -> Callable[[np.ndarray], float]:
    if aggregate not in REDUCTIONS:
        raise AlodError(f"unknown aggregate {aggregate!r}; choose one of {sorted(REDUCTIONS)}")
    return REDUCTIONS[aggregate]


def _probs(det: dict, i: int) -> np.ndarray:
    if "probs" not in det:
        raise AlodError(
            f"image {i}: detections carry no 'probs'; uncertainty strategies need the class "
            "distributions that alod.models.ProbRoIHeads returns"
        )
    return det["probs"]


def _per_box_strategy(kind: str):
    measure = BOX_UNCERTAINTY[kind]

    def score(dets: list[dict], *, aggregate: str = "sum", min_score: float = 0.0) -> np.ndarray:
        reduce = _reduction(aggregate)
        out = np.zeros(len(dets), dtype=np.float64)
        for i, det in enumerate(dets):
            probs = _probs(det, i)
            keep = np.asarray(det["scores"]) >= min_score
            out[i] = reduce(measure(probs[keep]))
        return out

    score.__name__ = kind
    score.__doc__ = (
        f"Per-box {kind} of the class distribution (boxes with score >= ``min_score``), reduced per "
        "image by ``aggregate`` (sum, mean or max)."
    )
    return score


entropy = register_strategy("entropy")(_per_box_strategy("entropy"))
least_confidence = register_strategy("least_confidence")(_per_box_strategy("least_confidence"))
margin = register_strategy("margin")(_per_box_strategy("margin"))


@register_strategy("box_count")
def box_count(dets: list[dict], *, score_threshold: float = 0.5) -> np.ndarray:
    """Number of predicted boxes with ``score >= score_threshold`` (the original project's measure)."""
    return np.array([float((np.asarray(d["scores"]) >= score_threshold).sum()) for d in dets], dtype=np.float64)


@register_strategy("random")
def random_scores(dets: list[dict], *, seed: int = 0) -> np.ndarray:
    """Uniform random scores: the baseline every strategy is compared against."""
    return np.random.default_rng(seed).random(len(dets))


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise AlodError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def score_images(dets: list[dict], *, strategy: str, params: dict | None = None) -> np.ndarray:
    """Run strategy ``strategy`` with ``params``; clear error on unknown parameters."""
    fn = get_strategy(strategy)
    try:
        return fn(dets, **(params or {}))
    except TypeError as e:
        raise AlodError(f"strategy {strategy!r}: bad parameters {params}: {e}") from e
