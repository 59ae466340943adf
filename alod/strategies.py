"""Scoring strategies: pure functions from detections to one score per image.

``score(dets: list[dict], **params) -> np.ndarray[n_images]`` (float64); higher means "label
first". ``dets[i]`` is image ``i``'s detections as returned by :func:`alod.engine.predict`:
``boxes float32[N, 4]``, ``labels int64[N]`` (1..C), ``scores float32[N]`` and
``probs float32[N, C + 1]`` (the softmax over background + C classes of each box's RoI). Strategies
whose inference is ``stochastic`` get in addition ``mc_probs float32[N, T, C + 1]``: each of ``T``
Monte Carlo dropout passes' distribution for the box (:func:`alod.models.predict_mc`; then
``probs`` is their mean).

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
  ``stochastic`` (Monte Carlo dropout: the backbone and RPN once, the box head ``passes`` times with
  dropout). A stochastic strategy declares the parameters ``passes`` (int), ``dropout`` (float)
  and ``seed`` (int); scoring reads them through :meth:`StrategySpec.sampling`.

Class weights (``score.class_weights: difficulty``): strategies that declare a keyword-only
``class_weights=None`` accept ``class_weights float[C + 1]`` (index 0, background, unused; see
:func:`difficulty_weights`). Each box's uncertainty is multiplied by the weight of its most likely
foreground class (``1 + argmax probs[1:]``) before the image reduction; ``box_count`` sums the weights
of its confident boxes. It is an input computed from the current model's validation AP, not a YAML
parameter: it is not among :attr:`StrategySpec.params` (``score.params`` cannot set it), and
:attr:`StrategySpec.weighted` says whether a strategy takes it. ``None`` (the default) computes
exactly what the strategy computed before the option existed.

Adding a strategy: one function decorated with ``@register_strategy("name", inference=...)``, one
test with an exact expected ranking, one line of YAML (``score.strategy: name``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from alod.utils import AlodError, Registry

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
    weighted: bool = False  # takes class_weights (an input, not a parameter: see the module docstring)

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""

    def sampling(self, params: Mapping[str, Any]) -> dict | None:
        """``{"passes", "dropout", "seed"}`` for a stochastic strategy (from ``params`` completed with
        the defaults), the keyword arguments of :class:`alod.models.MCSampling`; ``None`` otherwise."""
        if self.inference != "stochastic":
            return None
        full = {**self.params, **params}
        return {"passes": int(full["passes"]), "dropout": float(full["dropout"]), "seed": int(full["seed"])}


STRATEGIES: Registry[StrategySpec] = Registry("strategy")
#: The keyword a strategy declares to accept per-class weights (``float[C + 1]`` or ``None``).
CLASS_WEIGHTS = "class_weights"

# What a stochastic strategy's parameters must include, and the values each may take.
_SAMPLING_PARAMS = {
    "passes": ("an integer >= 1", lambda v: v >= 1),
    "dropout": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "seed": ("an integer >= 0", lambda v: v >= 0),
}


def register_strategy(name: str, *, inference: str = "single", choices: Mapping[str, tuple] | None = None):
    """Register ``fn(dets, *, p1=default1, ...)`` under ``name``.

    Parameters are read from the function's keyword-only arguments, each of which must have a
    default (so every strategy runs without any ``params``); ``class_weights`` is not a parameter
    but marks the strategy as :attr:`StrategySpec.weighted`.
    """
    if inference not in INFERENCE:
        raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}")

    def deco(fn: Strategy) -> Strategy:
        params = {}
        sig = inspect.signature(fn).parameters
        for p in sig.values():
            if p.kind is p.KEYWORD_ONLY and p.name != CLASS_WEIGHTS:
                if p.default is p.empty:
                    raise TypeError(f"strategy {name!r}: parameter {p.name!r} needs a default")
                params[p.name] = p.default
        missing = [k for k in _SAMPLING_PARAMS if k not in params] if inference == "stochastic" else []
        if missing:
            raise TypeError(f"strategy {name!r}: a stochastic strategy declares {', '.join(_SAMPLING_PARAMS)}; "
                            f"missing {', '.join(missing)}")
        STRATEGIES.register(name, StrategySpec(name=name, fn=fn, params=params, inference=inference,
                                               choices=dict(choices or {}), weighted=CLASS_WEIGHTS in sig))
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

    def score(dets: list[dict], *, aggregate: str = "sum", min_score: float = 0.0,
              class_weights: np.ndarray | None = None) -> np.ndarray:
        reduce = _reduction(aggregate)
        out = np.zeros(len(dets), dtype=np.float64)
        for i, det in enumerate(dets):
            probs = _probs(det, i)
            keep = np.asarray(det["scores"]) >= min_score
            values = measure(probs[keep])
            if class_weights is not None:
                values = values * box_class_weights(probs[keep], class_weights)
            out[i] = reduce(values)
        return out

    score.__name__ = kind
    score.__doc__ = (
        f"Per-box {kind} of the class distribution (boxes with score >= ``min_score``), reduced per "
        "image by ``aggregate`` (sum, mean or max); with ``class_weights``, each box's value is weighted "
        "by its most likely class's weight first."
    )
    return score


_AGGREGATES = {"aggregate": tuple(REDUCTIONS)}
entropy = register_strategy("entropy", choices=_AGGREGATES)(_per_box_strategy("entropy"))
least_confidence = register_strategy("least_confidence", choices=_AGGREGATES)(_per_box_strategy("least_confidence"))
margin = register_strategy("margin", choices=_AGGREGATES)(_per_box_strategy("margin"))


@register_strategy("box_count")
def box_count(dets: list[dict], *, score_threshold: float = 0.5, class_weights: np.ndarray | None = None) -> np.ndarray:
    """Number of predicted boxes with ``score >= score_threshold`` (the original project's measure);
    with ``class_weights``, the sum of those boxes' class weights (by ``probs``, else by ``labels``)."""
    if class_weights is not None:
        return np.array([_weighted_count(d, score_threshold, class_weights) for d in dets], dtype=np.float64)
    return np.array([float((np.asarray(d["scores"]) >= score_threshold).sum()) for d in dets], dtype=np.float64)


def _weighted_count(det: dict, threshold: float, class_weights: np.ndarray) -> float:
    keep = np.asarray(det["scores"]) >= threshold
    if "probs" in det:
        return float(box_class_weights(np.asarray(det["probs"])[keep], class_weights).sum())
    return float(np.asarray(class_weights, dtype=np.float64)[np.asarray(det["labels"])[keep]].sum())


@register_strategy("random", inference="none")
def random_scores(dets: list[dict], *, seed: int = 0) -> np.ndarray:
    """Uniform random scores: the baseline every strategy is compared against."""
    return np.random.default_rng(seed).random(len(dets))


def box_mutual_information(mc_probs: np.ndarray) -> np.ndarray:
    """BALD per box from ``mc_probs [N, T, K]`` (T sampled distributions per box): ``float64[N]``.

    ``H(mean_t p_t) - mean_t H(p_t)`` in nats with the full distribution (background included):
    the entropy of the mean prediction less the mean entropy of the passes, i.e. the mutual
    information between the label and the dropout mask. It is 0 when the passes agree, however
    uncertain each is, and at most ``ln T`` and ``ln K``. Rounding can make it -1e-8; it is clipped to 0.
    """
    p = np.asarray(mc_probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] == 0:
        return np.zeros(0)
    n, t, k = p.shape
    mean_entropy = box_entropy(p.reshape(n * t, k)).reshape(n, t).mean(axis=1)
    return np.maximum(box_entropy(p.mean(axis=1)) - mean_entropy, 0.0)


@register_strategy("mc_dropout", inference="stochastic", choices=_AGGREGATES)
def mc_dropout(dets: list[dict], *, passes: int = 10, dropout: float = 0.5, seed: int = 0, aggregate: str = "sum",
               min_score: float = 0.0, class_weights: np.ndarray | None = None) -> np.ndarray:
    """BALD (mutual information) from Monte Carlo dropout, per box, reduced per image.

    For a box with ``T = passes`` sampled class distributions ``p_1..p_T`` over background + C
    classes (``mc_probs [N, T, C + 1]``), ``BALD = H(mean_t p_t) - mean_t H(p_t)`` with
    ``H(q) = -sum_k q_k ln q_k`` (nats, ``0 ln 0 = 0``). Boxes with ``score >= min_score`` (score
    of the mean distribution) are reduced per image by ``aggregate`` (sum, mean or max); an image
    without such boxes scores 0. A box whose passes agree scores 0 even if each pass is uniform:
    BALD ranks what the model's *parameters* disagree about, not plain ambiguity (that is
    ``entropy``).

    Inference (``stochastic``, :func:`alod.models.predict_mc`): the backbone, the RPN and RoI
    pooling run once per image, then the box head ``passes`` times over the same proposals with
    dropout ``dropout`` on the inputs of ``fc7`` and of the predictor (``fc6`` runs once), masks
    seeded by ``(seed, pool position)``. The detections are those of the mean class probabilities
    and mean box regression. Cost (benchmarks/bench_mc_dropout.py: demo preset with a
    64-channel FPN, 8 images of 320x192, shared 2-core CPU, one thread): T=10 box-head passes take
    1.23x the time of one ordinary pass (1.63 s vs 1.32 s: the RoI heads go from 0.30 s to 0.57 s,
    the backbone and RPN, 1.03 s, run once), against 10.8x for 10 full forward passes.

    The presets' box heads are trained without dropout (torchvision's ``TwoMLPHead`` has none),
    so the passes sample a perturbed head rather than a dropout network's approximate posterior;
    ``dropout`` sets the strength of the perturbation. ``passes``, ``dropout`` and ``seed`` drive
    the inference; here ``passes`` is checked against the ``T`` of ``mc_probs``. ``class_weights``
    weights each box's BALD by its most likely class (of the mean ``probs``), module docstring.
    """
    reduce = _reduction(aggregate)
    out = np.zeros(len(dets), dtype=np.float64)
    for i, det in enumerate(dets):
        scores = np.asarray(det["scores"])
        if len(scores) == 0:
            continue
        if "mc_probs" not in det:
            raise AlodError(
                f"image {i}: detections carry no 'mc_probs'; mc_dropout needs the T passes of Monte Carlo "
                "dropout inference (alod.models.predict_mc, or scoring a strategy with inference 'stochastic')"
            )
        mc = np.asarray(det["mc_probs"])
        if mc.ndim != 3 or mc.shape[0] != len(scores) or mc.shape[1] != passes:
            raise AlodError(f"image {i}: mc_probs has shape {mc.shape}, expected [{len(scores)}, {passes}, C + 1] "
                            f"({len(scores)} boxes, passes={passes})")
        keep = scores >= min_score
        values = box_mutual_information(mc[keep])
        if class_weights is not None:
            values = values * box_class_weights(mc[keep].mean(axis=1), class_weights)
        out[i] = reduce(values)
    return out


def get_strategy(name: str) -> StrategySpec:
    """The registered strategy ``name``; :class:`AlodError` listing the strategies."""
    return STRATEGIES.get(name)


def check_strategy_section(score) -> None:
    """Check the ``score:`` section (a :class:`alod.config.ScoreConfig`) against the registry: the
    strategy's name, every strategy's parameters, and that ``class_weights`` has a strategy that takes them.

    Raises:
        AlodError: ``config: score.strategy: unknown strategy ...``, a ``score.params`` key that is not
            a strategy, or (from :func:`check_params`) a parameter the strategy lacks or of the wrong type.
    """
    if score.strategy not in STRATEGIES:
        raise AlodError(f"config: score.strategy: unknown strategy {score.strategy!r}; "
                        f"choose one of {', '.join(sorted(STRATEGIES))}")
    for name, table in score.params.items():
        if name not in STRATEGIES:
            hint = (" (score.params is keyed by strategy: write params: {%s: {%s: ...}})" % (score.strategy, name)
                    if not isinstance(table, dict) else "")
            raise AlodError(f"config: score.params.{name}: not a strategy; params are given per strategy, "
                            f"one of {', '.join(sorted(STRATEGIES))}{hint}")
        if not (isinstance(table, dict) or table is None):
            raise AlodError(f"config: score.params.{name}: expected a mapping of parameter: value, got {table!r}")
        check_params(name, table, where=f"score.params.{name}")
    if score.class_weights != "none" and not STRATEGIES[score.strategy].weighted:
        weighted = sorted(n for n, spec in STRATEGIES.items() if spec.weighted)
        raise AlodError(f"config: score.class_weights: {score.class_weights} weights per-box uncertainty, and strategy "
                        f"{score.strategy!r} has none; use one of {', '.join(weighted)} or class_weights: none")


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
        if spec.inference == "stochastic" and key in _SAMPLING_PARAMS:
            allowed, ok = _SAMPLING_PARAMS[key]
            if not ok(value):
                raise AlodError(f"{at}: must be {allowed}, got {value!r}")
    return {**spec.params, **params}


def score_images(dets: list[dict], *, strategy: str, params: Mapping[str, Any] | None = None,
                 class_weights: np.ndarray | None = None) -> np.ndarray:
    """Scores of ``dets`` under ``strategy`` with ``params`` (checked, completed with defaults) and,
    for a weighted strategy, ``class_weights float[C + 1]``."""
    spec = get_strategy(strategy)
    return spec.fn(dets, **check_params(strategy, params), **weights_kwargs(spec, class_weights))


def weights_kwargs(spec: StrategySpec, class_weights) -> dict:
    """``{"class_weights": w}`` to pass to ``spec.fn``, ``{}`` without weights; refuses a strategy
    that takes none (weights would silently change nothing)."""
    if class_weights is None:
        return {}
    if not spec.weighted:
        raise AlodError(f"score.class_weights: strategy {spec.name!r} takes no class weights; use one of "
                        f"{', '.join(sorted(n for n, s in STRATEGIES.items() if s.weighted))} or class_weights: none")
    return {CLASS_WEIGHTS: np.asarray(class_weights, dtype=np.float64)}


def box_class_weights(probs: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """Weight ``float64[N]`` of each box's most likely foreground class: ``class_weights[1 + argmax
    probs[:, 1:]]`` for ``probs [N, C + 1]`` (background first) and ``class_weights float[C + 1]``.

    The foreground argmax, not the full one: a box is a detection of an object, and a background
    probability says how sure the model is, not which class to weight. Ties go to the lower class.
    """
    p = np.asarray(probs, dtype=np.float64)
    w = np.asarray(class_weights, dtype=np.float64)
    if len(p) == 0:
        return np.zeros(0)
    if p.ndim != 2 or p.shape[1] != len(w):
        raise AlodError(f"class_weights has {len(w)} entries but the boxes' distributions have shape {p.shape}; "
                        "expected C + 1 (background first)")
    return w[1 + np.argmax(p[:, 1:], axis=1)]


def difficulty_weights(metrics: Mapping[str, Any], classes, *, floor: float = 0.05) -> np.ndarray:
    """Per-class weights ``float64[C + 1]`` from validation metrics: ``w_c = 1 - AP50_c``.

    ``metrics`` holds ``AP50/<name>`` per class (an :func:`alod.evaluation` ``metrics.json``);
    ``classes`` the names in label order (``classes[c - 1]`` is label ``c``). A class with no AP
    (missing, ``None`` or NaN: no validation boxes) gets 1, as unknown difficulty should not hide it;
    weights are clipped to ``[floor, 1]`` so a solved class still counts a little. Index 0
    (background) is 1 and unused.
    """
    out = np.ones(len(classes) + 1, dtype=np.float64)
    for c, name in enumerate(classes, start=1):
        ap = metrics.get(f"AP50/{name}")
        if ap is not None and np.isfinite(float(ap)):
            out[c] = 1.0 - float(ap)
    return np.clip(out, floor, 1.0)
