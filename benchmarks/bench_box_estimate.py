"""How close does a box budget land to what it asked for, per way of estimating boxes before labeling?

``schedule.budget: boxes`` fills a cycle in rank order until the *estimated* boxes reach
``schedule.box_budget``; annotators then draw the *true* boxes. This replays, on finished adaptive
runs, the selection of every cycle ``n >= 2``: cycle ``n - 1``'s detector scores every unlabeled
arrived image (the run's strategy, as the adaptive selector does), the images are ranked, and the
budget is filled with each estimate:

* ``count``: the boxes with ``score >= --threshold`` (``schedule.box_estimate: count``);
* ``calibrated``: the sum of the box scores rescaled to the labeled pool's true boxes per image
  (``schedule.box_estimate: calibrated``, :func:`alod.cycle.batch_rules.calibrated_counts`);
* ``true``: the true counts (what a perfect estimate would spend: the budget, to one image).

The budget is the labeled pool's true boxes per image times ``schedule.query_size`` (what
``query_size`` images like those already labeled would cost). Reported per cycle: the images taken
and the true boxes they hold, as a ratio of the budget (1.0 = on budget; above it = overspent).

    python benchmarks/bench_box_estimate.py --run runs/compare-adaptive-entropy-s0 \\
        --run runs/compare_bccd-adaptive-entropy-s0 --out benchmarks/results/box_estimate.json

Reads the runs' ``cycles/config.yaml``, ``state.json`` and checkpoints; trains nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import run_info, write_result  # noqa: E402

from alod.config import load_config  # noqa: E402
from alod.cycle.batch_rules import calibrated_counts, take_to_box_budget  # noqa: E402
from alod.cycle.scorer import box_score_sum, iter_scored, predicted_boxes  # noqa: E402
from alod.cycle.selection import box_counts  # noqa: E402
from alod.data.dataset import DetectionDataset  # noqa: E402
from alod.data.sources import load_split  # noqa: E402
from alod.layout import RunLayout  # noqa: E402
from alod.models import load_detector  # noqa: E402
from alod.schedule import arrival_batches  # noqa: E402


def replay_cycle(model, train, candidates: list[int], labeled: list[int], *, strategy: str, params: dict,
                 query_size: int, threshold: float) -> dict:
    """One cycle's selection replayed under each estimate (module docstring)."""
    true_all = box_counts(train)
    scores, counts, sums = [], [], []
    for _, s, dets in iter_scored(model, DetectionDataset(train), candidates, strategy=strategy, params=params,
                                  batch_size=4):
        scores.append(np.asarray(s, dtype=np.float64))
        counts += [predicted_boxes(d, threshold) for d in dets]
        sums += [box_score_sum(d) for d in dets]
    names = np.asarray([str(train.names[i]) for i in candidates])
    order = np.lexsort((names, -np.concatenate(scores)))
    true = true_all[candidates].astype(np.int64)
    labeled_mean = float(true_all[labeled].mean())
    budget = labeled_mean * query_size
    estimates = {"count": np.asarray(counts, dtype=np.int64), "calibrated": calibrated_counts(sums, labeled_mean),
                 "true": true}
    out = {"candidates": len(candidates), "labeled_boxes_per_image": labeled_mean, "budget": budget}
    for name, est in estimates.items():
        chosen = take_to_box_budget(order, est, budget)
        spent = int(true[chosen].sum())
        out[name] = {"images": len(chosen), "estimated": float(np.asarray(est, dtype=np.float64)[chosen].sum()),
                     "true_boxes": spent, "ratio": spent / budget}
    return out


def measure(run: Path, threshold: float) -> dict:
    cfg = load_config(run / "cycles" / "config.yaml")
    layout = RunLayout.from_config(cfg.run)
    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)
    s = cfg.schedule
    rng = np.random.default_rng(s.seed)  # the adaptive selector's stream: batches first
    batches = arrival_batches(len(train), batch_size=s.batch_size, query_size=s.query_size,
                              num_batches=s.num_batches, rng=rng)
    state = json.loads((run / "cycles" / "state.json").read_text())
    pos = train.name_to_index()
    labeled: list[int] = []
    rows = []
    for rec in state["cycles"]:
        n = rec["cycle"]
        if n >= 2:
            model = load_detector(layout.cycle_checkpoint(n - 1), num_classes=train.num_classes,
                                  **dataclasses.asdict(cfg.model)).eval()
            taken = set(labeled)
            candidates = sorted(i for b in batches[:n] for i in b.tolist() if i not in taken)
            row = replay_cycle(model, train, candidates, labeled, strategy=cfg.score.strategy,
                               params=cfg.score.strategy_params(), query_size=s.query_size, threshold=threshold)
            rows.append({"cycle": n, **row})
            print(f"{run.name:40s} cycle {n}: budget {row['budget']:.0f}; " + "; ".join(
                f"{k} {row[k]['images']} img, {row[k]['true_boxes']} boxes ({row[k]['ratio']:.2f}x)"
                for k in ("count", "calibrated", "true")), flush=True)
        labeled += [pos[x] for x in rec["selected"]]
    return {"run": str(run), "strategy": cfg.score.strategy, "threshold": threshold, "cycles": rows}


def summary(results: list[dict]) -> dict:
    """Per run and estimate: the mean ratio of true boxes to budget and its worst cycle."""
    out = {}
    for res in results:
        for k in ("count", "calibrated", "true"):
            ratios = [c[k]["ratio"] for c in res["cycles"]]
            out.setdefault(Path(res["run"]).name, {})[k] = {
                "mean_ratio": float(np.mean(ratios)), "mean_abs_error": float(np.mean(np.abs(np.subtract(ratios, 1)))),
                "worst_ratio": float(max(ratios, key=lambda r: abs(r - 1)))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="a finished adaptive run (repeatable)")
    ap.add_argument("--threshold", type=float, default=0.5, help="box_estimate: count's threshold (default %(default)s)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = [measure(r, args.threshold) for r in args.run]
    table = summary(results)
    print(f"\n{'run':40s} {'estimate':>10s} {'true/budget':>11s} {'|error|':>7s} {'worst':>6s}")
    for run, by in table.items():
        for k, v in by.items():
            print(f"{run:40s} {k:>10s} {v['mean_ratio']:11.2f} {v['mean_abs_error']:7.2f} {v['worst_ratio']:6.2f}")
    write_result(args.out, {"what": __doc__.splitlines()[0], "machine": run_info(), "summary": table,
                            "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
