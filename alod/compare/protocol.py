"""``alod compare``: does the selection beat random sampling here, at equal images and at equal boxes?

An orchestrator over the stages. The protocol (the ``compare:`` section of the config, see
:class:`alod.config.CompareConfig`; command-line flags override it):

* **Seeds.** Seed ``s`` sets ``run.seed``, ``pretrain.seed`` and ``schedule.seed`` to ``base + s``
  and the ``random`` strategy's own seed to ``schedule.seed + s``: the initialisation, the arrival
  batches, cycle 1's draw and the baseline's draws all change with the seed, and runs of one seed
  share all of them but the selection.
* **Cycle 1 is shared.** Every selector draws cycle 1 from batch 1 in name order
  (:func:`alod.schedule.cycle1_draw`), so every strategy, mode and baseline of a seed starts from
  the same images; the report records ``protocol.cycle1_shared``, checked on the runs' own pools.
* **The baseline runs in every mode.** ``random`` is run in each requested mode (precomputed:
  the top of each arrival batch by random score; adaptive: random among every arrived, unlabeled
  image) and every strategy is compared with random of its own mode, seed by seed.
* **The scorer's labels are charged.** ``precomputed`` strategies rank with a scorer trained on
  cycle 1's images only (``pretrain.images: cycle1``), labels every run of the seed gets anyway;
  each record says ``scorer_images``. ``adaptive`` needs no scorer (cycle ``n`` re-scores with
  cycle ``n - 1``'s model).
* **Equal boxes.** With ``compare.equal_boxes``, each strategy run gets a random run of its own
  (``cycles.selector: random_boxes``) that adds random images until its pool holds the strategy
  pool's box count, cycle by cycle: the gain at equal annotation cost.
* **Full data.** For each of ``compare.full_seeds``, one detector on the whole training split with
  the cycles' recipe (batch, learning rate, schedule shape) and the same number of image passes as
  the whole warm-started cycle chain (``cycles.init: warm``) or as one cycle
  (``cycles.init: scratch``): the ceiling at equal compute (:func:`full_epochs`).
* **Variants.** ``compare.variants: {NAME: {key: value}}`` (or ``--variant NAME=KEY=VALUE;...``) adds,
  per strategy but ``random``, the "strategy" ``<strategy>+<NAME>``: the same runs with those config
  overrides (e.g. ``score.batch: kmeanspp``), named ``<base>-<mode>-<strategy>+<NAME>-s<seed>``,
  with the same seeds, cycle 1 and pairing with random, and their own equal-boxes runs. A variant
  may not set what the comparison fixes (:data:`alod.config.VARIANT_FIXED`). A precomputed variant
  shares the seed's scorer unless it overrides ``model``, ``train`` or ``pretrain`` settings; then
  it trains its own, ``<base>-scorer+<NAME>-s<seed>``.
* **Resume.** Every stage resumes where it stopped and a finished run is reused: rerunning the
  same command after a kill continues the comparison, and a finished one only rewrites the report.

Writes under ``runs/<name>/compare/``: ``report.json``, ``report.md``, ``curves.png`` (from
:mod:`alod.compare.report`), ``runs.json`` (every curve record), ``timings.json`` (wall seconds per stage,
kept across reruns) and ``run.json`` (command, commit, machine, wall time, resolved config).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alod.compare.report import write_report
from alod.config import Config, apply_overrides, dotted_keys, nest_overrides, parse_overrides, validate
from alod.cycle.actions import ACCEPT, STOP_AGREEMENT, add_actions, annotator_actions, mean_agreement, stop_cycle
from alod.cycle.selection import box_counts
from alod.data.dataset import DetectionDataset
from alod.data.sources import load_split
from alod.engine import iter_predictions
from alod.layout import RunLayout
from alod.models import load_detector
from alod.stages.cycles import finished_cycles, run_cycles
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod.stages.setup import check_config
from alod.strategies import STRATEGIES, get_strategy
from alod.utils import AlodError, atomic_write_json

MODES = ("precomputed", "adaptive")
BASELINE = "random"
RUN_FORMAT = "alod.compare-run/1"


def _with(cfg: Config, **sections) -> Config:
    """``cfg`` with some fields of some sections replaced: ``_with(cfg, run={"name": "x"})``."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in sections.items()}
    return dataclasses.replace(cfg, **changes)


def run_name(base: str, *, mode: str, strategy: str, seed: int) -> str:
    return f"{base}-{mode}-{strategy}-s{seed}"


def equal_boxes_name(base: str, *, mode: str, strategy: str, seed: int) -> str:
    return f"{base}-{mode}-random_boxes_{strategy}-s{seed}"


def variant_label(strategy: str, variant: str) -> str:
    """The report's strategy name of ``strategy`` under variant ``variant``: ``"entropy+div"``."""
    return f"{strategy}+{variant}"


def split_label(label: str) -> tuple[str, str | None]:
    """``"entropy+div"`` -> ``("entropy", "div")``; a plain strategy -> ``(strategy, None)``."""
    strategy, _, variant = label.partition("+")
    return strategy, (variant or None)


def run_labels(strategies, variants) -> list[str]:
    """Every compared "strategy": ``strategies`` in order, then each non-baseline one under each variant."""
    return list(strategies) + [variant_label(s, v) for s in strategies if s != BASELINE for v in variants]


def parse_variant(text: str) -> tuple[str, dict]:
    """``"div=score.batch=kmeanspp;score.batch_pool=4"`` -> ``("div", {"score": {...}})`` (values as YAML)."""

    name, sep, rest = text.partition("=")
    items = [x.strip() for x in rest.split(";") if x.strip()]
    if not sep or not name.strip() or not items or any("=" not in x for x in items):
        raise AlodError(f"--variant {text!r}: expected NAME=KEY=VALUE[;KEY=VALUE...], e.g. div=score.batch=kmeanspp")
    return name.strip(), parse_overrides(items)


def variant_config(cfg: Config, label: str, *, seed: int, name: str, mode: str, baseline: bool = False) -> Config:
    """The config of run ``name`` for ``label`` (``"<strategy>"`` or ``"<strategy>+<variant>"``):
    :func:`_seeded`, then the variant's overrides, validated as a loaded config would be. With
    ``baseline`` (the equal-boxes random run of a variant) the strategy is random and the options
    only a scored selection uses are left off: ``random_boxes`` ignores them."""

    strategy, variant = split_label(label)
    seeded = _seeded(cfg, seed=seed, name=name, strategy=BASELINE if baseline else strategy, mode=mode)
    if variant is None:
        return seeded
    if variant not in cfg.compare.variants:
        raise AlodError(f"compare: unknown variant {variant!r} in {label!r}; compare.variants has "
                        f"{', '.join(sorted(cfg.compare.variants)) or 'none'}")
    out = apply_overrides(seeded, dict(cfg.compare.variants[variant]), where=f"compare.variants.{variant}")
    if baseline:  # random_boxes draws to box counts of its own: no class weights, no budget rule
        out = dataclasses.replace(out, score=dataclasses.replace(out.score, class_weights="none"),
                                  schedule=dataclasses.replace(out.schedule, budget="images", box_budget=None,
                                                               box_estimate="count"))
    return out


def check_variants(cfg: Config) -> None:
    """Build and check (:func:`alod.stages.setup.check_config`) every variant run's config once, so a
    bad override fails before any training."""
    c = cfg.compare
    for label in run_labels(c.strategies, c.variants)[len(c.strategies):]:
        for mode in c.modes:
            for baseline in (False, True):
                run_cfg = variant_config(cfg, label, seed=c.seeds[0], name="check", mode=mode, baseline=baseline)
                try:
                    check_config(run_cfg)
                except AlodError as e:
                    raise AlodError(f"compare.variants.{split_label(label)[1]}: {e}") from None


def _scorer_name(cfg: Config, label: str, seed: int) -> str:
    """The precomputed scorer's run: the seed's shared one, or the variant's own when it changes
    what the scorer is (its model, training or pretraining settings)."""

    _, variant = split_label(label)
    keys = dotted_keys(nest_overrides(cfg.compare.variants[variant])) if variant else []
    if any(k.split(".")[0] in ("model", "train", "pretrain") for k in keys):
        return f"{cfg.run.name}-scorer+{variant}-s{seed}"
    return f"{cfg.run.name}-scorer-s{seed}"


def plan(strategies, modes, seeds) -> list[tuple[int, str, str]]:
    """The ``(seed, mode, strategy)`` runs: every strategy, ``random`` included, in every mode."""
    return [(seed, mode, strategy) for seed in seeds for mode in modes for strategy in strategies]


def check_request(strategies, modes, seeds) -> None:
    if not strategies or not modes or not seeds:
        raise AlodError("compare needs at least one strategy, one mode and one seed")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise AlodError(f"compare: unknown strategies {unknown}; choose from {', '.join(sorted(STRATEGIES))}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise AlodError(f"compare: unknown modes {bad}; choose from {', '.join(MODES)}")
    if BASELINE not in strategies:
        raise AlodError(f"compare needs the {BASELINE!r} baseline among the strategies: savings are measured against it")
    for what, items in (("seeds", seeds), ("strategies", strategies), ("modes", modes)):
        if len(set(items)) != len(items):
            raise AlodError(f"compare: repeated {what} {list(items)}")


class _Timings:
    """Wall seconds per (run, stage), kept across reruns: a resumed stage adds to what it had.

    ``done`` (the stage's output file) tells a finished stage from a resumed one: calling a
    finished stage again only reloads its result, and adding that second to its recorded
    minutes would make every rerun of a comparison drift its timings upward.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def time(self, key: str, fn, *, done: Path | None = None):
        finished = done is not None and done.is_file() and key in self.data
        t0 = time.perf_counter()
        out = fn()
        if not finished:
            self.data[key] = self.data.get(key, 0.0) + (time.perf_counter() - t0)
            atomic_write_json(self.path, self.data)
        return out

    def get(self, key: str) -> float:
        return float(self.data.get(key, 0.0))


def resolve(cfg: Config, **overrides) -> Config:
    """``cfg`` with the command line's ``compare`` overrides (``None`` = keep the config's)."""
    variants = overrides.pop("variants", None)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    out = _with(cfg, compare=fields) if fields else cfg
    if variants:  # --variant replaces compare.variants, as --strategies replaces compare.strategies

        parsed = dict(parse_variant(v) for v in variants)
        if len(parsed) != len(variants):
            raise AlodError(f"compare: repeated --variant names in {list(variants)}")
        out = _with(out, compare={"variants": parsed})
        validate(out)
    c = out.compare
    check_request(list(c.strategies), list(c.modes), list(c.seeds))
    check_variants(out)
    return out


def run_compare(cfg: Config, *, progress: bool = True, log=print, command: str | None = None) -> dict:
    """Run (or resume) the protocol of ``cfg.compare`` and write the report. Returns the report dict."""
    c = cfg.compare
    check_request(list(c.strategies), list(c.modes), list(c.seeds))
    check_variants(cfg)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    out_dir = RunLayout.from_config(cfg.run).compare_dir
    timings = _Timings(out_dir / "timings.json")
    labels = run_labels(c.strategies, c.variants)
    runs = plan(labels, c.modes, c.seeds)
    extra = sum(s != BASELINE for s in labels) * len(c.modes) * len(c.seeds) if c.equal_boxes else 0
    log(f"compare: {len(runs)} runs ({', '.join(labels)} x {', '.join(c.modes)} x seeds {list(c.seeds)})"
        f" + {extra} random runs at equal boxes + {len(c.full_seeds)} full-data runs")
    records, cycle1 = [], {}
    for k, (seed, mode, strategy) in enumerate(runs, start=1):
        log(f"[{k}/{len(runs)}] {run_name(cfg.run.name, mode=mode, strategy=strategy, seed=seed)}")
        record, first = _strategy_run(cfg, timings, seed=seed, mode=mode, strategy=strategy, progress=progress, log=log)
        records.append(record)
        cycle1.setdefault(seed, []).append(first)
        if c.equal_boxes and strategy != BASELINE:
            record, first = _equal_boxes_run(cfg, record, seed=seed, mode=mode, strategy=strategy,
                                             progress=progress, log=log)
            records.append(record)
            cycle1[seed].append(first)
    fulls = [_full_run(cfg, timings, records, seed=s, progress=progress, log=log) for s in c.full_seeds]
    protocol = _protocol(cfg, cycle1, records)
    if not protocol["cycle1_shared"]:
        log("compare: WARNING: runs of one seed started from different cycle-1 images (see report.json protocol)")
    report = write_report(records, fulls, out_dir, protocol=protocol)
    atomic_write_json(out_dir / "runs.json", {"format": "alod.compare-runs/2", "records": records, "full": fulls})
    _write_run_info(out_dir / "run.json", cfg, command=command, started=started, wall_s=time.perf_counter() - t0)
    log(f"compare: report in {out_dir} (report.md, report.json, curves.png); "
        f"curves per run: tensorboard --logdir {cfg.run.tb_dir}")
    return report


def _strategy_run(cfg, timings, *, seed, mode, strategy, progress, log) -> tuple[dict, list[str]]:
    """One strategy's cycles (its scorer first, for ``precomputed``); returns its record and cycle 1."""
    name = run_name(cfg.run.name, mode=mode, strategy=strategy, seed=seed)
    rcfg = variant_config(cfg, strategy, seed=seed, name=name, mode=mode)
    base, scorer = split_label(strategy)[0], _scorer_name(cfg, strategy, seed)
    scorer_images = 0
    if mode == "precomputed":
        ckpt = None
        if _needs_scorer(base):
            own = scorer != f"{cfg.run.name}-scorer-s{seed}"  # a variant changing the scorer trains its own
            scfg = _with(variant_config(cfg, strategy if own else base, seed=seed, name=scorer, mode=mode),
                         pretrain={"images": "cycle1"})
            ckpt = timings.time(f"{scfg.run.name}/pretrain", lambda: run_pretrain(scfg, progress=progress, log=log),
                                done=RunLayout.from_config(scfg.run).pretrain_metrics)
            scorer_images = rcfg.schedule.query_size
        timings.time(f"{name}/scoring", lambda: run_scoring(rcfg, ckpt=ckpt, progress=progress, log=log),
                     done=RunLayout.from_config(rcfg.run).schedule)
    state = run_cycles(rcfg, progress=progress, log=log)
    scoring = _scoring_seconds(timings, cfg.run.name, name, seed, mode, base, scorer=scorer)
    record = _record(rcfg, state, seed=seed, mode=mode, strategy=strategy, scoring_seconds=scoring)
    record["scorer_images"] = scorer_images
    _add_label_work(rcfg, state, record, log=log)
    return record, _cycle1(state)


def _equal_boxes_run(cfg, strategy_record: dict, *, seed, mode, strategy, progress, log) -> tuple[dict, list[str]]:
    """Random images up to ``strategy_record``'s pool box count at every cycle (same seed and mode)."""
    name = equal_boxes_name(cfg.run.name, mode=mode, strategy=strategy, seed=seed)
    targets = tuple(int(c["boxes"]) for c in strategy_record["cycles"][1:])
    log(f"  {name}: random images up to {strategy}'s boxes {list(targets)}")
    rcfg = _with(variant_config(cfg, strategy, seed=seed, name=name, mode=mode, baseline=True),
                 cycles={"selector": "random_boxes", "box_targets": targets or (0,),
                         "num_cycles": len(strategy_record["cycles"])})
    state = run_cycles(rcfg, progress=progress, log=log)
    record = _record(rcfg, state, seed=seed, mode=mode, strategy=BASELINE, scoring_seconds=0.0)
    record.update(equal_boxes_to=strategy, scorer_images=0)
    _add_label_work(rcfg, state, record, log=log)
    return record, _cycle1(state)


def full_epochs(cfg: Config, pool_sizes: list[int], n_train: int) -> int:
    """Epochs over all ``n_train`` images that give the full-data line the cycles' image passes.

    ``cycles.init: warm``: the chain of cycles trained ``cycles.epochs`` passes over each cycle's
    pool (``pool_sizes``, images), so the full line gets ``ceil(epochs x sum(pool_sizes) / n_train)``
    epochs; ``scratch``: each cycle is a fresh detector, so the full line gets ``cycles.epochs``.
    """
    if cfg.cycles.init != "warm":
        return cfg.cycles.epochs
    return max(1, math.ceil(cfg.cycles.epochs * sum(pool_sizes) / n_train))


def _full_run(cfg, timings, records, *, seed, progress, log) -> dict:
    baseline = next(r for r in records if r["strategy"] == BASELINE and r.get("equal_boxes_to") is None)
    train = _train_index(cfg)
    epochs = full_epochs(cfg, [c["images"] for c in baseline["cycles"]], len(train))
    name = f"{cfg.run.name}-full-s{seed}"
    fcfg = _with(_seeded(cfg, seed=seed, name=name, strategy=BASELINE, mode="precomputed"),
                 pretrain={"fraction": 1.0, "epochs": epochs, "images": "partition"})
    log(f"[full s{seed}] {name}: the whole training split, {epochs} epochs (the cycles' image passes)")
    metrics_path = RunLayout.from_config(fcfg.run).pretrain_metrics
    timings.time(f"{name}/pretrain", lambda: run_pretrain(fcfg, progress=progress, log=log), done=metrics_path)
    metrics = json.loads(metrics_path.read_text())
    t = cfg.train
    return {"seed": seed, "mAP50": metrics["mAP50"], "mAP": metrics["mAP"], "images": len(train),
            "boxes": int(box_counts(train).sum()),
            "recipe": {"epochs": epochs, "init": "scratch", "batch_size": t.batch_size, "lr": t.lr,
                       "matched_to": f"cycles.init={cfg.cycles.init}, {cfg.cycles.epochs} epochs per cycle"},
            "seconds": {"training": timings.get(f"{name}/pretrain")}}


#: Images of the fixed probe on which consecutive cycles' models are compared (agreement).
PROBE_IMAGES = 50
LABEL_WORK_FORMAT = "alod.label-work/1"


def _add_label_work(cfg: Config, state: dict, record: dict, *, log) -> None:
    """Add each cycle's cumulative annotator ``actions`` and model ``agreement`` to ``record``, and its
    ``stop_cycle`` (:mod:`alod.cycle.actions`), from the run's own checkpoints.

    Cycle ``n``'s new images are pre-annotated by cycle ``n - 1``'s model (cycle 1: none, every box is
    drawn). Agreement compares cycle ``n``'s and ``n - 1``'s models on a fixed probe: up to
    :data:`PROBE_IMAGES` pool images, drawn with ``default_rng((schedule.seed, 5))`` from those the run
    never labeled. Both are measured after the run (no retraining; about one inference pass over
    the pool's new images and the probe per cycle) and cached in ``cycles/label_work.json``.
    """

    path = RunLayout.from_config(cfg.run).label_work
    cycles = [c["cycle"] for c in record["cycles"]]
    cached = json.loads(path.read_text()) if path.is_file() else {}
    key = {"format": LABEL_WORK_FORMAT, "cycles": cycles, "accept": ACCEPT, "probe": PROBE_IMAGES}
    if {k: cached.get(k) for k in key} != key:
        log(f"  {cfg.run.name}: annotator actions and model agreement per cycle")
        cached = {**key, **_label_work(cfg, state, cycles)}
        atomic_write_json(path, cached)
    for c, actions, agreement in zip(record["cycles"], cached["actions"], cached["agreement"]):
        c["actions"], c["agreement"] = actions, agreement
    record["stop_cycle"] = stop_cycle(cached["agreement"], threshold=STOP_AGREEMENT)


def _label_work(cfg: Config, state: dict, cycles: list[int]) -> dict:

    train = _train_index(cfg)
    pos = train.name_to_index()
    pool = state["pool"]
    labeled = set(pool["names"])
    rest = np.array(sorted(i for i, n in enumerate(train.names) if str(n) not in labeled), dtype=np.int64)
    rng = np.random.default_rng((cfg.schedule.seed, 5))
    probe = sorted(rng.choice(rest, size=min(PROBE_IMAGES, len(rest)), replace=False).tolist()) if len(rest) else []
    total, actions, agreement, before = [], [], [], None
    for n in cycles:
        added = [pos[x] for x, k in zip(pool["names"], pool["cycles"]) if k == n]
        model = _cycle_model(cfg, n - 1, train.num_classes) if n > 1 else None
        dets = _predict(cfg, model, train, added) if model is not None else [None] * len(added)
        for i, d in zip(added, dets):
            gt, gl, gi = train.annotations(i)
            empty = np.zeros((0, 4))
            total.append(annotator_actions(gt, gl, gi, d["boxes"] if d else empty, d["labels"] if d else [],
                                           d["scores"] if d else []))
        actions.append(add_actions(total)["actions"])
        now = _predict(cfg, _cycle_model(cfg, n, train.num_classes), train, probe) if probe else None
        agreement.append(mean_agreement(now, before) if (before is not None and probe) else None)
        before = now
    return {"actions": actions, "agreement": agreement, "probe_images": len(probe)}


def _cycle_model(cfg: Config, cycle: int, num_classes: int):
    """Cycle ``cycle``'s detector (:func:`alod.models.load_detector`), on the CPU."""
    return load_detector(RunLayout.from_config(cfg.run).cycle_checkpoint(cycle), num_classes=num_classes,
                         **dataclasses.asdict(cfg.model))


def _predict(cfg: Config, model, index, positions: list[int]) -> list[dict]:
    dataset = DetectionDataset(index, skip_unreadable=not cfg.data.strict)
    return [d for _, d in iter_predictions(model, dataset, positions, batch_size=cfg.train.eval_batch_size)]


def _protocol(cfg: Config, cycle1: dict[int, list[list[str]]], records: list[dict]) -> dict:

    shared = all(all(sorted(x) == sorted(firsts[0]) for x in firsts) for firsts in cycle1.values())
    c = cfg.compare
    out = {"seeds": list(c.seeds), "modes": list(c.modes), "strategies": run_labels(c.strategies, c.variants),
            "cycle1_shared": bool(shared), "cycle1_images": cfg.schedule.query_size,
            "scorer": "precomputed: trained on cycle 1's images only (pretrain.images: cycle1); adaptive: none",
            "equal_boxes": bool(c.equal_boxes), "full_seeds": list(c.full_seeds),
            "annotator_actions": f"pre-annotations by the previous cycle's model, accepted at score >= {ACCEPT}; "
                                 "draw + fix + delete (alod.cycle.actions)",
            "stop_agreement": STOP_AGREEMENT,
            "cycles": {"init": cfg.cycles.init, "epochs": cfg.cycles.epochs, "batch_size": cfg.train.batch_size,
                       "query_size": cfg.schedule.query_size, "arrival_batch": cfg.schedule.batch_size},
            "runs": len(records)}
    if c.variants:  # recorded only when there are any, so a default comparison's report keeps its bytes
        out["variants"] = {k: dict(v) for k, v in c.variants.items()}
    return out


def _cycle1(state: dict) -> list[str]:
    pool = state["pool"]
    return [x for x, k in zip(pool["names"], pool["cycles"]) if k == 1]


def _needs_scorer(strategy: str) -> bool:
    return get_strategy(strategy).inference != "none"


def _seeded(cfg: Config, *, seed: int, name: str, strategy: str, mode: str) -> Config:
    params = dict(cfg.score.params)
    params[BASELINE] = {**(params.get(BASELINE) or {}), "seed": cfg.schedule.seed + seed}
    # A run's config holds no variants: they belong to the comparison (and were checked against it).
    return _with(cfg, run={"name": name, "seed": cfg.run.seed + seed},
                 pretrain={"seed": cfg.pretrain.seed + seed}, schedule={"seed": cfg.schedule.seed + seed},
                 score={"strategy": strategy, "params": params}, cycles={"selector": mode}, compare={"variants": {}})


def _scoring_seconds(timings: _Timings, base: str, name: str, seed: int, mode: str, strategy: str,
                     scorer: str | None = None) -> float:
    if mode != "precomputed":
        return 0.0
    scorer = timings.get(f"{scorer or f'{base}-scorer-s{seed}'}/pretrain") if _needs_scorer(strategy) else 0.0
    return scorer + timings.get(f"{name}/scoring")


def _train_index(cfg: Config):
    layout = RunLayout.from_config(cfg.run)
    return load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)


def _record(cfg: Config, state: dict, *, seed: int, mode: str, strategy: str, scoring_seconds: float) -> dict:
    """One curve record of :mod:`alod.compare.report` from a finished run's state and metrics."""
    layout = RunLayout.from_config(cfg.run)
    train = _train_index(cfg)
    boxes, pos = box_counts(train), train.name_to_index()
    pool = state["pool"]
    cycles = []
    for c in finished_cycles(state):
        n = c["cycle"]
        names = [x for x, k in zip(pool["names"], pool["cycles"]) if k <= n]
        metrics = json.loads(layout.cycle_metrics(n).read_text())
        seconds = c.get("seconds", {})
        cycles.append({
            "cycle": n,
            "images": len(names),
            "boxes": int(sum(boxes[pos[x]] for x in names)),
            "mAP50": c["mAP50"],
            "mAP": c["mAP"],
            "per_class": {k.removeprefix("AP50/"): v for k, v in metrics.items() if k.startswith("AP50/")},
            # The precomputed schedule's cost is paid before cycle 1.
            "seconds": {"scoring": seconds.get("select", 0.0) + (scoring_seconds if n == 1 else 0.0),
                        "training": seconds.get("train", 0.0)},
        })
    if not cycles:
        raise AlodError(f"run {cfg.run.name} has no evaluated cycle")
    out = {"strategy": strategy, "mode": mode, "seed": seed, "equal_boxes_to": None, "scorer_images": 0,
           "scorer_charged": 0, "cycles": cycles}
    if cfg.schedule.budget == "boxes":  # only then, so that records without a box budget keep their bytes
        out["box_budget"] = int(cfg.schedule.box_budget)
    return out


def machine_info() -> dict:
    """What a wall time depends on: CPU model and count, torch, its thread count and CPU capability."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def _write_run_info(path: Path, cfg: Config, *, command: str | None, started: str, wall_s: float) -> None:
    """``run.json``: how the committed results were made. Wall seconds are this invocation's; a
    resumed comparison keeps the earlier invocations' under ``invocations``."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    invocations = list(old.get("invocations", [])) + [{"started_utc": started, "wall_s": round(wall_s, 1),
                                                       "commit": _commit(), "machine": machine_info()}]
    atomic_write_json(path, {
        "format": RUN_FORMAT,
        "command": command or " ".join(["alod", *sys.argv[1:]]),
        "commit": invocations[-1]["commit"],
        "machine": invocations[-1]["machine"],
        "wall_s_total": round(sum(i["wall_s"] for i in invocations), 1),
        "invocations": invocations,
        "config": cfg.to_dict(),
    })
