"""Is the detector's predicted box count a usable proxy for the boxes a cycle costs?

``schedule.budget: boxes`` fills each cycle up to ``schedule.box_budget`` *predicted* boxes (score >=
``schedule.box_threshold``), because the true count is unknown before labeling. This measures, on the
finished runs of a comparison, how the previous cycle's detector's count compares with the true count
on the images cycle ``n`` selected: mean predicted and true boxes per image, and their correlation.

    python benchmarks/bench_predicted_boxes.py --run runs/compare-adaptive-entropy-s0 \\
        --run runs/compare_bccd-adaptive-entropy-s0 --out benchmarks/results/predicted_boxes.json

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
from alod.data.dataset import DetectionDataset  # noqa: E402
from alod.data.sources import load_split  # noqa: E402
from alod.engine import iter_predictions  # noqa: E402
from alod.layout import RunLayout  # noqa: E402
from alod.models import load_detector  # noqa: E402


def measure(run: Path, threshold: float) -> dict:
    """Per cycle n >= 2: cycle n - 1's detector on cycle n's selected images."""
    cfg = load_config(run / "cycles" / "config.yaml")
    layout = RunLayout.from_config(cfg.run)
    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)
    state = json.loads((run / "cycles" / "state.json").read_text())
    pos = train.name_to_index()
    rows = []
    for rec in state["cycles"][1:]:
        n = rec["cycle"]
        model = load_detector(layout.cycle_checkpoint(n - 1), num_classes=train.num_classes,
                              **dataclasses.asdict(cfg.model)).eval()
        positions = [pos[x] for x in rec["selected"]]
        predicted, true = [], []
        for i, det in iter_predictions(model, DetectionDataset(train), positions, batch_size=4):
            predicted.append(int((np.asarray(det["scores"]) >= threshold).sum()))
            _, _, ignore = train.annotations(i)
            true.append(int((~ignore).sum()))  # ignored regions are not boxes anyone draws
        p, t = np.asarray(predicted, float), np.asarray(true, float)
        corr = float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else None
        rows.append({"cycle": n, "images": len(p), "predicted_per_image": float(p.mean()),
                     "true_per_image": float(t.mean()), "images_without_prediction": int((p == 0).sum()),
                     "correlation": corr})
    return {"run": str(run), "threshold": threshold, "cycles": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="a finished cycles run (repeatable)")
    ap.add_argument("--threshold", type=float, default=0.5, help="schedule.box_threshold (default %(default)s)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = [measure(r, args.threshold) for r in args.run]
    print(f"{'run':42s} {'cycle':>5s} {'predicted/img':>13s} {'true/img':>8s} {'no box':>6s} {'corr':>5s}")
    for res in results:
        for c in res["cycles"]:
            corr = "-" if c["correlation"] is None else f"{c['correlation']:.2f}"
            print(f"{Path(res['run']).name:42s} {c['cycle']:5d} {c['predicted_per_image']:13.2f} "
                  f"{c['true_per_image']:8.2f} {c['images_without_prediction']:6d} {corr:>5s}")
    write_result(args.out, {"what": __doc__.splitlines()[0], "machine": run_info(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
