"""GPU figures of the cost issue: R50-FPN (``configs/bdd100k.yaml``'s model) on real BDD100K frames.

* **Training** images/s at 1280x720 per batch size: fp32 (PyTorch's defaults: TF32 convolutions,
  fp32 matmuls) against bf16 autocast (``train.amp: gpu``), and bf16 with ``channels_last``
  weights; timed in alternation after warm-up steps, synchronising the GPU around each step.
* **Scoring** (inference) images/s, fp32 against bf16 (``score.amp: gpu``).
* **Decoding** frames/s of the 50 real frames: PIL and ``torchvision.io.decode_jpeg`` on one CPU
  thread (what one DataLoader worker gives) against ``decode_jpeg(device="cuda")`` (nvJPEG, batched),
  and how far nvJPEG's pixels are from the CPU decoder's (decoders may round differently, which
  would make GPU decoding a results-changing option, not a free default).

Each part's result is written as soon as it is measured, so a run stopped by a time limit keeps
what it finished. Needs a GPU for its figures; ``--device cpu`` runs the same code small (a check
of the script, not a result).

    python benchmarks/bench_gpu.py [--batches 4,8] [--repeats 10] [--out PATH]
"""
from __future__ import annotations

from dataclasses import asdict
import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from _inputs import cpu_decoders
from _machine import run_info, write_result

from alod.config import load_config
from alod.data.dataset import DetectionDataset, decode_rgb
from alod.data.loading import load_index
from alod.models import build_detector

REPO = Path(__file__).resolve().parent.parent
FRAMES = REPO.parent / "shared" / "data" / "bdd100k_val50"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _alternate(steps: dict, repeats: int, device: torch.device) -> dict:
    """Seconds per call of each step function, timed in alternation (ABAB...)."""
    total = {k: 0.0 for k in steps}
    for _ in range(repeats):
        for k, fn in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            total[k] += time.perf_counter() - t0
    return {k: v / repeats for k, v in total.items()}


def _frames(root: Path, n: int, device: torch.device):
    index = load_index(labels=root / "det_val50.json", image_root=root / "images", log=lambda *_: None)
    ds = DetectionDataset(index)
    items = [ds[i % len(ds)] for i in range(n)]
    images = [im.to(device) for im, _ in items]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for _, t in items]
    targets = [{k: t[k] for k in ("boxes", "labels")} for t in targets]
    return images, targets, sorted((root / "images").rglob("*.jpg"))


def _trainer(model_cfg, images, targets, device, *, bf16: bool, channels_last: bool = False, warmup: int = 3):
    torch.manual_seed(0)
    model = build_detector(num_classes=10, **asdict(model_cfg)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):  # allocations, cuDNN's algorithm choice
        step()
    return step


def _predictor(model_cfg, images, device, *, bf16: bool, warmup: int = 3):
    torch.manual_seed(0)
    model = build_detector(num_classes=10, **asdict(model_cfg)).to(device).eval()

    @torch.no_grad()
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(images)

    for _ in range(warmup):
        step()
    return step


def _decode(files: list[Path], device: torch.device, repeats: int) -> dict:
    from torchvision.io import decode_jpeg

    blobs = [f.read_bytes() for f in files]
    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    cpu = cpu_decoders(blobs)

    steps = {"pil_1_thread": cpu["pil"], "torchvision_cpu_1_thread": cpu["torchvision"]}
    if device.type == "cuda":
        def nvjpeg():
            decode_jpeg(datas, device=device)

        nvjpeg()  # warm-up: nvJPEG's handles and buffers
        steps["nvjpeg_gpu_batched"] = nvjpeg
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        secs = _alternate(steps, repeats, device)
    finally:
        torch.set_num_threads(threads)
    out = {"frames": len(blobs), "images_per_s": {k: len(blobs) / v for k, v in secs.items()}}
    if device.type == "cuda":
        gpu = decode_jpeg(datas, device=device)
        diffs = [(g.cpu().int() - decode_rgb(b).int()).abs() for g, b in zip(gpu, blobs)]
        out["nvjpeg_vs_cpu_pixels"] = {
            "max_abs_diff": int(max(d.max() for d in diffs)),
            "mean_abs_diff": float(sum(d.float().mean() for d in diffs) / len(diffs)),
            "identical_frames": int(sum(bool((d == 0).all()) for d in diffs)),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="1280x720", help="training/scoring size WxH (the model resizes to it)")
    ap.add_argument("--batches", default="4,8", help="batch sizes per device, comma-separated")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--frames", default=str(FRAMES), help="folder with det_val50.json and images/")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA device here (use --device cpu to check the script itself)")
    t_start = time.perf_counter()
    w, h = (int(v) for v in args.size.lower().split("x"))
    model_cfg = replace(load_config(REPO / "configs" / "bdd100k.yaml").model, min_size=min(w, h), max_size=max(w, h))
    batches = [int(b) for b in args.batches.split(",")]
    result = {
        "benchmark": "gpu",
        "setup": f"fasterrcnn_resnet50_fpn of configs/bdd100k.yaml, random init, 10 classes, real BDD100K frames "
                 f"with their boxes at {w}x{h}; SGD step incl. backward; settings timed in alternation, "
                 f"{args.repeats} steps each after {args.warmup} warm-up steps",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "tf32": {"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "training": [], "scoring": [],
        "machine": run_info(load_before=os.getloadavg()[0]),
    }
    out = Path(args.out)
    root = Path(args.frames)
    images, targets, files = _frames(root, max(batches), device)

    for b in batches:
        secs = _alternate({
            "fp32": _trainer(model_cfg, images[:b], targets[:b], device, bf16=False, warmup=args.warmup),
            "bf16": _trainer(model_cfg, images[:b], targets[:b], device, bf16=True, warmup=args.warmup),
            "bf16_channels_last": _trainer(model_cfg, images[:b], targets[:b], device, bf16=True,
                                           channels_last=True, warmup=args.warmup),
        }, args.repeats, device)
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        for k, s in secs.items():
            result["training"].append({"batch": b, "setting": k, "step_s": s, "images_per_s": b / s,
                                       "vs_fp32": secs["fp32"] / s})
        result["training"][-1]["peak_gpu_memory_gib_so_far"] = mem
        print(f"train batch {b}: " + ", ".join(f"{k} {b / s:.1f} img/s" for k, s in secs.items()), flush=True)
        write_result(out, result)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    b = max(batches)
    secs = _alternate({
        "fp32": _predictor(model_cfg, images[:b], device, bf16=False, warmup=args.warmup),
        "bf16": _predictor(model_cfg, images[:b], device, bf16=True, warmup=args.warmup),
    }, args.repeats, device)
    for k, s in secs.items():
        result["scoring"].append({"batch": b, "setting": k, "batch_s": s, "images_per_s": b / s,
                                  "vs_fp32": secs["fp32"] / s})
    print(f"score batch {b}: " + ", ".join(f"{k} {b / s:.1f} img/s" for k, s in secs.items()), flush=True)
    write_result(out, result)

    result["decoding"] = _decode(files, device, repeats=max(2, args.repeats // 2))
    print("decode:", result["decoding"], flush=True)
    result["wall_s"] = time.perf_counter() - t_start
    write_result(out, result)


if __name__ == "__main__":
    main()
