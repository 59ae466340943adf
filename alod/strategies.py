"""Scoring strategies: pure functions from detections to one score per image.

``score(dets: list[dict], **params) -> np.ndarray[n_images]`` (float64); higher means "label
first". ``dets[i]`` is image ``i``'s detections as returned by :func:`alod.engine.predict`:
``boxes float32[N, 4]``, ``labels int64[N]`` (1..C), ``scores float32[N]`` and
``probs float32[N, C + 1]`` (the softmax over background + C classes of each box's RoI).

A per-box uncertainty and the image-level reduction are separate (``BOX_UNCERTAINTY`` and
``REDUCTIONS`` below), so ``entropy`` with ``aggregate: max`` is one line of YAML. Selection (top-k,
random, per batch) is the schedule's job, not a strategy's.

Every strategy declares (:class:`StrategySpec`):

* its parameters and their defaults: the keyword-only arguments of its function. The config is
  checked against them when it loads (:func:`check_params`), so a typo is one line naming the key
  and the valid ones, and every strategy runs with its own defaults when ``score.strategy`` is
  switched from the command line.
* the inference it needs (:data:`INFERENCE`): ``none`` (scores without a model, e.g. ``random``:
  no checkpoint is read), ``single`` (one deterministic pass of the detector per image), or
  ``stochastic`` (several passes with dropout; reserved for BALD-style strategies, not built yet).

Adding a strategy: one function decorated with ``@register_strategy("name", inference=...)``, one
test with an exact expected ranking, one line of YAML (``score.strategy: name``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from alod.utils import AlodError

Strategy = Callable[..., np.ndarray]

#: What a strategy needs from the detector, cheapest first.
INFERENCE = ("none", "single", "stochastic")


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its function, its parameters (name -> default) and its inference."""

    name: str
    fn: Strategy
    params: Mapping[str, Any]
    inference: str
    choices: Mapping[str, tuple] = field(default_factory=dict)  # allowed values of enumerated params

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""


STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(name: str, *, inference: str = "single", choices: Mapping[str, tuple] | None = None):
    """Register ``fn(dets, *, p1=default1, ...)`` under ``name``.

    Parameters are read from the function's keyword-only arguments, each of which must have a
    default (so every strategy runs without any ``params``).
    """
    if inference not in INFERENCE:
        raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}")

    def deco(fn: Strategy) -> Strategy:
        params = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                if p.default is p.empty:
                    raise TypeError(f"strategy {name!r}: parameter {p.name!r} needs a default")
                params[p.name] = p.default
        STRATEGIES[name] = StrategySpec(name=name, fn=fn, params=params, inference=inference,
                                        choices=dict(choices or {}))
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


_AGGREGATES = {"aggregate": tuple(REDUCTIONS)}
entropy = register_strategy("entropy", choices=_AGGREGATES)(_per_box_strategy("entropy"))
least_confidence = register_strategy("least_confidence", choices=_AGGREGATES)(_per_box_strategy("least_confidence"))
margin = register_strategy("margin", choices=_AGGREGATES)(_per_box_strategy("margin"))


@register_strategy("box_count")
def box_count(dets: list[dict], *, score_threshold: float = 0.5) -> np.ndarray:
    """Number of predicted boxes with ``score >= score_threshold`` (the original project's measure)."""
    return np.array([float((np.asarray(d["scores"]) >= score_threshold).sum()) for d in dets], dtype=np.float64)


@register_strategy("random", inference="none")
def random_scores(dets: list[dict], *, seed: int = 0) -> np.ndarray:
    """Uniform random scores: the baseline every strategy is compared against."""
    return np.random.default_rng(seed).random(len(dets))


def get_strategy(name: str) -> StrategySpec:
    if name not in STRATEGIES:
        raise AlodError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


def check_params(name: str, params: Mapping[str, Any] | None, *, where: str = "score.params") -> dict:
    """``params`` completed with the strategy's defaults; :class:`AlodError` naming a bad key or value.

    A value must have its default's type (an integer is accepted where a float is expected), and an
    enumerated parameter one of its choices.
    """
    spec = get_strategy(name)
    params = dict(params or {})
    for key, value in params.items():
        at = f"{where}.{key}"
        if key not in spec.params:
            valid = ", ".join(spec.params) or "none"
            raise AlodError(f"{at}: strategy {name!r} has no parameter {key!r}; its parameters: {valid}")
        default = spec.params[key]
        if default is None:
            ok = True
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):  # an integer is a fine float (min_score: 0)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default)) and not isinstance(value, bool)
        if not ok:
            raise AlodError(f"{at}: expected {type(default).__name__} (like the default {default!r}), got {value!r}")
        if key in spec.choices and value not in spec.choices[key]:
            raise AlodError(f"{at}: {value!r} is not one of {', '.join(map(str, spec.choices[key]))}")
    return {**spec.params, **params}


def score_images(dets: list[dict], *, strategy: str, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Scores of ``dets`` under ``strategy`` with ``params`` (checked, completed with defaults)."""
    spec = get_strategy(strategy)
    return spec.fn(dets, **check_params(strategy, params))
