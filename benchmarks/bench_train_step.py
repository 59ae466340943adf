"""Training images/s per lever of the cost issue, each against its baseline in the same run.

* **Precision**: fp32 against bf16 autocast (``train.amp: all`` on a CPU), for the demo preset (8
  generated scenes of 320x192) and for R50-FPN at a BDD-like size a CPU can time (``--bdd-size``,
  default 480x270, batch 1; BDD100K is 1280x720).
* **Memory format**: NCHW against ``channels_last`` weights (the batched images follow the first
  convolution), demo preset, fp32.
* **Decoding**: PIL ``convert("RGB")`` against ``torchvision.io.decode_jpeg`` (what
  :func:`alod.data.dataset.decode_rgb` uses), frames/s on one thread, on the 50 real BDD100K frames
  of ``../shared/data`` (1280x720) and on generated demo scenes.

The settings of one comparison are timed in alternation (ABAB...), so a machine that gets busier
during the run slows both alike; ratios, not seconds, are the result.

    python benchmarks/bench_train_step.py [--repeats 4] [--skip-bdd]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _inputs import cpu_decoders, scene_batch, sgd_step
from _machine import run_info, write_result

from alod.config import ModelConfig, load_config

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "train_step.json"
BDD_FRAMES = REPO.parent / "shared" / "data" / "bdd100k_val50"


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))


def _trainer(model_cfg: ModelConfig, images, targets, *, bf16: bool = False, channels_last: bool = False):
    _, step = sgd_step(model_cfg, images, targets, bf16=bf16, channels_last=channels_last)
    step()  # warm-up (allocations, oneDNN kernel choice)
    return step


def _alternate(steps: dict, repeats: int) -> dict:
    """Seconds per call of each step function, timed in alternation."""
    total = {k: 0.0 for k in steps}
    for _ in range(repeats):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            total[k] += time.perf_counter() - t0
    return {k: v / repeats for k, v in total.items()}


def _decode_rates(files: list[Path], repeats: int) -> dict:
    blobs = [f.read_bytes() for f in files]
    secs = _alternate(cpu_decoders(blobs), repeats)
    return {k: len(blobs) / v for k, v in secs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=4, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--bdd-size", default="480x270", help="R50-FPN image size WxH (BDD100K is 1280x720)")
    ap.add_argument("--bdd-batch", type=int, default=1)
    ap.add_argument("--skip-bdd", action="store_true", help="skip R50-FPN (the slowest part)")
    ap.add_argument("--note", default="", help="what else the machine was doing (recorded)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    rows = []
    demo_model = load_config(REPO / "configs" / "demo.yaml").model
    with tempfile.TemporaryDirectory() as tmp:
        images, targets, demo_files = scene_batch(Path(tmp), 8, 320, 192)
        secs = _alternate({
            "fp32": _trainer(demo_model, images, targets),
            "bf16": _trainer(demo_model, images, targets, bf16=True),
            "channels_last": _trainer(demo_model, images, targets, channels_last=True),
        }, args.repeats)
        for k, s in secs.items():
            rows.append({"model": "demo preset (resnet18_fpn_light)", "input": "8 x 320x192", "setting": k,
                         "step_s": s, "images_per_s": 8 / s, "vs_fp32": secs["fp32"] / s})
        if not args.skip_bdd:
            w, h = (int(v) for v in args.bdd_size.lower().split("x"))
            bdd_imgs, bdd_targets, _ = scene_batch(Path(tmp), args.bdd_batch, w, h)
            # At the bench size, not resized up to bdd100k.yaml's 720 px.
            r50 = replace(load_config(REPO / "configs" / "bdd100k.yaml").model, min_size=min(w, h), max_size=max(w, h))
            secs = _alternate({
                "fp32": _trainer(r50, bdd_imgs, bdd_targets),
                "bf16": _trainer(r50, bdd_imgs, bdd_targets, bf16=True),
            }, max(1, args.repeats // 2))
            for k, s in secs.items():
                rows.append({"model": "fasterrcnn_resnet50_fpn (bdd100k.yaml)", "input": f"{args.bdd_batch} x {w}x{h}",
                             "setting": k, "step_s": s, "images_per_s": args.bdd_batch / s, "vs_fp32": secs["fp32"] / s})
        torch.set_num_threads(1)  # decoding runs in DataLoader workers, one thread each: per-core rates
        decode = {"demo scenes 320x192": _decode_rates(demo_files, 20)}
        bdd = sorted(BDD_FRAMES.rglob("*.jpg"))
        if bdd:
            decode["BDD100K frames 1280x720"] = _decode_rates(bdd, 3)
    print(f"{'model':<40} {'input':<12} {'setting':<14} {'step s':>7} {'img/s':>7} {'vs fp32':>8}")
    for r in rows:
        print(f"{r['model']:<40} {r['input']:<12} {r['setting']:<14} {r['step_s']:>7.3f} {r['images_per_s']:>7.2f} "
              f"{r['vs_fp32']:>7.2f}x")
    print(f"\n{'decoding (1 thread)':<28} {'PIL img/s':>10} {'torchvision img/s':>18} {'ratio':>6}")
    for name, rate in decode.items():
        print(f"{name:<28} {rate['pil']:>10.0f} {rate['torchvision']:>18.0f} {rate['torchvision'] / rate['pil']:>5.2f}x")
    out = {
        "benchmark": "train_step",
        "command": "python benchmarks/bench_train_step.py " + " ".join(
            f"--{k.replace('_', '-')} {v!r}" if not isinstance(v, bool) else (f"--{k.replace('_', '-')}" if v else "")
            for k, v in vars(args).items()).strip(),
        "setup": "SGD step incl. backward on generated scenes with their boxes; settings timed in alternation; "
                 "bf16 = torch.autocast('cpu', bfloat16); decoding on one thread",
        "training": rows,
        "decoding_images_per_s": decode,
        "wall_s": time.perf_counter() - t_start,
        "machine": {**run_info(load_before=load_before), "cpu_flags": _cpu_flags(), "threads": threads,
                    "note": args.note},
    }
    write_result(RESULTS, out)


if __name__ == "__main__":
    main()
