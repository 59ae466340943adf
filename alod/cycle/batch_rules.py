"""Batch rules and budgets: which of a cycle's ranked candidates go to the oracle together.

A strategy scores images one at a time (:mod:`alod.strategies`); taking the top ``k`` of its ranking
can take ``k`` near-duplicates (the same crowded street at four timestamps). A batch rule
(``score.batch``) takes the top ``score.batch_pool x k`` candidates by score and picks ``k`` of them
that also differ from each other, in the space of a per-image embedding (the scorer's mean-pooled
last FPN level, ``float16[d]``, captured in the scoring pass: :class:`alod.cycle.scorer.EmbeddingHook`).

Rules are pure functions over arrays, registered by name (:data:`BATCH_RULES`)::

    rule(emb float[n, d], scores float[n], k, *, rng) -> int64[k]

returning distinct positions into the ``n`` candidates, in the order they were picked. Callers pass
the candidates in rank order (score descending, ties by image name), so "the lower position" means
"the better rank", and every tie below is broken that way.

* ``topk``: the ``k`` highest scores (the default; no embedding is read).
* ``kmeanspp``: k-means++ seeding weighted by score. The first pick is drawn with probability
  proportional to ``w_i = max(score_i, 0)``, every next one proportional to ``w_i * D_i^2``, where
  ``D_i`` is the Euclidean distance to the nearest image picked so far (so an image already picked,
  ``D = 0``, is never drawn again). When every ``w_i * D_i^2`` of the images left is 0 (all
  weights zero, or only duplicates left) the draw falls back to ``w_i``, then to uniform, over the
  images left. ``rng`` is ``default_rng((schedule.seed, 4, cycle))`` (:data:`alod.schedule.STREAM_BATCH_RULE`).
* ``coreset``: greedy k-center (Sener & Savarese 2018) from the highest score: the first pick is the
  best-ranked image, every next one the image farthest from its nearest pick. Deterministic.

A budget in boxes (``schedule.budget: boxes``, :func:`take_to_box_budget`) takes images in the
chosen order until the model's predicted box count reaches ``schedule.box_budget``. How an image's
boxes are counted before it is labeled is ``schedule.box_estimate``: ``count`` (its boxes with
``score >= box_threshold``, :func:`predicted_counts`) or ``calibrated`` (:func:`calibrated_counts`:
the sum of its boxes' scores, rescaled so that the candidates' mean equals the labeled pool's true
boxes per image). Why calibrated: a weak early detector predicts few boxes at 0.5 (none at all on the
built-in scenes after cycle 1), so ``count`` overfills the budget; the labeled pool, already paid
for, says how many boxes an image holds on average, and the scores only have to say which images
hold more than others.
:func:`choose` combines a rule and a budget; both selectors (the adaptive one and the precomputed
schedule's builder) call it, so they pick alike. :class:`SelectOptions` holds the settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from alod.utils import AlodError, Registry

BatchRule = Callable[..., np.ndarray]


@dataclass(frozen=True)
class BatchRuleSpec:
    """A registered batch rule: its function and whether it reads the embeddings."""

    name: str
    fn: BatchRule
    embeddings: bool


BATCH_RULES: Registry[BatchRuleSpec] = Registry("batch rule")


def register_batch_rule(name: str, *, embeddings: bool = True):
    """Register ``fn(emb, scores, k, *, rng) -> int64[k]`` under ``name`` (``score.batch: name``)."""

    def deco(fn: BatchRule) -> BatchRule:
        BATCH_RULES.register(name, BatchRuleSpec(name=name, fn=fn, embeddings=embeddings))
        return fn

    return deco


def _inputs(emb, scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(emb, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(s):
        raise AlodError(f"batch rule: embeddings have shape {x.shape}, expected [{len(s)}, d] (one row per score)")
    if not 0 <= k <= len(s):
        raise AlodError(f"batch rule: cannot pick {k} of {len(s)} candidates")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(s))):
        raise AlodError("batch rule: non-finite embeddings or scores; the scorer may be diverged")
    return x, s


def _sq_dist(x: np.ndarray, i: int) -> np.ndarray:
    """Squared Euclidean distance ``float64[n]`` of every row of ``x`` to row ``i``."""
    d = x - x[i]
    return np.einsum("ij,ij->i", d, d)


def _draw(rng: np.random.Generator, p: np.ndarray) -> int:
    """One position drawn with probability proportional to ``p >= 0`` (some entry > 0); one
    ``rng.random()`` per draw, and an entry with ``p == 0`` is never drawn."""
    c = np.cumsum(p)
    i = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
    return min(i, int(np.flatnonzero(p > 0)[-1]))  # u * total can round up to total


@register_batch_rule("topk", embeddings=False)
def select_topk(emb, scores, k: int, *, rng=None) -> np.ndarray:
    """The ``k`` highest ``scores float[n]`` (ties: the lower position), best first: ``int64[k]``."""
    s = np.asarray(scores, dtype=np.float64)
    return np.argsort(-s, kind="stable")[:k].astype(np.int64)


@register_batch_rule("kmeanspp")
def select_kmeanspp(emb, scores, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding over ``emb float[n, d]`` weighted by ``scores float[n]``: ``int64[k]`` distinct
    positions in pick order (module docstring). ``rng`` makes one draw per pick."""
    x, s = _inputs(emb, scores, k)
    w = np.maximum(s, 0.0)
    picked: list[int] = []
    left = np.ones(len(s), dtype=bool)
    d2 = np.ones(len(s))  # no pick yet: the first draw is by weight alone
    for _ in range(k):
        for p in (w * d2 * left, w * left, left.astype(np.float64)):
            if p.sum() > 0:
                break
        i = _draw(rng, p)
        picked.append(i)
        left[i] = False
        d2 = _sq_dist(x, i) if len(picked) == 1 else np.minimum(d2, _sq_dist(x, i))
    return np.asarray(picked, dtype=np.int64)


@register_batch_rule("coreset")
def select_coreset(emb, scores, k: int, *, rng=None) -> np.ndarray:
    """Greedy k-center over ``emb float[n, d]`` from the highest of ``scores float[n]``: ``int64[k]``
    distinct positions in pick order. Ties (equal scores, equal distances) go to the lower position."""
    x, s = _inputs(emb, scores, k)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    picked = [int(np.argmax(s))]
    d2 = _sq_dist(x, picked[0])
    for _ in range(k - 1):
        far = np.where(np.isin(np.arange(len(s)), picked), -np.inf, d2)
        picked.append(int(np.argmax(far)))
        d2 = np.minimum(d2, _sq_dist(x, picked[-1]))
    return np.asarray(picked, dtype=np.int64)


def get_batch_rule(name: str) -> BatchRuleSpec:
    if name not in BATCH_RULES:
        raise AlodError(f"unknown batch rule {name!r}; choose one of {', '.join(sorted(BATCH_RULES))}")
    return BATCH_RULES[name]


def check_selection_options(score, schedule, selector: str = "adaptive") -> None:
    """Check ``score.batch`` against :data:`BATCH_RULES`, that ``schedule.budget: boxes`` has a
    ``schedule.box_budget``, and that ``schedule.box_estimate: calibrated`` runs under the adaptive
    ``selector`` (``score`` / ``schedule``: the config sections); :class:`AlodError`."""
    if score.batch not in BATCH_RULES:
        raise AlodError(f"config: score.batch: unknown batch rule {score.batch!r}; "
                        f"choose one of {', '.join(sorted(BATCH_RULES))}")
    if schedule.budget == "boxes" and schedule.box_budget is None:
        raise AlodError("config: schedule.budget: boxes needs schedule.box_budget (predicted boxes per cycle)")
    if schedule.budget == "boxes" and schedule.box_estimate == "calibrated" and selector != "adaptive":
        # The calibration reads the labeled pool's true boxes, which only the adaptive selector has
        # when it selects; a precomputed schedule is ranked before any cycle is labeled.
        raise AlodError(f"config: schedule.box_estimate: calibrated needs cycles.selector: adaptive, not "
                        f"{selector!r} (it calibrates on the labeled pool); use box_estimate: count")


def take_to_box_budget(order, predicted, budget: int) -> np.ndarray:
    """The shortest prefix of ``order int[m]`` whose ``predicted int[n]`` box counts sum to at least
    ``budget`` (all of ``order`` if they never do), and at least one image: ``int64[j]``. Counts may
    be integers (``box_estimate: count``) or floats (``calibrated``)."""
    order = np.asarray(order, dtype=np.int64)
    if len(order) == 0:
        return order
    predicted = np.asarray(predicted)
    predicted = predicted.astype(np.float64 if predicted.dtype.kind == "f" else np.int64)
    reached = np.cumsum(predicted[order]) >= budget
    stop = int(np.argmax(reached)) + 1 if reached.any() else len(order)
    return order[:stop]


@dataclass(frozen=True)
class SelectOptions:
    """The selection options beyond the strategy, all off by default (the original top ``k`` by images).

    From the config (:meth:`from_config`): ``score.batch`` (a name in :data:`BATCH_RULES`),
    ``score.batch_pool`` (candidates per pick that a rule sees), ``score.class_weights`` (``none`` or
    ``difficulty``, :func:`alod.strategies.difficulty_weights`), ``schedule.budget`` (``images`` or
    ``boxes``), ``schedule.box_budget`` (predicted boxes per cycle) and ``schedule.box_threshold``
    (the score at which a predicted box counts), ``schedule.box_estimate`` (``count`` or
    ``calibrated``).
    """

    batch: str = "topk"
    batch_pool: int = 3
    class_weights: str = "none"
    budget: str = "images"
    box_budget: int | None = None
    box_threshold: float = 0.5
    box_estimate: str = "count"

    @classmethod
    def from_config(cls, cfg) -> "SelectOptions":
        return cls(batch=cfg.score.batch, batch_pool=cfg.score.batch_pool, class_weights=cfg.score.class_weights,
                   budget=cfg.schedule.budget, box_budget=cfg.schedule.box_budget,
                   box_threshold=cfg.schedule.box_threshold, box_estimate=cfg.schedule.box_estimate)

    @property
    def active(self) -> bool:
        """Whether any option changes what is selected (else the original code path runs, unchanged)."""
        return bool(self.identity())

    @property
    def needs_embeddings(self) -> bool:
        return get_batch_rule(self.batch).embeddings

    @property
    def needs_predicted(self) -> bool:
        return self.budget == "boxes"

    def identity(self) -> dict:
        """The options in effect, as recorded in a selector's identity and a schedule (``{}`` by default,
        so states and schedules written before the options existed keep their bytes and resume)."""
        out: dict = {}
        if self.batch != "topk":
            out.update(batch=self.batch, batch_pool=int(self.batch_pool))
        if self.class_weights != "none":
            out["class_weights"] = self.class_weights
        if self.budget != "images":
            out.update(budget=self.budget, box_budget=int(self.box_budget), box_threshold=float(self.box_threshold))
            if self.box_estimate != "count":  # only when set, so earlier states and schedules keep their bytes
                out["box_estimate"] = self.box_estimate
        return out

    def rule(self) -> str:
        """The cycle's rule name: ``top``, ``kmeanspp`` or ``coreset``, plus `` to boxes`` under a box budget."""
        name = "top" if self.batch == "topk" else self.batch
        return name + (" to boxes" if self.budget == "boxes" else "")


def choose(options: SelectOptions, *, names, scores, k: int, emb=None, predicted=None,
           rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
    """Positions ``int64[j]`` of the chosen candidates, in the order chosen, and what to record.

    Args:
        names: ``str[n]`` candidate names (ties in score are broken by name).
        scores: ``float[n]`` strategy scores (higher = label first).
        k: images per cycle (``schedule.query_size``); under a box budget only the pool size.
        emb: ``float[n, d]`` embeddings (read by rules that need them).
        predicted: ``int[n]`` or ``float[n]`` predicted boxes per candidate (needed under a box budget).
        rng: the rule's generator (``kmeanspp``).

    The candidates are ranked; a rule that reads embeddings sees the top
    ``min(n, batch_pool x k)``. Under ``images``, its ``k`` picks are the cycle. Under ``boxes``,
    the rule orders its whole pool, the candidates past the pool follow in rank order, and the
    cycle is the shortest prefix reaching ``box_budget`` predicted boxes (at least one image).
    ``info`` holds ``predicted_boxes`` (the chosen images' sum) when ``predicted`` is given.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((np.asarray(names, dtype=str), -scores)).astype(np.int64)
    spec = get_batch_rule(options.batch)
    boxes = options.budget == "boxes"
    if boxes and predicted is None:
        raise AlodError("schedule.budget: boxes needs the predicted box count of every candidate")
    m = min(len(order), int(options.batch_pool) * int(k)) if spec.embeddings else len(order)
    pool = order[:m]
    if spec.embeddings and emb is None:
        raise AlodError(f"score.batch: {options.batch} needs the scorer's image embeddings")
    sub = np.asarray(emb)[pool] if spec.embeddings else None
    picked = pool[spec.fn(sub, scores[pool], m if boxes else min(int(k), m), rng=rng)]
    if boxes:
        chosen = take_to_box_budget(np.concatenate([picked, order[m:]]), predicted, options.box_budget)
    else:
        chosen = picked[: int(k)]
    if predicted is None:
        return chosen, {}
    predicted = np.asarray(predicted)
    if predicted.dtype.kind == "f":
        return chosen, {"predicted_boxes": round(float(predicted[chosen].sum()), 2)}
    return chosen, {"predicted_boxes": int(predicted.astype(np.int64)[chosen].sum())}


def calibrated_counts(score_sums, labeled_mean: float) -> np.ndarray:
    """``schedule.box_estimate: calibrated``: each candidate's expected boxes ``float64[n]``.

    ``score_sums float[n]`` is the sum of each candidate's predicted box scores (an expected count
    if the scores were calibrated probabilities; a detector's are not, hence the rescaling), and
    ``labeled_mean`` the labeled pool's true boxes per image. The estimate is
    ``labeled_mean * score_sums / mean(score_sums)``, so the candidates' mean equals
    ``labeled_mean`` and the scores only rank images against each other; every candidate gets
    ``labeled_mean`` when no candidate has a predicted box. Assumes the unlabeled images hold as many
    boxes on average as the labeled ones (true of cycle 1's random draw; the run records what each
    cycle actually labeled, ``labeled_boxes``, beside ``predicted_boxes``).
    """
    sums = np.asarray(score_sums, dtype=np.float64)
    if labeled_mean < 0 or not np.isfinite(labeled_mean):
        raise AlodError(f"calibrated box estimate: the labeled pool's boxes per image must be >= 0, not {labeled_mean}")
    mean = float(sums.mean()) if len(sums) else 0.0
    if mean <= 0:
        return np.full(len(sums), float(labeled_mean))
    return float(labeled_mean) * sums / mean


def predicted_counts(box_scores, offsets, threshold: float) -> np.ndarray:
    """Predicted boxes per image ``int64[n]``: boxes with ``score >= threshold`` among the flat
    ``box_scores float[M]`` that ``offsets int[n + 1]`` cut into images (the score shards' layout)."""
    keep = np.concatenate([[0], np.cumsum(np.asarray(box_scores, dtype=np.float64) >= threshold)])
    offsets = np.asarray(offsets, dtype=np.int64)
    return (keep[offsets[1:]] - keep[offsets[:-1]]).astype(np.int64)
