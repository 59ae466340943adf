"""Why the demo preset's FPN is 64 channels wide: training-step and inference time per FPN width.

Baseline: ``fpn_channels=256`` (torchvision's FPN width), measured in the same run. Images are
generated demo scenes (320x192, batch of 8) with their real boxes, so the RoI sampling is realistic.

    python benchmarks/bench_demo_preset.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import torch

from _inputs import scene_batch, sgd_step
from _machine import machine_info, write_result

from alod.config import ModelConfig

RESULTS = Path(__file__).resolve().parent / "results" / "demo_preset.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per setting (after 2 warm-up steps)")
    ap.add_argument("--widths", default="256,128,64")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, targets, _ = scene_batch(Path(tmp), 8, 320, 192)
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        model, step = sgd_step(ModelConfig(fpn_channels=width), images, targets)
        for _ in range(2):
            step()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            step()
        train_s = (time.perf_counter() - t0) / args.repeats
        model.eval()
        with torch.no_grad():
            model(images)
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                model(images)
        infer_s = (time.perf_counter() - t0) / args.repeats
        rows.append({"fpn_channels": width, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                     "train_step_s": train_s, "inference_s": infer_s})
    base = next(r for r in rows if r["fpn_channels"] == 256) if any(r["fpn_channels"] == 256 for r in rows) else rows[0]
    print(f"{'fpn':>5} {'params':>8} {'train step (8 img)':>19} {'speed-up':>9} {'inference':>10} {'speed-up':>9}")
    for r in rows:
        r["train_speedup_vs_256"] = base["train_step_s"] / r["train_step_s"]
        r["inference_speedup_vs_256"] = base["inference_s"] / r["inference_s"]
        print(f"{r['fpn_channels']:>5} {r['params_M']:>7.2f}M {r['train_step_s']:>18.2f}s {r['train_speedup_vs_256']:>8.2f}x "
              f"{r['inference_s']:>9.2f}s {r['inference_speedup_vs_256']:>8.2f}x")
    out = {
        "benchmark": "demo_preset_fpn_width",
        "setup": "resnet18_fpn_light, 8 generated scenes 320x192, batch 8, SGD step incl. backward; baseline fpn 256",
        "results": rows,
        "machine": {**machine_info(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "date": datetime.date.today().isoformat()},
    }
    write_result(RESULTS, out)


if __name__ == "__main__":
    main()
