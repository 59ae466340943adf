"""The demo preset's trunk and FPN widths: training-step and inference seconds per (trunk, FPN)
pair, timed in alternation against the earlier preset's (64, 64) in the same run.

``model.trunk_width`` sets the channels of ResNet-18's layers 1-3 (w, 2w, 4w; 64 is ResNet-18) and
``model.fpn_channels`` the FPN and RPN width. Images are 8 generated demo scenes (320x192) with
their real boxes, so the RoI sampling is realistic. The demo's mAP50 at each width is not measured
here: see ``bench_demo_levers.py`` and README "Speed and cost".

    python benchmarks/bench_demo_width.py [--pairs 64x64,32x64,32x32,16x32] [--repeats 4]
"""
from __future__ import annotations

from dataclasses import asdict
import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _inputs import scene_batch
from _machine import run_info, write_result

from alod.config import load_config
from alod.models import build_detector

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "demo_width.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="64x64,32x64,32x32,16x32", help="trunk x FPN widths; the first is the baseline")
    ap.add_argument("--repeats", type=int, default=4, help="timed steps per setting, in alternation")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        images, targets, _ = scene_batch(Path(tmp), 8)
    demo = load_config(REPO / "configs" / "demo.yaml").model
    pairs = [tuple(int(v) for v in p.split("x")) for p in args.pairs.split(",")]
    models, opts = {}, {}
    for t, f in pairs:
        torch.manual_seed(0)
        models[(t, f)] = build_detector(num_classes=10, **asdict(replace(demo, trunk_width=t, fpn_channels=f)))
        opts[(t, f)] = torch.optim.SGD(models[(t, f)].parameters(), lr=1e-3, momentum=0.9)

    def train_step(key):
        model = models[key].train()
        loss = sum(model(images, targets).values())
        opts[key].zero_grad()
        loss.backward()
        opts[key].step()

    @torch.no_grad()
    def infer(key):
        models[key].eval()(images)

    secs = {k: {"train": 0.0, "infer": 0.0} for k in pairs}
    for k in pairs:  # warm-up
        train_step(k)
        infer(k)
    for _ in range(args.repeats):
        for k in pairs:
            for what, fn in (("train", train_step), ("infer", infer)):
                t0 = time.perf_counter()
                fn(k)
                secs[k][what] += time.perf_counter() - t0
    base = secs[pairs[0]]
    rows = []
    print(f"{'trunk':>5} {'fpn':>4} {'params':>8} {'train step':>11} {'speed-up':>9} {'inference':>10} {'speed-up':>9}")
    for k in pairs:
        tr, inf = secs[k]["train"] / args.repeats, secs[k]["infer"] / args.repeats
        row = {"trunk_width": k[0], "fpn_channels": k[1],
               "params_M": sum(p.numel() for p in models[k].parameters()) / 1e6,
               "train_step_s": tr, "inference_s": inf,
               "train_speedup": base["train"] / secs[k]["train"], "inference_speedup": base["infer"] / secs[k]["infer"]}
        rows.append(row)
        print(f"{k[0]:>5} {k[1]:>4} {row['params_M']:>7.2f}M {tr:>10.2f}s {row['train_speedup']:>8.2f}x "
              f"{inf:>9.2f}s {row['inference_speedup']:>8.2f}x")
    write_result(RESULTS, {
        "benchmark": "demo_width",
        "setup": f"resnet18_fpn_light as configs/demo.yaml except the widths, 8 generated scenes 320x192, SGD step "
                 f"incl. backward and an inference pass, timed in alternation, {args.repeats} each after one "
                 f"warm-up; baseline trunk {pairs[0][0]} x FPN {pairs[0][1]}",
        "results": rows,
        "machine": run_info(load_before=load_before),
    })


if __name__ == "__main__":
    main()
