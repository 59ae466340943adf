"""What Monte Carlo dropout costs: T box-head passes over the same proposals vs T full forward passes.

Three ways to get detections for the same 8 images (the demo preset: ``resnet18_fpn_light`` with a
64-channel FPN, random init under ``torch.manual_seed(0)``, eval mode, 8 generated scenes of
320x192 in one batch):

* ``1 pass``: ``model(images)``, the ordinary inference (``inference: single`` strategies);
* ``MC, T box-head passes``: :func:`alod.models.predict_mc` with ``passes=T``, ``dropout=0.5``:
  backbone, RPN and RoI pooling once, ``fc7`` and the predictor T times (what ``mc_dropout`` runs);
* ``T full passes``: ``predict_mc(..., passes=1)`` T times with different seeds, i.e. the naive MC
  dropout that reruns the whole detector for every sample.

Also split the single pass into backbone + RPN and RoI heads, and time the RoI heads with T passes
(:meth:`ProbRoIHeads.forward_mc`) on the same features: the MC overhead without the backbone's noise. Each
setting: the median of ``--repeats`` interleaved rounds after a warm-up round, under ``torch.no_grad``,
one torch thread by default (``--threads``).
The machine's load average before and after is recorded: on a shared CPU the seconds move with it,
the ratios much less.

    python benchmarks/bench_mc_dropout.py [--passes 10] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

from dataclasses import asdict
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import run_info, write_result

from alod.config import ModelConfig, SyntheticConfig
from alod.data.dataset import DetectionDataset, collate_detection
from alod.data.loading import load_index
from alod.data.synthetic import generate_dataset
from alod.models import MCSampling, build_detector, predict_mc

RESULTS = Path(__file__).resolve().parent / "results" / "mc_dropout.json"


def timed_rounds(settings: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each ``settings[name]()`` over ``repeats`` rounds that run every setting once,
    after one warm-up round: interleaving keeps a drifting load on a shared machine from favouring
    whichever setting ran last."""
    times: dict[str, list[float]] = {name: [] for name in settings}
    for r in range(repeats + 1):
        for name, fn in settings.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=10, help="T, Monte Carlo samples")
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (after 1 warm-up round)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; 1 by default: on a shared 2-core machine two threads' OpenMP "
                         "spin-waits made a pass 3x slower and noisier")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    T = args.passes
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "d", **asdict(SyntheticConfig(num_train=8, num_val=1)), progress=False)
        index = load_index(labels=root / "labels/det_20/det_train.json", image_root=root / "images/100k/train",
                           image_size=(320, 192), log=lambda *_: None)
        images, _ = collate_detection([DetectionDataset(index)[i] for i in range(8)])
    torch.manual_seed(0)
    model = build_detector(num_classes=10, **asdict(ModelConfig(fpn_channels=64))).eval()

    def stem():
        il, _ = model.transform(images)
        feats = model.backbone(il.tensors)
        props, _ = model.rpn(il, feats)
        return il, feats, props

    sampling = MCSampling(passes=T, dropout=args.dropout)
    with torch.no_grad():
        il, feats, props = stem()
        rows = timed_rounds({
            "single_pass_s": lambda: model(images),
            "mc_box_head_s": lambda: predict_mc(model, images, passes=T, dropout=args.dropout),
            "full_passes_s": lambda: [predict_mc(model, images, passes=1, dropout=args.dropout, seed=s)
                                      for s in range(T)],
            "backbone_rpn_s": stem,
            "roi_heads_s": lambda: model.roi_heads(feats, props, il.image_sizes),
            "roi_heads_mc_s": lambda: model.roi_heads.forward_mc(feats, props, il.image_sizes, sampling=sampling,
                                                                 keys=range(len(images))),
        }, args.repeats)
        n_dets = [len(d["boxes"]) for d in model(images)]
    rows["mc_box_head_vs_single"] = rows["mc_box_head_s"] / rows["single_pass_s"]
    rows["full_passes_vs_single"] = rows["full_passes_s"] / rows["single_pass_s"]
    rows["full_passes_vs_mc_box_head"] = rows["full_passes_s"] / rows["mc_box_head_s"]
    rows["roi_heads_mc_vs_single"] = rows["roi_heads_mc_s"] / rows["roi_heads_s"]
    # The MC overhead measured where it happens, relative to a whole single pass:
    rows["mc_overhead_vs_single"] = (rows["roi_heads_mc_s"] - rows["roi_heads_s"]) / rows["single_pass_s"]
    s = rows["single_pass_s"]
    table = [
        ("1 pass (model(images))", rows["single_pass_s"]),
        ("  of which backbone + RPN", rows["backbone_rpn_s"]),
        ("  of which RoI heads", rows["roi_heads_s"]),
        (f"MC, T={T} box-head passes (predict_mc)", rows["mc_box_head_s"]),
        (f"  of which RoI heads, T={T} passes", rows["roi_heads_mc_s"]),
        (f"T={T} full forward passes", rows["full_passes_s"]),
    ]
    print(f"{'8 images 320x192, demo preset (fpn 64), CPU':<42} {'seconds':>8} {'x 1 pass':>9}")
    for name, v in table:
        print(f"{name:<42} {v:>8.3f} {v / s:>8.2f}x")
    print(f"T full passes / MC box-head passes: {rows['full_passes_vs_mc_box_head']:.1f}x; RoI heads with T "
          f"passes / without: {rows['roi_heads_mc_vs_single']:.2f}x "
          f"(+{100 * rows['mc_overhead_vs_single']:.0f}% of a whole pass)")
    out = {
        "benchmark": "mc_dropout_cost",
        "setup": (f"resnet18_fpn_light, ModelConfig(fpn_channels=64), random init (seed 0), eval, 8 generated scenes "
                  f"320x192 in one batch, T={T}, dropout={args.dropout}; median of {args.repeats} interleaved "
                  f"rounds after a warm-up round, {args.threads} torch thread(s); detections per image {n_dets}"),
        "passes": T,
        "dropout": args.dropout,
        "results": rows,
        "machine": run_info(load_before=load_before),
    }
    if not args.no_save:
        write_result(RESULTS, out)


if __name__ == "__main__":
    main()
