"""Step 1 of a cycle, *select*: which unlabeled images go to the oracle next.

A selector is chosen by name (``cycles.selector`` in the YAML) from :data:`SELECTORS`. Its factory
is called once per run of the cycles stage with keyword arguments (``ctx``: the stage context,
:class:`alod.stages.setup.StageContext`; ``train``: the training index; ``schedule_file``: an explicit
schedule path or ``None``) and returns an object with:

* ``identity() -> dict``: recorded in ``state.json``; resuming under another identity (another
  schedule, say) is refused instead of mixing two runs.
* ``num_cycles() -> int``: how many cycles it can serve.
* ``select(cycle, pool) -> Selection``: the images of cycle ``cycle`` (1-based) given the pool so
  far. It must not return images already in the pool.

Built: ``precomputed`` (the schedule written by ``make_batches.py``), ``adaptive`` (re-score the
unlabeled images with the previous cycle's model) and ``random_boxes`` (random images up to a box
count: the baseline at equal annotation cost). All three start cycle 1 from the same seeded draw
(:func:`alod.schedule.cycle1_draw`).

Selection options (:class:`alod.cycle.batch_rules.SelectOptions`, all off by default): a batch rule for
diversity (``score.batch``), class weights from the current model's AP per class
(``score.class_weights``; adaptive selection measures it on the labeled pool, see
:func:`labeled_pool_metrics`) and a budget in predicted boxes (``schedule.budget: boxes``; adaptive
selection can calibrate the prediction on the labeled pool, ``schedule.box_estimate: calibrated``). The adaptive
selector applies them in its per-cycle scoring; the precomputed schedule applies them when it is
built (:mod:`alod.schedule`). Either way, when one is on, ``cycle_NN/selection.json`` records the
cycle's predicted boxes, its labeled boxes (simulated oracles: the dataset's) and the class weights.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from alod.cycle.batch_rules import SelectOptions, calibrated_counts, choose
from alod.cycle.oracles import DATASET_ORACLES, build_oracle
from alod.cycle.pool import LabeledPool
from alod.schedule import (
    STREAM_BATCH_RULE,
    STREAM_RANDOM_BOXES,
    SUBSET_STREAM_ADAPTIVE,
    arrival_batches,
    check_schedule_matches,
    cycle1_draw,
    draw_sample,
    load_schedule,
)
from alod.strategies import difficulty_weights
from alod.utils import AlodError, Registry, atomic_write_json, sha256_file


@dataclass(frozen=True)
class Selection:
    """The images a cycle adds and the rule that chose them (the schedule's ``"random"`` or ``"top"``)."""

    images: list[str]
    rule: str
    info: dict = field(default_factory=dict)  # what the selection options decided (selection.json)


class Selector(Protocol):
    def identity(self) -> dict: ...

    def num_cycles(self) -> int: ...

    def select(self, cycle: int, pool: LabeledPool) -> Selection: ...


SELECTORS: Registry[Callable[..., Selector]] = Registry("selector")


def build_selector(name: str, **kwargs) -> Selector:
    """The selector ``name`` built with ``kwargs`` (``ctx``, ``train``, ``schedule_file``)."""
    return SELECTORS.get(name)(**kwargs)


def check_selector(name: str) -> None:
    """Refuse an unknown ``cycles.selector`` when the config is checked, before any work."""
    SELECTORS.get(name, where="config: cycles.selector")


@SELECTORS.register("precomputed")
class PrecomputedSelector:
    """Cycle ``n`` takes the images the schedule lists for it (``schedule.json``, see
    :mod:`alod.schedule`). The schedule must have been made for this training set."""

    def __init__(self, *, ctx, train, schedule_file: str | Path | None = None):
        self.path = Path(schedule_file) if schedule_file else ctx.layout.schedule
        self.schedule = load_schedule(self.path)
        check_schedule_matches(self.schedule, train.fingerprint(), path=self.path)
        self.sha256 = sha256_file(self.path)
        self._known = set(train.name_to_index())
        self._by_cycle = {int(c["cycle"]): c for c in self.schedule["cycles"]}
        self._unscored = set(self.schedule.get("unscored") or ())  # score.subset < 1: never scored
        self._ctx, self._train = ctx, train

    def identity(self) -> dict:
        return {"name": "precomputed", "schedule": str(self.path), "schedule_sha256": self.sha256}

    def num_cycles(self) -> int:
        return len(self.schedule["cycles"])

    def select(self, cycle: int, pool: LabeledPool) -> Selection:
        entry = self._by_cycle.get(cycle)
        if entry is None:
            raise AlodError(f"schedule {self.path} has no cycle {cycle} (it has {self.num_cycles()})")
        missing = [x for x in entry["images"] if x not in self._known]
        if missing:
            raise AlodError(f"schedule cycle {cycle} names images not in the training set: {missing[:3]}")
        if entry["rule"] != "random":
            unscored = [x for x in entry["images"] if x in self._unscored]
            if unscored:
                raise AlodError(f"schedule {self.path} cycle {cycle} takes the top of its batch but names images it "
                                f"lists as unscored: {unscored[:3]}; rerun make_batches.py")
        if self.schedule.get("selection") and cycle > 1:  # built with selection options (alod.schedule)
            info = {"options": self.schedule["selection"]}
            if "predicted_boxes" in entry:
                info["predicted_boxes"] = int(entry["predicted_boxes"])
            info = record_selection(self._ctx, self._train, cycle, entry["images"], rule=str(entry["rule"]),
                                    info=info)
            return Selection(images=list(entry["images"]), rule=str(entry["rule"]), info=info)
        return Selection(images=list(entry["images"]), rule=str(entry["rule"]))


@SELECTORS.register("adaptive")
class AdaptiveSelector:
    """Re-score with the latest model before every cycle (``cycles.selector: adaptive``).

    The arrival batches are the schedule's (:func:`alod.schedule.arrival_batches` with
    ``schedule.seed``). Cycle 1 takes ``query_size`` images at random from batch 1 (the cold start).
    Cycle ``n > 1`` scores every image that has arrived (batches ``1..n``) and is not labeled yet
    with cycle ``n - 1``'s model and ``score.strategy``, and takes the top ``query_size`` (ties by
    name). Leftovers of earlier batches stay candidates, so an image passed over once can be chosen
    later; a labeled image never is. No checkpoint of the pretraining stage is used.

    Cost: one inference pass (or the strategy's passes) over the candidates per cycle. The scores
    are not kept: a kill while scoring re-scores that cycle's candidates on resume (the selection is
    deterministic, and is recorded in ``state.json`` once made).

    ``score.subset < 1`` scores only a seeded random sample of the candidates,
    ``min(n, max(query_size, ceil(subset * n)))`` of the ``n`` unlabeled arrived images (drawn with
    ``default_rng((schedule.seed, 2, cycle))`` from the candidates in ascending pool order, see
    :func:`alod.schedule.draw_sample`), and takes the top ``query_size`` of that sample. The sample
    depends only on the seed, the cycle and the labeled pool, which ``state.json`` restores, so a
    resumed cycle scores the same sample and selects the same images. The identity records
    ``subset`` only when it is below 1, so states written before the option existed still resume.

    Selection options (module docstring) run :meth:`_select_with_options` instead of the top
    ``query_size``: the same candidates scored in one pass that also yields each image's embedding
    and predicted box count, with ``score.class_weights: difficulty`` weights from cycle ``n - 1``'s
    model evaluated on the labeled pool (:func:`labeled_pool_metrics`). The identity records the
    options in effect only.
    """

    def __init__(self, *, ctx, train, schedule_file: str | Path | None = None):
        cfg = ctx.cfg
        s = cfg.schedule
        rng = np.random.default_rng(s.seed)
        self.batches = arrival_batches(len(train), batch_size=s.batch_size, query_size=s.query_size,
                                       num_batches=s.num_batches, rng=rng)
        self.cycle1 = [str(train.names[i]) for i in cycle1_draw(self.batches[0], train.names,
                                                                query_size=s.query_size, rng=rng)]
        self.ctx, self.train, self.query_size = ctx, train, s.query_size
        self.strategy, self.params = cfg.score.strategy, cfg.score.strategy_params()
        self.subset, self.seed = cfg.score.subset, s.seed
        self._fingerprint = train.fingerprint()
        self.options = SelectOptions.from_config(cfg)

    def identity(self) -> dict:
        s = self.ctx.cfg.schedule
        out = {"name": "adaptive", "strategy": self.strategy, "params": self.params, "batch_size": s.batch_size,
               "query_size": s.query_size, "num_batches": s.num_batches, "seed": s.seed,
               "dataset": self._fingerprint}
        if self.subset < 1.0:
            out["subset"] = self.subset
        out.update(self.options.identity())
        return out

    def num_cycles(self) -> int:
        return len(self.batches)

    def select(self, cycle: int, pool: LabeledPool) -> Selection:
        if cycle == 1:
            return Selection(images=list(self.cycle1), rule="random")
        names = self.train.names
        labeled = set(pool.names)
        candidates = sorted(i for b in self.batches[:cycle] for i in b.tolist() if str(names[i]) not in labeled)
        if len(candidates) < self.query_size:
            raise AlodError(f"cycle {cycle}: only {len(candidates)} unlabeled images have arrived, fewer than "
                            f"schedule.query_size={self.query_size}")
        if self.subset < 1.0:
            arrived = len(candidates)
            candidates = draw_sample(candidates, subset=self.subset, query_size=self.query_size, seed=self.seed,
                                     stream=SUBSET_STREAM_ADAPTIVE, n=cycle).tolist()
            self.ctx.log(f"cycle {cycle} select: score.subset={self.subset:g}: scoring a sample of "
                         f"{len(candidates)} of the {arrived} unlabeled images")
        ckpt = self.ctx.layout.cycle_checkpoint(cycle - 1)
        if self.options.active:
            return self._select_with_options(cycle, candidates, ckpt, pool)
        t0 = time.perf_counter()
        from alod.cycle.scorer import score_with_checkpoint  # why: keeps torch out of config checks

        scores = score_with_checkpoint(self.ctx, self.train, candidates, ckpt=ckpt, strategy=self.strategy,
                                       params=self.params, desc=f"cycle {cycle} select")
        seconds = time.perf_counter() - t0
        self.ctx.log(f"cycle {cycle} select: scored {len(candidates)} images in {seconds:.1f} s "
                     f"({len(candidates) / max(seconds, 1e-9):.1f} images/s)")
        order = np.lexsort((np.array([str(names[i]) for i in candidates]), -scores))
        chosen = [str(names[candidates[k]]) for k in order[: self.query_size]]
        return Selection(images=chosen, rule="adaptive top")

    def _select_with_options(self, cycle: int, candidates: list[int], ckpt: Path, pool: LabeledPool) -> Selection:
        """Cycle ``cycle``'s images from ``candidates`` (pool positions) under :attr:`options`."""
        from alod.cycle.scorer import score_details_with_checkpoint  # why: keeps torch out of config checks

        opts, names = self.options, self.train.names
        weights = None
        if opts.class_weights == "difficulty":
            path = self.ctx.layout.cycle_labeled_metrics(cycle)
            where = self.train.name_to_index()
            labeled_pool_metrics(self.ctx, self.train, sorted(where[x] for x in pool.names), ckpt=ckpt,
                                 metrics_path=path, desc=f"cycle {cycle} difficulty")
            weights = class_weights_from(path, self.train.classes)
        t0 = time.perf_counter()
        calibrated = opts.needs_predicted and opts.box_estimate == "calibrated"
        out = score_details_with_checkpoint(self.ctx, self.train, candidates, ckpt=ckpt, strategy=self.strategy,
                                            params=self.params, class_weights=weights, embed=opts.needs_embeddings,
                                            box_threshold=opts.box_threshold, score_sums=calibrated,
                                            desc=f"cycle {cycle} select")
        seconds = time.perf_counter() - t0
        self.ctx.log(f"cycle {cycle} select: scored {len(candidates)} images in {seconds:.1f} s "
                     f"({len(candidates) / max(seconds, 1e-9):.1f} images/s); options {opts.identity()}")
        cand_names, predicted, extra = [str(names[i]) for i in candidates], out["predicted"], {}
        if calibrated:
            extra["labeled_boxes_per_image"] = round(self._labeled_boxes_per_image(pool), 4)
            predicted = calibrated_counts(predicted, extra["labeled_boxes_per_image"])
        picked, info = choose(opts, names=cand_names, scores=out["scores"], k=self.query_size,
                              emb=out["embeddings"], predicted=predicted,
                              rng=np.random.default_rng((self.seed, STREAM_BATCH_RULE, cycle)))
        info.update(extra)
        chosen = [cand_names[k] for k in picked.tolist()]
        if weights is not None:
            info["class_weights"] = [float(w) for w in weights]
        rule = "adaptive " + opts.rule()
        info = record_selection(self.ctx, self.train, cycle, chosen, rule=rule, info=info)
        return Selection(images=chosen, rule=rule, info=info)

    def _labeled_boxes_per_image(self, pool: LabeledPool) -> float:
        """The labeled pool's true boxes per image, as its oracle gave them (the dataset's labels for
        the simulated oracles, the imported ones for ``human``): what ``box_estimate: calibrated``
        scales the predicted counts to."""
        if self.ctx.cfg.cycles.oracle in DATASET_ORACLES:
            where = self.train.name_to_index()
            counts = box_counts(self.train)[[where[x] for x in pool.names]]
        else:
            counts = box_counts(build_oracle(self.ctx.cfg.cycles.oracle, ctx=self.ctx, train=self.train)
                                .training_index(pool))
        return float(np.mean(counts)) if len(counts) else 0.0


def labeled_pool_metrics(ctx, index, positions: list[int], *, ckpt: Path, metrics_path: Path, desc: str) -> dict:
    """The detector of ``ckpt`` evaluated on ``index``'s images ``positions`` (the labeled pool),
    written to ``metrics_path``: what ``score.class_weights: difficulty`` reads in adaptive selection.

    Why the labeled pool and not the validation split: in a comparison (and in BDD100K's setup) the
    validation split is the one whose mAP is reported, and weights taken from it would let the test
    labels steer which images are picked. The labeled pool's labels are already paid for; a model
    does better on its training images than on new ones, but what the weights need is which classes
    it does worst on (PPAL's difficulty is likewise measured on the labeled set).
    """
    from alod.cycle.scorer import checkpoint_model  # why: keeps torch out of config checks
    from alod.engine import predict  # why: (same)
    from alod.evaluation import evaluate_detections, json_safe  # why: (same: pycocotools)

    cfg, labeled = ctx.cfg, index.subset(positions)
    dets = predict(checkpoint_model(ctx, index, ckpt), ctx.dataset(labeled), batch_size=cfg.train.eval_batch_size,
                   accelerator=ctx.accelerator, amp=cfg.train.amp, desc=desc, progress=ctx.progress)
    readable = [i for i, d in enumerate(dets) if "unreadable" not in d]  # as evaluate_detector leaves them out
    metrics = evaluate_detections(labeled.subset(readable), [dets[i] for i in readable])
    if ctx.is_main:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(metrics_path, json_safe(metrics))
    return metrics


def class_weights_from(metrics_path: Path, classes) -> np.ndarray:
    """``score.class_weights: difficulty`` weights ``float64[C + 1]`` from a ``metrics.json``
    (:func:`alod.strategies.difficulty_weights`); an error naming the file when it is missing."""
    path = Path(metrics_path)
    if not path.is_file():
        raise AlodError(f"score.class_weights: difficulty needs the current model's validation metrics {path}; "
                        "evaluate that model first (or set score.class_weights: none)")
    # Rounded so that what is recorded (state, schedule, shard key) is exactly what was used.
    return np.round(difficulty_weights(json.loads(path.read_text()), classes), 6)


def record_selection(ctx, train, cycle: int, images: list[str], *, rule: str, info: dict) -> dict:
    """Write ``cycle_NN/selection.json`` (main process) and return what it holds: ``info`` plus the
    images, the rule and, with an oracle that reveals the dataset's labels
    (:data:`alod.cycle.oracles.DATASET_ORACLES`), ``labeled_boxes`` (the dataset's boxes of the images:
    what annotators will draw, against the model's ``predicted_boxes``)."""
    out = {"cycle": int(cycle), "rule": rule, "images": len(images), **info}
    if ctx.cfg.cycles.oracle in DATASET_ORACLES:
        counts, pos = box_counts(train), train.name_to_index()
        out["labeled_boxes"] = int(sum(int(counts[pos[x]]) for x in images))
    if ctx.is_main:
        path = ctx.layout.cycle_selection(cycle)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, out)
    return out


def box_counts(index) -> np.ndarray:
    """Labeled boxes ``int64[n]`` of every image of ``index`` (ignored regions not counted): what an
    annotator draws, and what the comparison's boxes axis counts."""
    offsets = np.asarray(index.offsets, dtype=np.int64)
    kept = np.concatenate([[0], np.cumsum(~np.asarray(index.ignore, dtype=bool))])
    return (kept[offsets[1:]] - kept[offsets[:-1]]).astype(np.int64)


@SELECTORS.register("random_boxes")
class RandomBoxesSelector(AdaptiveSelector):
    """The random baseline at equal boxes (``cycles.selector: random_boxes``, used by ``alod compare``).

    Cycle 1 is the shared random draw (the same images as every run of the seed). Before cycle
    ``n > 1`` it shuffles the arrived, unlabeled images (as :class:`AdaptiveSelector` sees them)
    with ``default_rng((schedule.seed, 3, n))`` and adds them in that order until the labeled pool
    holds at least ``cycles.box_targets[n - 2]`` boxes (the target is a cumulative box count, so
    the pool overshoots by less than one image's boxes). Box counts are the dataset's labels: this
    selector exists for simulated comparisons, where a strategy's pool is matched in annotation
    cost, and refuses an oracle that does not reveal the dataset's labels (``human``). It takes at
    least one image per cycle.
    """

    def __init__(self, *, ctx, train, schedule_file: str | Path | None = None):
        super().__init__(ctx=ctx, train=train, schedule_file=schedule_file)
        cfg = ctx.cfg
        if cfg.cycles.oracle not in DATASET_ORACLES:
            raise AlodError("cycles.selector=random_boxes reads the dataset's box counts; it needs "
                            f"cycles.oracle={' or '.join(DATASET_ORACLES)}, not {cfg.cycles.oracle!r}")
        if not cfg.cycles.box_targets:
            raise AlodError("cycles.selector=random_boxes needs cycles.box_targets: the pool's box count to reach "
                            "after cycles 2, 3, ... (alod compare fills it from a strategy's run)")
        self.targets = [int(t) for t in cfg.cycles.box_targets]
        self.boxes = box_counts(train)

    def identity(self) -> dict:
        out = super().identity()
        out.update(name="random_boxes", box_targets=self.targets)
        out.pop("strategy"), out.pop("params")
        for key in self.options.identity():  # options of a scored selection: random_boxes ignores them
            out.pop(key)
        return out

    def num_cycles(self) -> int:
        return min(len(self.batches), len(self.targets) + 1)

    def select(self, cycle: int, pool: LabeledPool) -> Selection:
        if cycle == 1:
            return Selection(images=list(self.cycle1), rule="random")
        names, pos = self.train.names, self.train.name_to_index()
        labeled = set(pool.names)
        have = int(sum(self.boxes[pos[x]] for x in pool.names))
        candidates = sorted(i for b in self.batches[:cycle] for i in b.tolist() if str(names[i]) not in labeled)
        order = np.random.default_rng((self.seed, STREAM_RANDOM_BOXES, cycle)).permutation(candidates)
        chosen, target = [], self.targets[cycle - 2]
        for i in order.tolist():
            if chosen and have >= target:
                break
            chosen.append(str(names[i]))
            have += int(self.boxes[i])
        return Selection(images=chosen, rule="random to boxes")
