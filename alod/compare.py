"""``alod compare``: does the selection beat random sampling here, by how many labels, at what cost?

An orchestrator over the stages. For every seed, every selection mode and every strategy it runs
the active-learning cycles as a run of its own (``runs/<name>-<mode>-<strategy>-s<seed>/``, with
TensorBoard curves in ``tensor_logs/`` under the same name), then writes under
``runs/<name>/compare/`` the report of :mod:`alod.report` (``report.json``, ``report.md``,
``curves.png``).

* Seeds: seed ``s`` sets ``run.seed``, ``pretrain.seed`` and ``schedule.seed`` to ``base + s``
  (``base`` from the config): the detector's initialisation, the scorer's partition, the arrival
  batches and cycle 1's random draw all change with the seed; runs of one seed share them.
* ``precomputed``: one scorer per seed (``runs/<name>-scorer-s<seed>/``) ranks the pool for every
  strategy (the original project's schedule). ``adaptive``: cycle ``n`` re-scores with cycle
  ``n - 1``'s model (:class:`alod.selection.AdaptiveSelector`); no scorer.
* ``random`` is the baseline. It runs in the ``precomputed`` mode only: with random scores the two
  modes select alike, and the report measures every mode against it.
* ``full`` (on by default): one detector trained on the whole training split for ``cycles.epochs``
  epochs (seed ``base``), the upper-bound line.
* Compute: ``scoring`` seconds are what choosing images cost (pretraining the scorer and scoring
  the pool, once per seed and strategy for ``precomputed``; the per-cycle re-scoring for
  ``adaptive``); ``training`` seconds the cycles' retraining. Wall seconds of this machine, kept in
  ``compare/timings.json`` so that a rerun does not count a reused stage as free.
* Resume: every stage resumes where it stopped and a finished run is reused, so rerunning the same
  command after a kill continues the comparison.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from alod.config import Config
from alod.layout import RunLayout
from alod.stages.cycles import finished_cycles, run_cycles
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod.utils import AlodError, atomic_write_json

MODES = ("precomputed", "adaptive")
BASELINE = "random"


def _with(cfg: Config, **sections) -> Config:
    """``cfg`` with some fields of some sections replaced: ``_with(cfg, run={"name": "x"})``."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in sections.items()}
    return dataclasses.replace(cfg, **changes)


def run_name(base: str, *, mode: str, strategy: str, seed: int) -> str:
    return f"{base}-{mode}-{strategy}-s{seed}"


def plan(strategies: list[str], modes: list[str], seeds: list[int]) -> list[tuple[int, str, str]]:
    """The ``(seed, mode, strategy)`` runs of a comparison; ``random`` once per seed (precomputed)."""
    runs = []
    for seed in seeds:
        for mode in modes:
            for strategy in strategies:
                if strategy == BASELINE and mode != "precomputed":
                    continue
                runs.append((seed, mode, strategy))
        if BASELINE in strategies and "precomputed" not in modes:
            runs.append((seed, "precomputed", BASELINE))
    return runs


def check_request(strategies: list[str], modes: list[str], seeds: list[int]) -> None:
    from alod.strategies import STRATEGIES

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
    if len(set(seeds)) != len(seeds):
        raise AlodError(f"compare: repeated seeds {seeds}")


class _Timings:
    """Wall seconds per (run, stage), kept across reruns: a resumed stage adds to what it had."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def time(self, key: str, fn):
        t0 = time.perf_counter()
        out = fn()
        self.data[key] = self.data.get(key, 0.0) + (time.perf_counter() - t0)
        atomic_write_json(self.path, self.data)
        return out

    def get(self, key: str) -> float:
        return float(self.data.get(key, 0.0))


def run_compare(cfg: Config, *, strategies: list[str], modes: list[str], seeds: list[int], full: bool = True,
                progress: bool = True, log=print) -> dict:
    """Run (or resume) every combination and write the report. Returns the report dict."""
    from alod.report import write_report

    check_request(strategies, modes, seeds)
    base = cfg.run.name
    out_dir = RunLayout.from_config(cfg.run).compare_dir
    timings = _Timings(out_dir / "timings.json")
    runs = plan(strategies, modes, seeds)
    log(f"compare: {len(runs)} runs ({', '.join(strategies)} x {', '.join(modes)} x seeds {seeds})"
        + (" + the full-data run" if full else ""))
    records = []
    for k, (seed, mode, strategy) in enumerate(runs, start=1):
        name = run_name(base, mode=mode, strategy=strategy, seed=seed)
        log(f"[{k}/{len(runs)}] {name}")
        rcfg = _seeded(cfg, seed=seed, name=name, strategy=strategy, mode=mode)
        if mode == "precomputed":
            ckpt = None
            if _needs_scorer(strategy):
                scfg = _seeded(cfg, seed=seed, name=f"{base}-scorer-s{seed}", strategy=strategy, mode=mode)
                ckpt = timings.time(f"{scfg.run.name}/pretrain",
                                    lambda: run_pretrain(scfg, progress=progress, log=log))
            timings.time(f"{name}/scoring", lambda: run_scoring(rcfg, ckpt=ckpt, progress=progress, log=log))
        state = run_cycles(rcfg, progress=progress, log=log)
        records.append(_record(rcfg, state, seed=seed, mode=mode, strategy=strategy,
                               scoring_seconds=_scoring_seconds(timings, base, name, seed, mode, strategy)))
    full_record = None
    if full:
        fcfg = _with(_seeded(cfg, seed=0, name=f"{base}-full", strategy=BASELINE, mode="precomputed"),
                     pretrain={"fraction": 1.0, "epochs": cfg.cycles.epochs})
        log(f"[full] {fcfg.run.name}: one detector on the whole training split")
        timings.time(f"{fcfg.run.name}/pretrain", lambda: run_pretrain(fcfg, progress=progress, log=log))
        full_record = _full_record(fcfg, seconds=timings.get(f"{fcfg.run.name}/pretrain"))
    report = write_report(records, full_record, out_dir)
    atomic_write_json(out_dir / "runs.json", {"format": "alod.compare-runs/1", "records": records,
                                              "full": full_record})
    log(f"compare: report in {out_dir} (report.md, report.json, curves.png); "
        f"curves per run: tensorboard --logdir {cfg.run.tb_dir}")
    return report


def _needs_scorer(strategy: str) -> bool:
    from alod.strategies import get_strategy

    return get_strategy(strategy).inference != "none"


def _seeded(cfg: Config, *, seed: int, name: str, strategy: str, mode: str) -> Config:
    return _with(cfg, run={"name": name, "seed": cfg.run.seed + seed},
                 pretrain={"seed": cfg.pretrain.seed + seed}, schedule={"seed": cfg.schedule.seed + seed},
                 score={"strategy": strategy}, cycles={"selector": mode})


def _scoring_seconds(timings: _Timings, base: str, name: str, seed: int, mode: str, strategy: str) -> float:
    if mode != "precomputed":
        return 0.0
    scorer = timings.get(f"{base}-scorer-s{seed}/pretrain") if _needs_scorer(strategy) else 0.0
    return scorer + timings.get(f"{name}/scoring")


def _pool_boxes(train, names: list[str]) -> int:
    """Labeled ground-truth boxes (ignored regions excluded) of the images ``names``."""
    pos = train.name_to_index()
    total = 0
    for n in names:
        _, _, ignore = train.annotations(pos[n])
        total += int((~ignore).sum())
    return total


def _train_index(cfg: Config):
    from alod.data.sources import load_split

    layout = RunLayout.from_config(cfg.run)
    return load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)


def _record(cfg: Config, state: dict, *, seed: int, mode: str, strategy: str, scoring_seconds: float) -> dict:
    """One curve record of :mod:`alod.report` from a finished run's state and metrics."""
    layout = RunLayout.from_config(cfg.run)
    train = _train_index(cfg)
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
            "boxes": _pool_boxes(train, names),
            "mAP50": c["mAP50"],
            "mAP": c["mAP"],
            "per_class": {k.removeprefix("AP50/"): v for k, v in metrics.items() if k.startswith("AP50/")},
            # The precomputed schedule's cost is paid before cycle 1.
            "seconds": {"scoring": seconds.get("select", 0.0) + (scoring_seconds if n == 1 else 0.0),
                        "training": seconds.get("train", 0.0)},
        })
    if not cycles:
        raise AlodError(f"run {cfg.run.name} has no evaluated cycle")
    return {"strategy": strategy, "mode": mode, "seed": seed, "cycles": cycles}


def _full_record(cfg: Config, *, seconds: float) -> dict:
    layout = RunLayout.from_config(cfg.run)
    train = _train_index(cfg)
    metrics = json.loads(layout.pretrain_metrics.read_text())
    return {"mAP50": metrics["mAP50"], "mAP": metrics["mAP"], "images": len(train),
            "boxes": int((~np.asarray(train.ignore)).sum()), "seconds": {"training": seconds}}
