"""What the full BDD100K schedule costs: counted FLOPs, measured step times, and the original's 136 A100-hours.

The original project ran the schedule of ``configs/bdd100k.yaml`` (pretrain a scorer on 70% of ~70k
images for 12 epochs, score the ~70k images once, then 14 cycles of 50 epochs where cycle n trains
on n x 1000 images) in about 34 hours on 4 A100s: 136 A100-hours. This script puts that next to
what the work is:

1. **FLOPs, counted** with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add = 2 FLOPs;
   convolutions and matrix products only: batch norm, activations, ``roi_align`` and NMS are not
   counted) for ``build_detector(num_classes=10, **asdict(load_config('configs/bdd100k.yaml').model))``
   (R50-FPN, random init, no download) on one 1280x720 image: a training step (forward with a
   synthetic target, then backward) and an inference forward; the same at 640x360 (the CPU-timed
   size); at 1280x720 also with conv1 and layer1 frozen (what torchvision builds with a pretrained
   backbone and the config's ``trainable_backbone_layers: 3``; at random init that setting is ignored
   and every layer trains, which is what the schedule's cost uses); and for the demo preset
   (``configs/demo.yaml``) on 8 generated scenes of 320x192. If the
   640x360 count predicts a 1280x720 count slower than ``--max-count-s``, the 1280x720 figures are
   the 640x360 ones scaled by pixel count (said so in the output).
2. **CPU seconds, measured** per training step (SGD, backward included) and per inference pass, the
   median of ``--repeats`` steps after ``--warmup`` steps, for R50-FPN at 640x360 (the model's
   resize set to 640x360 too, otherwise torchvision would upsample to 720 px) and the demo preset, in
   the same run; achieved GFLOP/s = counted FLOPs of that very step / its seconds.
3. **The schedule's work, computed** from the config: image-iterations and PFLOP of pretraining,
   scoring, the cycles and the validation passes (one per cycle and one after pretraining, plus the
   plateau evaluations); hours at the bf16 dense peak of an A100 (312 TFLOPS) and an H100 SXM
   (989 TFLOPS); the utilisation the original's 136 A100-hours imply; and CPU-hours on this machine
   at the measured achieved GFLOP/s (an extrapolation).
4. **Variants**: plateau stopping and warm start shorten the cycles. Their effect is read from a
   measurement, ``benchmarks/results/cycle_levers.json``, if it exists; otherwise they are recorded
   as "not measured". ``--plateau-epoch-fraction`` etc. add what-if rows, labelled user-supplied.
5. **GPU**: if ``torch.cuda.is_available()``, R50-FPN at 1280x720 training (batch ``train.batch_size``)
   and inference (batch ``train.eval_batch_size``) images/s in fp32 and under bf16 autocast.
   Without a GPU here, the images/s that ``bench_gpu.py`` measured on a lent one
   (``benchmarks/results/gpu.json``, ``--gpu-result``) give each variant's GPU-hours on that device,
   one process, for fp32, bf16 and bf16 + channels_last: the measured counterpart of the peak hours.

``benchmarks/results/cycle_levers.json``, the keys read (anything else is ignored)::

    {"plateau":       {"epoch_fraction": f, "evals_per_cycle": e, "source": "..."},
     "warm":          {"epoch_fraction": w, "source": "..."},
     "warm_plateau":  {"epoch_fraction": b, "evals_per_cycle": e, "source": "..."}}

* ``epoch_fraction`` (required for a variant to count as measured, 0 < f <= 1): the cycles'
  training image-iterations under the variant divided by those of the same cycles trained for
  ``cycles.epochs`` each from scratch, i.e. ``sum_n epochs_n * pool_n / (cycles.epochs * sum_n pool_n)``
  (cycle 1 included as it ran: from scratch under warm start). It multiplies the cycles' training
  work of the full schedule, i.e. the measured ratio is assumed to carry over to 14 cycles of 50 epochs.
* ``evals_per_cycle`` (optional, plateau variants): mean number of plateau evaluations on the
  validation split per cycle, the final evaluation not included. Absent: derived as
  ``epoch_fraction * cycles.epochs / cycles.eval_every`` and labelled derived.
* ``source`` (optional): how it was measured; copied into the result.

    python benchmarks/bench_schedule_cost.py [--repeats 3] [--threads 1] [--plateau-epoch-fraction 0.4]
"""
from __future__ import annotations

from dataclasses import asdict
import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import run_info, write_result
from torch.utils.flop_counter import FlopCounterMode

from alod.config import SyntheticConfig, load_config
from alod.data.dataset import DetectionDataset, collate_detection
from alod.data.loading import load_index
from alod.data.synthetic import generate_dataset
from alod.models import build_detector
from alod.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "schedule_cost.json"
LEVERS = Path(__file__).resolve().parent / "results" / "cycle_levers.json"
GPU_RESULT = Path(__file__).resolve().parent / "results" / "gpu.json"

A100_BF16_TFLOPS = 312.0  # dense bf16 tensor-core peak (A100 SXM)
H100_BF16_TFLOPS = 989.0  # dense bf16 tensor-core peak (H100 SXM)
ORIGINAL_A100_HOURS = 136.0  # about 34 h on 4 A100s
NUM_CLASSES = 10  # BDD100K's detection classes (the built-in scenes use the same names)
VARIANTS = ("plateau", "warm", "warm_plateau")


# ----------------------------------------------------------------------------------- inputs
def r50_inputs(width: int, height: int, batch: int) -> tuple[list, list]:
    """``batch`` random images ``float32[3, height, width]`` in [0, 1] with three fixed boxes each
    (scaled from 1280x720 pixels). The content does not change the counted FLOPs beyond the number of
    proposals that survive NMS."""
    g = torch.Generator().manual_seed(0)
    s = torch.tensor([width / 1280, height / 720] * 2)
    boxes = torch.tensor([[100.0, 300.0, 420.0, 560.0], [640.0, 340.0, 760.0, 420.0], [900.0, 200.0, 940.0, 300.0]]) * s
    images = [torch.rand(3, height, width, generator=g) for _ in range(batch)]
    targets = [{"boxes": boxes.clone(), "labels": torch.tensor([1, 3, 9])} for _ in range(batch)]
    return images, targets


def demo_inputs(n: int) -> tuple[list, list]:
    """``n`` generated demo scenes (320x192) with their real boxes, as the other demo benchmarks."""
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "d", **asdict(SyntheticConfig(num_train=n, num_val=1)), progress=False)
        index = load_index(labels=root / "labels/det_20/det_train.json", image_root=root / "images/100k/train",
                           image_size=(320, 192), log=lambda *_: None)
        return collate_detection([DetectionDataset(index)[i] for i in range(n)])


def to_device(images: list, targets: list, device: torch.device) -> tuple[list, list]:
    return ([im.to(device) for im in images],
            [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets])


# ----------------------------------------------------------------------------------- FLOPs
def count_flops(model: torch.nn.Module, images: list, targets: list) -> dict:
    """FLOPs of one training step (forward with ``targets``, then backward of the summed losses) and
    of one inference forward over ``images``, totals for the batch; and where the training forward's
    FLOPs go by top-level module (the forward only: FlopCounterMode's attribution of backward FLOPs to
    modules is unreliable, e.g. it books gradients on the FPN's parameter-free max-pool)."""
    t0 = time.perf_counter()
    model.train()
    with FlopCounterMode(display=False, depth=3) as fc:
        loss = sum(model(images, targets).values())
    fwd, per_module = fc.get_total_flops(), fc.get_flop_counts()
    with FlopCounterMode(display=False) as fc:
        loss.backward()
    bwd = fc.get_total_flops()
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(images)
    infer = fc.get_total_flops()
    parts = {}
    for name in ("backbone.body", "backbone.fpn", "rpn", "roi_heads"):
        key = next((k for k in per_module if k.endswith("." + name)), None)
        if key is not None:
            parts[name] = sum(per_module[key].values()) / fwd
    return {"train_flops": fwd + bwd, "train_forward_flops": fwd, "inference_flops": infer,
            "train_forward_share_by_module": parts, "count_s": time.perf_counter() - t0}


def per_image(c: dict, batch: int, *, scale: float = 1.0) -> dict:
    return {"train_step_gflop": c["train_flops"] / batch * scale / 1e9,
            "train_forward_gflop": c["train_forward_flops"] / batch * scale / 1e9,
            "inference_gflop": c["inference_flops"] / batch * scale / 1e9}


# ----------------------------------------------------------------------------------- timing
def time_steps(model: torch.nn.Module, images: list, targets: list, *, device: torch.device,
               amp_dtype: torch.dtype | None, warmup: int, repeats: int,
               modes: tuple[str, ...] = ("train", "inference")) -> dict:
    """Median seconds (``<mode>_s``) of a training step (forward, backward, SGD step) and of an
    inference pass over ``images``, each after ``warmup`` untimed steps, and every timed step
    (``<mode>_all_s``); ``amp_dtype`` runs both under autocast."""
    model.to(device)
    images, targets = to_device(images, targets, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def train_step():
        with autocast():
            loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad(), autocast():
            model(images)

    out = {}
    for name, fn, mode in (("train_step", train_step, model.train), ("inference", infer, model.eval)):
        if name.split("_")[0] not in modes:
            continue
        mode()
        times = []
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        out[f"{name}_s"] = statistics.median(times)
        out[f"{name}_all_s"] = times
    return out


# ----------------------------------------------------------------------------------- schedule
def schedule_work(cfg, *, train_images: int, val_images: int) -> dict:
    """The schedule's image-iterations per kind of work, from the config (baseline: every cycle
    ``cycles.epochs`` epochs, one validation pass per cycle and one after pretraining)."""
    s = cfg.schedule
    n_batches = s.num_batches or train_images // s.batch_size
    n_cycles = min(cfg.cycles.num_cycles or n_batches, n_batches)
    if n_batches * s.batch_size > train_images:
        sys.exit(f"{n_batches} batches of {s.batch_size} need more than --train-images {train_images}")
    pools = [n * s.query_size for n in range(1, n_cycles + 1)]
    partition = round(cfg.pretrain.fraction * train_images)
    inference = STRATEGIES[cfg.score.strategy].inference
    score_passes = {"none": 0, "single": 1, "stochastic": 1}[inference]
    return {
        "num_cycles": n_cycles, "pool_sizes": pools, "partition_images": partition,
        "score_strategy": cfg.score.strategy, "score_inference": inference,
        "pretrain_train": cfg.pretrain.epochs * partition,
        "cycles_train": cfg.cycles.epochs * sum(pools),
        "scoring_inference": score_passes * train_images,
        "pretrain_val_inference": val_images,
        "cycles_val_inference": n_cycles * val_images,
    }


def levers(args, cfg) -> dict:
    """The variants' epoch fractions: measured (``cycle_levers.json``), user-supplied (flags), or not measured."""
    out = {}
    measured = {}
    path = Path(args.levers)
    shown = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    if path.exists():
        try:
            measured = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            sys.exit(f"{shown}: not valid JSON ({e}); fix or remove it")
    for v in VARIANTS:
        m = measured.get(v) if isinstance(measured, dict) else None
        if isinstance(m, dict) and isinstance(m.get("epoch_fraction"), (int, float)) and 0 < m["epoch_fraction"] <= 1:
            out[v] = {"status": "measured", "epoch_fraction": float(m["epoch_fraction"]),
                      "evals_per_cycle": m.get("evals_per_cycle"), "source": m.get("source", shown)}
        else:
            out[v] = {"status": "not measured",
                      "why": f"{shown} " + (f"has no valid '{v}.epoch_fraction'" if path.exists() else "does not exist")}
        flag = getattr(args, f"{v}_epoch_fraction")
        if flag is not None:
            if not 0 < flag <= 1:
                sys.exit(f"--{v.replace('_', '-')}-epoch-fraction must be in (0, 1], got {flag}")
            out[f"{v} (what-if)"] = {"status": "user-supplied", "epoch_fraction": flag, "evals_per_cycle": None,
                                     "source": f"--{v.replace('_', '-')}-epoch-fraction {flag} (not a measurement)"}
    for name, lv in out.items():
        if lv["status"] != "not measured" and "plateau" in name and lv["evals_per_cycle"] is None:
            lv["evals_per_cycle"] = lv["epoch_fraction"] * cfg.cycles.epochs / cfg.cycles.eval_every
            lv["evals_per_cycle_derived"] = True
    return out


def cost(work: dict, *, train_tflop: float, infer_tflop: float, cpu_train_gflops: float,
         cpu_infer_gflops: float, epoch_fraction: float = 1.0, evals_per_cycle: float = 0.0,
         val_images: int) -> dict:
    """Image-iterations, PFLOP and hours of one variant (the cycles' training scaled by ``epoch_fraction``;
    ``evals_per_cycle`` extra validation passes per cycle)."""
    train_iters = work["pretrain_train"] + epoch_fraction * work["cycles_train"]
    infer_iters = (work["scoring_inference"] + work["pretrain_val_inference"] + work["cycles_val_inference"]
                   + evals_per_cycle * work["num_cycles"] * val_images)
    train_pf, infer_pf = train_iters * train_tflop / 1e3, infer_iters * infer_tflop / 1e3
    pflop = train_pf + infer_pf
    return {
        "train_image_iterations": train_iters, "inference_images": infer_iters,
        "cycles_train_image_iterations": epoch_fraction * work["cycles_train"],
        "train_pflop": train_pf, "inference_pflop": infer_pf, "total_pflop": pflop,
        "a100_hours_at_peak": pflop * 1e15 / (A100_BF16_TFLOPS * 1e12) / 3600,
        "h100_hours_at_peak": pflop * 1e15 / (H100_BF16_TFLOPS * 1e12) / 3600,
        "cpu_hours_extrapolated": (train_pf * 1e15 / (cpu_train_gflops * 1e9)
                                   + infer_pf * 1e15 / (cpu_infer_gflops * 1e9)) / 3600,
    }


# ----------------------------------------------------------------------------------- GPU
def measure_gpu(model_cfg, cfg, flops_full: dict, *, warmup: int, repeats: int,
                device: torch.device | None = None, size: tuple[int, int] = (1280, 720)) -> dict:
    """R50-FPN at ``size`` (width, height) on the GPU: images/s for training (batch
    ``train.batch_size``) and inference (batch ``train.eval_batch_size``), fp32 vs bf16 autocast;
    achieved TFLOP/s from ``flops_full`` (counted per image at batch 1). ``device`` and ``size``
    exist so that the code path can be checked on a CPU at a small size."""
    device = device or torch.device("cuda")
    cuda = device.type == "cuda"
    out = {"device": torch.cuda.get_device_name(0) if cuda else str(device), "size": list(size),
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
           "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "train_batch": cfg.train.batch_size, "inference_batch": cfg.train.eval_batch_size,
           "warmup": warmup, "repeats": repeats, "results": {}}
    train_in = r50_inputs(*size, cfg.train.batch_size)
    infer_in = r50_inputs(*size, cfg.train.eval_batch_size)
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        model = build_detector(num_classes=NUM_CLASSES, **asdict(model_cfg))
        tr = time_steps(model, *train_in, device=device, amp_dtype=dtype, warmup=warmup, repeats=repeats,
                        modes=("train",))
        inf = time_steps(model, *infer_in, device=device, amp_dtype=dtype, warmup=warmup, repeats=repeats,
                         modes=("inference",))
        r = {"train_step_s": tr["train_step_s"], "inference_s": inf["inference_s"],
             "train_images_per_s": cfg.train.batch_size / tr["train_step_s"],
             "inference_images_per_s": cfg.train.eval_batch_size / inf["inference_s"],
             "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
        r["train_tflops_achieved"] = r["train_images_per_s"] * flops_full["train_step_gflop"] / 1e3
        r["inference_tflops_achieved"] = r["inference_images_per_s"] * flops_full["inference_gflop"] / 1e3
        out["results"][label] = r
        del model
    f, b = out["results"]["fp32"], out["results"]["bf16"]
    out["bf16_vs_fp32"] = {"train": b["train_images_per_s"] / f["train_images_per_s"],
                           "inference": b["inference_images_per_s"] / f["inference_images_per_s"]}
    return out


# ----------------------------------------------------------------------------------- main
def gpu_rate_hours(variants: dict, path: Path) -> dict | None:
    """Each variant's hours on the GPU ``bench_gpu.py`` ran on, at its measured images/s (largest batch):
    training image-iterations / training rate + inference images / scoring rate, one process."""
    if not path.exists():
        return None
    g = json.loads(path.read_text())
    batch = max(r["batch"] for r in g["training"])
    train = {r["setting"]: r["images_per_s"] for r in g["training"] if r["batch"] == batch}
    infer = {r["setting"]: r["images_per_s"] for r in g["scoring"]}
    rates = {"fp32": {"train": train["fp32"], "inference": infer["fp32"]},
             "bf16": {"train": train["bf16"], "inference": infer["bf16"]},
             "bf16_channels_last": {"train": train["bf16_channels_last"], "inference": infer["bf16"]}}
    hours = {name: {k: (v["train_image_iterations"] / r["train"] + v["inference_images"] / r["inference"]) / 3600
                    for k, r in rates.items()}
             for name, v in variants.items() if "train_image_iterations" in v}
    shown = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    return {"source": "measured on a lent GPU by bench_gpu.py, read from the file", "file": shown,
            "device": g["device"], "date": g.get("machine", {}).get("date"), "batch": batch, "rates": rates,
            "hours": hours}


def get_args_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/bdd100k.yaml", help="the full-scale config")
    ap.add_argument("--demo-config", default="configs/demo.yaml")
    ap.add_argument("--train-images", type=int, default=70000, help="BDD100K training images (about 70k)")
    ap.add_argument("--val-images", type=int, default=10000, help="BDD100K validation images")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps (CPU); the median is reported")
    ap.add_argument("--r50-batch", type=int, default=1, help="images per CPU-timed R50-FPN step at 640x360")
    ap.add_argument("--gpu-warmup", type=int, default=3)
    ap.add_argument("--gpu-repeats", type=int, default=10)
    ap.add_argument("--max-count-s", type=float, default=60.0,
                    help="count 1280x720 FLOPs directly unless that is predicted to take longer than this")
    ap.add_argument("--levers", default=str(LEVERS), help="the measured variants (keys: see above)")
    ap.add_argument("--gpu-result", default=str(GPU_RESULT), help="bench_gpu.py's result from a lent GPU")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; 1 by default, as bench_mc_dropout.py: on this shared 2-core machine, "
                         "2 threads made the demo training step 4.59 s instead of 1.77 s and pushed the 640x360 FLOP "
                         "count from 9 s to 22 s; 0: torch's default")
    for v in VARIANTS:
        ap.add_argument(f"--{v.replace('_', '-')}-epoch-fraction", type=float, default=None,
                        help=f"what-if: cycle training image-iterations under '{v}' relative to the baseline "
                             "(recorded as user-supplied, not measured)")
    ap.add_argument("--no-save", action="store_true")
    return ap


def main(args) -> None:
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    cfg = load_config(ROOT / args.config)
    demo_cfg = load_config(ROOT / args.demo_config)
    full = cfg.model
    if full.weights or full.weights_backbone or full.weights_path:
        sys.exit(f"{args.config}: model weights must be None here (random init, no download)")
    small = dataclasses.replace(full, min_size=360, max_size=640)  # otherwise resized back up to 1280x720
    fw, fh = full.max_size, full.min_size

    # 1. FLOPs
    flops, notes = {}, []
    torch.manual_seed(0)
    c_small = count_flops(build_detector(num_classes=NUM_CLASSES, **asdict(small)), *r50_inputs(640, 360, 1))
    flops["r50_fpn_640x360"] = {**per_image(c_small, 1), "counted_at": [640, 360], "scaled": False,
                                "count_s": c_small["count_s"], "train_forward_share_by_module": c_small["train_forward_share_by_module"]}
    pixel_scale = (fw * fh) / (640 * 360)
    if c_small["count_s"] * pixel_scale <= args.max_count_s:
        torch.manual_seed(0)
        c_full = count_flops(build_detector(num_classes=NUM_CLASSES, **asdict(full)), *r50_inputs(fw, fh, 1))
        flops[f"r50_fpn_{fw}x{fh}"] = {**per_image(c_full, 1), "counted_at": [fw, fh], "scaled": False,
                                       "count_s": c_full["count_s"], "train_forward_share_by_module": c_full["train_forward_share_by_module"]}
        # conv1 + layer1 frozen, as torchvision builds it with a pretrained backbone and
        # trainable_backbone_layers=3 (the config's value, ignored at random init): no weight gradients
        # there, and no input gradients below layer2.
        torch.manual_seed(0)
        frozen = build_detector(num_classes=NUM_CLASSES, **asdict(full))
        for name, p in frozen.backbone.body.named_parameters():
            if not name.startswith(("layer2", "layer3", "layer4")):
                p.requires_grad_(False)
        c_frozen = count_flops(frozen, *r50_inputs(fw, fh, 1))
        flops[f"r50_fpn_{fw}x{fh}_frozen_conv1_layer1"] = {**per_image(c_frozen, 1), "counted_at": [fw, fh],
                                                         "scaled": False, "count_s": c_frozen["count_s"]}
        del frozen
    else:
        flops[f"r50_fpn_{fw}x{fh}"] = {**per_image(c_small, 1, scale=pixel_scale), "counted_at": [640, 360],
                                       "scaled": True, "count_s": c_small["count_s"]}
        notes.append(f"R50-FPN {fw}x{fh} FLOPs are the 640x360 count x {pixel_scale:.2f} (pixels): a full-size count "
                     f"was predicted to take {c_small['count_s'] * pixel_scale:.0f} s > --max-count-s {args.max_count_s:g}; "
                     "the RoI head's cost does not grow with pixels, so this slightly overstates it")
    demo_images, demo_targets = demo_inputs(8)
    torch.manual_seed(0)
    c_demo = count_flops(build_detector(num_classes=NUM_CLASSES, **asdict(demo_cfg.model)), demo_images, demo_targets)
    flops["demo_320x192"] = {**per_image(c_demo, 8), "counted_at": [320, 192], "scaled": False, "batch": 8,
                             "count_s": c_demo["count_s"], "train_forward_share_by_module": c_demo["train_forward_share_by_module"]}
    f_full = flops[f"r50_fpn_{fw}x{fh}"]

    # 2. CPU step times (same run), achieved GFLOP/s
    cpu = {}
    torch.manual_seed(0)
    r50_in = r50_inputs(640, 360, args.r50_batch)
    c_r50b = c_small if args.r50_batch == 1 else count_flops(build_detector(num_classes=NUM_CLASSES, **asdict(small)), *r50_in)
    torch.manual_seed(0)
    t = time_steps(build_detector(num_classes=NUM_CLASSES, **asdict(small)), *r50_in, device=torch.device("cpu"),
                   amp_dtype=None, warmup=args.warmup, repeats=args.repeats)
    cpu["r50_fpn_640x360"] = {"batch": args.r50_batch, **t,
                              "train_gflops_per_s": c_r50b["train_flops"] / t["train_step_s"] / 1e9,
                              "inference_gflops_per_s": c_r50b["inference_flops"] / t["inference_s"] / 1e9}
    torch.manual_seed(0)
    t = time_steps(build_detector(num_classes=NUM_CLASSES, **asdict(demo_cfg.model)), demo_images, demo_targets,
                   device=torch.device("cpu"), amp_dtype=None, warmup=max(args.warmup, 2), repeats=max(args.repeats, 5))
    cpu["demo_320x192"] = {"batch": 8, **t, "train_gflops_per_s": c_demo["train_flops"] / t["train_step_s"] / 1e9,
                           "inference_gflops_per_s": c_demo["inference_flops"] / t["inference_s"] / 1e9}
    r, d = cpu["r50_fpn_640x360"], cpu["demo_320x192"]
    cpu["r50_vs_demo_per_image"] = {
        "train_step_s": (r["train_step_s"] / r["batch"]) / (d["train_step_s"] / 8),
        "train_flop": flops["r50_fpn_640x360"]["train_step_gflop"] / flops["demo_320x192"]["train_step_gflop"]}

    # 3 + 4. the schedule, baseline and variants
    work = schedule_work(cfg, train_images=args.train_images, val_images=args.val_images)
    kw = {"train_tflop": f_full["train_step_gflop"] / 1e3, "infer_tflop": f_full["inference_gflop"] / 1e3,
          "cpu_train_gflops": r["train_gflops_per_s"], "cpu_infer_gflops": r["inference_gflops_per_s"],
          "val_images": args.val_images}
    variants = {"baseline (original: scratch, all epochs)": {"status": "config", **cost(work, **kw)}}
    base = variants["baseline (original: scratch, all epochs)"]
    base["original_a100_hours"] = ORIGINAL_A100_HOURS
    base["implied_a100_utilisation"] = base["a100_hours_at_peak"] / ORIGINAL_A100_HOURS
    base_no_val = cost({**work, "pretrain_val_inference": 0, "cycles_val_inference": 0}, **kw)
    base["without_validation"] = {k: base_no_val[k] for k in ("total_pflop", "a100_hours_at_peak", "h100_hours_at_peak")}
    base["without_validation"]["implied_a100_utilisation"] = base_no_val["a100_hours_at_peak"] / ORIGINAL_A100_HOURS
    for name, lv in levers(args, cfg).items():
        if lv["status"] == "not measured":
            variants[name] = lv
            continue
        c = cost(work, **kw, epoch_fraction=lv["epoch_fraction"], evals_per_cycle=lv.get("evals_per_cycle") or 0.0)
        c["vs_baseline"] = c["total_pflop"] / base["total_pflop"]
        variants[name] = {**lv, **c}

    # 5. GPU
    if torch.cuda.is_available():
        gpu = measure_gpu(full, cfg, f_full, warmup=args.gpu_warmup, repeats=args.gpu_repeats)
        for v in variants.values():
            if "total_pflop" in v:
                v["gpu_hours_bf16_at_measured_rate"] = (
                    v["train_pflop"] * 1e3 / gpu["results"]["bf16"]["train_tflops_achieved"]
                    + v["inference_pflop"] * 1e3 / gpu["results"]["bf16"]["inference_tflops_achieved"]) / 3600
    else:
        gpu = "not measured (no GPU on this machine)"
        measured = gpu_rate_hours(variants, Path(args.gpu_result))
        if measured is not None:
            gpu = measured

    # table
    print(f"FLOPs per image (FlopCounterMode: conv + matmul, multiply-add = 2){' [' + '; '.join(notes) + ']' if notes else ''}")
    print(f"{'model, size':<44} {'train step':>11} {'of it fwd':>10} {'inference':>10}")
    for k, v in flops.items():
        print(f"{k + (' (scaled)' if v['scaled'] else ''):<44} {v['train_step_gflop']:>8.1f} GF {v['train_forward_gflop']:>7.1f} GF "
              f"{v['inference_gflop']:>7.1f} GF")
    for k, v in flops.items():
        if v.get("train_forward_share_by_module"):
            print(f"  {k} training forward by module: "
                  + ", ".join(f"{m} {100 * s:.0f}%" for m, s in v["train_forward_share_by_module"].items()))
    print(f"\nCPU, measured (median of {args.repeats}+ steps, {torch.get_num_threads()} threads, load {load_before:.1f})")
    print(f"{'model, size, batch':<32} {'train step':>10} {'GFLOP/s':>8} {'inference':>10} {'GFLOP/s':>8}")
    for k, v in (("R50-FPN 640x360", r), ("demo preset 320x192", d)):
        print(f"{k + ', ' + str(v['batch']):<32} {v['train_step_s']:>9.2f}s {v['train_gflops_per_s']:>8.1f} "
              f"{v['inference_s']:>9.2f}s {v['inference_gflops_per_s']:>8.1f}")
    print(f"R50-FPN 640x360 / demo per image: {cpu['r50_vs_demo_per_image']['train_step_s']:.1f}x the seconds, "
          f"{cpu['r50_vs_demo_per_image']['train_flop']:.1f}x the FLOPs")
    print(f"\nSchedule ({args.config}: {work['num_cycles']} cycles x {cfg.cycles.epochs} epochs on pools "
          f"{work['pool_sizes'][0]}..{work['pool_sizes'][-1]}; pretrain {cfg.pretrain.epochs} x {work['partition_images']}; "
          f"score {work['scoring_inference']} ({work['score_strategy']}); validation {args.val_images} per evaluation)")
    print(f"  training image-iterations: pretrain {work['pretrain_train']:,}, cycles {work['cycles_train']:,}; "
          f"inference images: scoring {work['scoring_inference']:,}, validation "
          f"{work['pretrain_val_inference'] + work['cycles_val_inference']:,}")
    print(f"{'variant':<42} {'epochs':>6} {'val/cyc':>7} {'PFLOP':>7} {'A100-h':>7} {'H100-h':>7} {'CPU-h*':>9} {'x base':>7}")
    for name, v in variants.items():
        if "total_pflop" not in v:
            print(f"{name:<42} {v['status']}: {v['why']}")
            continue
        tag = "" if v["status"] in ("config", "measured") else f" [{v['status']}]"
        frac, evals = v.get("epoch_fraction", 1.0), 1 + (v.get("evals_per_cycle") or 0)
        print(f"{name + tag:<42} {frac:>6.2f} {evals:>7.1f} {v['total_pflop']:>7.0f} {v['a100_hours_at_peak']:>7.2f} "
              f"{v['h100_hours_at_peak']:>7.2f} {v['cpu_hours_extrapolated']:>9,.0f} {v.get('vs_baseline', 1.0):>6.2f}x")
    print("  epochs: cycle training relative to the baseline; val/cyc: validation passes per cycle (plateau evaluations"
          " + the final one;\n  'derived' where not measured: epoch fraction x epochs / eval_every); hours at the bf16 dense"
          " peak;\n  * CPU-hours: this machine's achieved R50-FPN 640x360 GFLOP/s (train, inference) applied to every"
          " FLOP: an extrapolation")
    for name, v in variants.items():
        if v.get("status") in ("measured", "user-supplied"):
            print(f"  {name}: {v['source']}" + ("; evaluations per cycle derived" if v.get("evals_per_cycle_derived") else ""))
    print(f"Original: {ORIGINAL_A100_HOURS:g} A100-hours for {base['a100_hours_at_peak']:.2f} A100-hours of work at peak: "
          f"{100 * base['implied_a100_utilisation']:.1f}% utilisation (inference, scoring and validation, is "
          f"{100 * base['inference_pflop'] / base['total_pflop']:.1f}% of the FLOPs; without the validation passes "
          f"{100 * base['without_validation']['implied_a100_utilisation']:.2f}%)")
    if isinstance(gpu, dict) and "hours" in gpu:
        print(f"\nGPU-hours at the images/s bench_gpu.py measured on one {gpu['device']} (batch {gpu['batch']}, "
              f"{gpu['file']}):")
        print(f"{'variant':<42} " + " ".join(f"{k:>18}" for k in gpu["rates"]))
        for name, hours in gpu["hours"].items():
            print(f"{name:<42} " + " ".join(f"{h:>17.1f}h" for h in hours.values()))
        print("  rates (train / inference img/s): " + "; ".join(
            f"{k} {r['train']:.1f} / {r['inference']:.1f}" for k, r in gpu["rates"].items()))
    elif isinstance(gpu, dict):
        print(f"\nGPU {gpu['device']}: R50-FPN {fw}x{fh}")
        for k, v in gpu["results"].items():
            print(f"  {k}: train {v['train_images_per_s']:.1f} img/s ({v['train_tflops_achieved']:.0f} TFLOP/s), "
                  f"inference {v['inference_images_per_s']:.1f} img/s ({v['inference_tflops_achieved']:.0f} TFLOP/s)")
        print(f"  bf16 / fp32: train {gpu['bf16_vs_fp32']['train']:.2f}x, inference {gpu['bf16_vs_fp32']['inference']:.2f}x")
    else:
        print(f"\nGPU: {gpu}")

    wall = time.perf_counter() - t_start
    print(f"wall time {wall:.0f} s")
    out = {
        "benchmark": "schedule_cost",
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "wall_s": wall,
        "setup": (f"FLOPs: torch.utils.flop_counter.FlopCounterMode (conv/matmul only, multiply-add = 2), "
                  f"build_detector(num_classes={NUM_CLASSES}, **asdict({args.config} model)) random init, batch 1 random "
                  f"images with 3 boxes; demo preset on 8 generated scenes. CPU: fp32, SGD step incl. backward, "
                  f"median after warm-up; R50-FPN at 640x360 with min_size=360, max_size=640. Peaks: A100 "
                  f"{A100_BF16_TFLOPS:g}, H100 SXM {H100_BF16_TFLOPS:g} TFLOPS bf16 dense."),
        "notes": notes,
        "flops_per_image": flops,
        "cpu_measured": cpu,
        "schedule": {"config": args.config, "train_images": args.train_images, "val_images": args.val_images,
                     "cycles_epochs": cfg.cycles.epochs, "cycles_eval_every": cfg.cycles.eval_every, **work},
        "variants": variants,
        "levers_file": str(Path(args.levers).resolve().relative_to(ROOT) if Path(args.levers).resolve().is_relative_to(ROOT)
                           else args.levers) + ("" if Path(args.levers).exists() else " (absent)"),
        "peaks_tflops_bf16_dense": {"a100": A100_BF16_TFLOPS, "h100_sxm": H100_BF16_TFLOPS},
        "gpu": gpu,
        "machine": run_info(load_before=load_before),
    }
    if not args.no_save:
        write_result(RESULTS, out)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
