"""Pool scoring speed and memory: alod's sharded ``score_pool`` against a plain per-image loop.

Generates (in a temporary folder, never in the repository) a pool of small JPEGs, by default 70,000
images of 64x48 px, the size of BDD100K's train split at a size a 2-core CPU can score. A few hundred
distinct scenes are drawn with :func:`alod.data.synthetic.generate_scene`, encoded once, and each file
of the pool gets the bytes of one of them under its own name (files are read and decoded one by one
either way, so reusing scene pixels changes nothing for the timings). The index is built with
:meth:`DetectionIndex.from_lists` (no boxes, BDD100K's 10 classes).

The detector is the ``resnet18_fpn_light`` preset sized for the images (``min_size``/``max_size``
from the image size, 32 FPN channels, anchors 8-64 px, 200/100 RPN proposals, box head width 64),
random init under ``torch.manual_seed(0)``, eval mode. Its weights are saved once and every
measurement loads the same file, so all cases score with the same model.

Each case runs in a fresh Python process that imports torch and alod and builds the model before
its clock starts; its peak RSS is read from ``VmHWM`` (``ru_maxrss`` would keep the parent's peak
across ``exec``):

* ``imports + model``: nothing else, the memory floor of every row;
* ``score_pool (full)``: alod's scoring of the whole pool, strategy ``entropy`` (``aggregate: sum``),
  batches of 16, shards of 1000 images, 2 DataLoader workers. The workers' own peak RSS is reported
  apart (``ru_maxrss`` of the largest child; Linux counts the pages a forked worker shares with its
  parent in it);
* ``score_pool (resume)``: the last 3 shard files deleted, ``score_pool`` rerun on the same folder: only
  the missing shards are recomputed (plus reading all shards back);
* ``per-image loop``: the naive way, over the first ``--baseline-images`` images: for each image PIL
  open, to tensor, ``model([img])`` under ``torch.no_grad``, the full detections dict (numpy arrays)
  appended to a list. Its RSS growth per image gives an *extrapolated* peak for the whole pool (not
  measured: a linear fit of RSS against images done, over the last 80% of the loop).

The loop's image scores (entropy, sum, computed from its kept detections) are compared with the
scores ``score_pool`` wrote for the same images, to show both scored with the same model.

Usage::

    nice -n 19 python benchmarks/bench_scoring.py                         # full size, writes results
    nice -n 19 python benchmarks/bench_scoring.py --images 2000 --baseline-images 300 --no-save
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine_info as base_machine_info
from _machine import write_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scoring_cpu.json"

STRATEGY = "entropy"
PARAMS = {"aggregate": "sum"}
BATCH_SIZE = 16
SHARD_SIZE = 1000
NUM_WORKERS = 2
RESUME_DELETE = 3


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=70_000, help="images in the generated pool")
    p.add_argument("--baseline-images", type=int, default=3_000, help="images the per-image loop runs over")
    p.add_argument("--size", default="64x48", help="image size WxH in pixels (default 64x48)")
    p.add_argument("--scenes", type=int, default=300, help="distinct scenes drawn for the pool's files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="folder for the generated pool (default: a new temp dir)")
    p.add_argument("--progress", action="store_true", help="show score_pool's progress bar (stderr)")
    p.add_argument("--note", default="", help="free text stored in the results (e.g. what else ran)")
    p.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.relative_to(REPO)}")
    return p


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must look like 64x48, got {text!r}") from None
    if w < 16 or h < 16:
        raise SystemExit(f"--size {text}: images must be at least 16x16")
    return w, h


def model_config(width: int, height: int):
    from alod.config import ModelConfig

    return ModelConfig(
        name="resnet18_fpn_light", min_size=min(width, height), max_size=max(width, height), fpn_channels=32,
        anchor_sizes=(8, 16, 32, 64), rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_test=200, box_head_width=64,
    )


def generate_pool(root: Path, *, images: int, width: int, height: int, scenes: int, seed: int) -> dict:
    """Write ``images`` JPEGs under ``root/images`` and the index ``root/index.npz``."""
    from alod.data.bdd100k import BDD100K_CLASSES
    from alod.data.index import DetectionIndex
    from alod.data.synthetic import generate_scene

    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    blobs = []
    for i in range(min(scenes, images)):
        img, _, _ = generate_scene(np.random.default_rng([seed, i]), width=width, height=height, max_objects=3)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
    names = [f"pool_{i:06d}.jpg" for i in range(images)]
    for i, name in enumerate(names):
        with open(img_dir / name, "wb") as f:
            f.write(blobs[i % len(blobs)])
    empty_boxes, empty_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    index = DetectionIndex.from_lists(
        image_root=img_dir, names=names, widths=np.full(images, width), heights=np.full(images, height),
        boxes_per_image=[empty_boxes] * images, labels_per_image=[empty_labels] * images,
        classes=BDD100K_CLASSES, source="bench_scoring (generated)",
    )
    index.save(root / "index.npz")
    return {"images": images, "distinct_scenes": len(blobs), "width": width, "height": height,
            "jpeg_bytes_mean": round(float(np.mean([len(b) for b in blobs])), 1)}


# Child processes: import everything and build the model first, then time only the operation.
_CHILD = """
import json, resource, sys, time
from dataclasses import asdict
from pathlib import Path
import numpy as np
import torch
from alod.data.dataset import DetectionDataset
from alod.data.index import DetectionIndex
from alod.models import build_detector
from alod.stages.scoring import load_shards, score_pool
sys.path.insert(0, {bench_dir!r})
from bench_scoring import model_config

def rss_now():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS:")][0].split()[1]) / 1024

root = Path(sys.argv[1])
args = json.loads(sys.argv[2])
index = DetectionIndex.load(root / "index.npz")
dataset = DetectionDataset(index)
model = build_detector(num_classes=index.num_classes, **asdict(model_config(args["width"], args["height"])))
model.load_state_dict(torch.load(root / "model.pt", map_location="cpu", weights_only=True))
model.eval()
shard_dir = root / "shards"
quiet = lambda *a: None
extra = {{}}
rss_start = rss_now()
t = time.perf_counter()
{body}
seconds = time.perf_counter() - t
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
extra.update(seconds=seconds, peak_rss_mb=int(hwm.split()[1]) / 1024, rss_before_mb=rss_start,
             torch_threads=torch.get_num_threads())
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if kids:
    extra["worker_peak_rss_mb"] = kids
print(json.dumps(extra))
"""

_SCORE = """
scores = score_pool(model, dataset, strategy={strategy!r}, params={params!r}, shard_dir=shard_dir,
                    shard_size={shard_size}, batch_size={batch_size}, num_workers={num_workers},
                    progress=args["progress"], log=quiet)
extra["scores_finite"] = bool(np.isfinite(scores).all())
extra["n_scores"] = len(scores)
"""

_LOOP = """
from PIL import Image
from torchvision.transforms.functional import to_tensor
from alod.strategies import score_images
n = args["baseline_images"]
marks = sorted(set(np.linspace(0, n, 11).astype(int).tolist()))
curve = []
kept = []
with torch.no_grad():
    for i in range(n):
        if i in marks:
            curve.append((i, rss_now()))
        with Image.open(index.image_path(i)) as im:
            img = to_tensor(im.convert("RGB"))
        out = model([img])[0]
        kept.append({{k: v.numpy() for k, v in out.items()}})
curve.append((n, rss_now()))
extra["rss_curve"] = curve
extra["kept_nbytes"] = int(sum(a.nbytes for d in kept for a in d.values()))
extra["boxes_kept"] = int(sum(len(d["scores"]) for d in kept))
np.save(root / "loop_scores.npy", score_images(kept, strategy={strategy!r}, params={params!r}))
"""

CASES = {
    "imports + model": "pass",
    "score_pool (full)": _SCORE,
    "score_pool (resume)": _SCORE,
    "per-image loop": _LOOP,
}


def measure(body: str, root: Path, args: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = _CHILD.format(bench_dir=str(Path(__file__).resolve().parent), body=body.format(
        strategy=STRATEGY, params=PARAMS, shard_size=SHARD_SIZE, batch_size=BATCH_SIZE, num_workers=NUM_WORKERS))
    out = subprocess.run([sys.executable, "-c", code, str(root), json.dumps(args)],
                         stdout=subprocess.PIPE, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed (exit {out.returncode}); its stderr is above")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine_info() -> dict:
    import torch
    import torchvision

    return {
        **base_machine_info(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "niceness": os.nice(0),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def linear_growth(curve: list) -> tuple[float, float, int]:
    """``(MB per image, RSS MB at the fit's first point, its image count)`` over the last 80% of the loop."""
    pts = np.array(curve, dtype=float)
    pts = pts[pts[:, 0] >= 0.2 * pts[-1, 0]]
    if len(pts) < 2:
        pts = np.array(curve, dtype=float)[-2:]
    slope, intercept = np.polyfit(pts[:, 0], pts[:, 1], 1)
    return float(slope), float(intercept + slope * pts[0, 0]), int(pts[0, 0])


def main(args: argparse.Namespace) -> dict:
    import torch

    from alod.models import build_detector
    from dataclasses import asdict

    width, height = parse_size(args.size)
    n_base = min(args.baseline_images, args.images)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    info = machine_info()
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="alod-bench-scoring-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        pool = generate_pool(root, images=args.images, width=width, height=height, scenes=args.scenes,
                             seed=args.seed)
        pool["generate_seconds"] = round(time.perf_counter() - t, 2)
        print(f"generated {pool['images']} images of {width}x{height} ({pool['distinct_scenes']} distinct "
              f"scenes, ~{pool['jpeg_bytes_mean']:.0f} B each) in {pool['generate_seconds']:.1f} s", flush=True)
        cfg = model_config(width, height)
        torch.manual_seed(0)
        model = build_detector(num_classes=10, **asdict(cfg)).eval()
        torch.save(model.state_dict(), root / "model.pt")
        n_params = sum(p.numel() for p in model.parameters())
        del model

        child_args = {"width": width, "height": height, "baseline_images": n_base, "progress": args.progress}
        n_shards = (args.images + SHARD_SIZE - 1) // SHARD_SIZE
        rows: dict[str, dict] = {}
        for name, body in CASES.items():
            if name == "score_pool (resume)":
                deleted = [f"shard_{k:05d}.npz" for k in range(max(0, n_shards - RESUME_DELETE), n_shards)]
                for f in deleted:
                    (root / "shards" / f).unlink()
            print(f"  {name} ...", end="", flush=True)
            load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            r = measure(body, root, child_args)
            r["load_avg_1m_before_after"] = [load_before, os.getloadavg()[0] if load_before is not None else None]
            if name == "score_pool (full)":
                r["images_scored"] = args.images
            elif name == "score_pool (resume)":
                r["images_scored"] = args.images - max(0, n_shards - RESUME_DELETE) * SHARD_SIZE
                r["shards_deleted"] = deleted
            elif name == "per-image loop":
                r["images_scored"] = n_base
            if not name.startswith("score_pool"):
                r.pop("worker_peak_rss_mb", None)
            rows[name] = r
            msg = f" {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
            if r.get("images_scored"):
                msg += f", {r['images_scored'] / r['seconds']:.1f} img/s"
            print(msg, flush=True)

        # Same model in both: the loop's scores against score_pool's for the same images.
        from alod.stages.scoring import load_shards

        pool_scores = load_shards(root / "shards", n_shards)[:n_base]
        loop_scores = np.load(root / "loop_scores.npy")
        diff = np.abs(pool_scores - loop_scores)
        check = {
            "images": n_base,
            "max_abs_diff": float(diff.max()) if n_base else 0.0,
            "max_rel_diff": float((diff / np.maximum(np.abs(loop_scores), 1e-9)).max()) if n_base else 0.0,
            "note": "score_pool stores per-box entropy as float16 but the image score as float64; small "
                    "differences come from batched (16) vs single-image inference",
        }
        shard_bytes = sum(p.stat().st_size for p in (root / "shards").glob("shard_*.npz"))
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None

    base = rows["imports + model"]["peak_rss_mb"]
    full, resume, loop = rows["score_pool (full)"], rows["score_pool (resume)"], rows["per-image loop"]
    loop_ips = loop["images_scored"] / loop["seconds"]
    for name, r in rows.items():
        if r.get("images_scored"):
            r["images_per_second"] = round(r["images_scored"] / r["seconds"], 2)
            r["speed_vs_loop"] = round(r["images_per_second"] / loop_ips, 3)
        r["extra_rss_mb"] = round(r["peak_rss_mb"] - base, 1)
        for k in ("seconds", "peak_rss_mb", "rss_before_mb", "worker_peak_rss_mb"):
            if k in r:
                r[k] = round(r[k], 3 if k == "seconds" else 1)

    slope, rss0, n0 = linear_growth(loop["rss_curve"])
    per_image_bytes = loop["kept_nbytes"] / max(1, n_base)
    extrapolation = {
        "what": f"NOT MEASURED: the per-image loop's peak RSS extrapolated from {n_base} to {args.images} "
                f"images, linear in images done (fit over the last 80% of the loop)",
        "rss_growth_kb_per_image": round(slope * 1024, 3),
        "extrapolated_peak_rss_mb": round(rss0 + slope * (args.images - n0), 1),
        "kept_detections_bytes_per_image": round(per_image_bytes, 1),
        "kept_detections_numpy_mb_for_pool": round(per_image_bytes * args.images / 2**20, 1),
        "boxes_kept_per_image": round(loop["boxes_kept"] / max(1, n_base), 2),
    }
    resume_info = {
        "seconds_full": full["seconds"],
        "seconds_resume": resume["seconds"],
        "resume_over_full": round(resume["seconds"] / full["seconds"], 4),
        "shards_total": n_shards,
        "shards_recomputed": len(resume["shards_deleted"]),
        "fraction_of_pool_recomputed": round(resume["images_scored"] / args.images, 4),
    }

    print(f"\n{'case':<22} {'images':>7} {'time s':>9} {'img/s':>8} {'x loop':>7} {'peak MB':>8} {'+MB':>7}")
    for name, r in rows.items():
        if not r.get("images_scored"):
            print(f"{name:<22} {'':>7} {'':>9} {'':>8} {'':>7} {r['peak_rss_mb']:>8.0f}")
            continue
        print(f"{name:<22} {r['images_scored']:>7} {r['seconds']:>9.1f} {r['images_per_second']:>8.1f} "
              f"{r['speed_vs_loop']:>7.2f} {r['peak_rss_mb']:>8.0f} {r['extra_rss_mb']:>7.0f}")
    print(f"{'per-image loop, ' + str(args.images) + ' img':<22} {'':>7} {'':>9} {'':>8} {'':>7} "
          f"{extrapolation['extrapolated_peak_rss_mb']:>8.0f}  <- EXTRAPOLATED, not measured "
          f"({extrapolation['rss_growth_kb_per_image']:.2f} KB/image)")
    print(f"(+MB: above the imports+model process; x loop: speed / per-image loop; score_pool's "
          f"{NUM_WORKERS} DataLoader workers peaked at {full.get('worker_peak_rss_mb', float('nan')):.0f} MB RSS each "
          f"at most, shared pages included)")
    print(f"resume: {resume_info['shards_recomputed']} of {n_shards} shards recomputed in "
          f"{resume['seconds']:.1f} s vs {full['seconds']:.1f} s full ({100 * resume_info['resume_over_full']:.1f}%)")
    print(f"same model check: max |score_pool - loop| over {n_base} images = {check['max_abs_diff']:.3g} "
          f"(relative {check['max_rel_diff']:.3g})")

    result = {
        "benchmark": "scoring_cpu",
        "pool": {**pool, "index": "DetectionIndex.from_lists, 0 boxes per image, BDD100K_CLASSES (10)",
                 "shard_bytes_total": shard_bytes},
        "model": {"preset": cfg.name, "config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
                  "parameters": n_params, "init": "random, torch.manual_seed(0), eval mode; one state dict for all cases"},
        "scoring": {"strategy": STRATEGY, "params": PARAMS, "batch_size": BATCH_SIZE, "shard_size": SHARD_SIZE,
                    "num_workers": NUM_WORKERS, "device": "cpu", "amp": False},
        "baseline": {"images": n_base, "how": "per image: PIL open, to_tensor, model([img]) under torch.no_grad, "
                                              "full detections dict as numpy kept in a list"},
        "results": rows,
        "loop_extrapolation": extrapolation,
        "resume": resume_info,
        "same_model_check": check,
        "machine": {**info, "load_avg_at_start": load_start, "load_avg_at_end": load_end},
        "note": ("one fresh process per case; seconds exclude interpreter start, imports and model build. "
                 + args.note).strip(),
        "command": "python " + shlex.join(sys.argv),
    }
    if not args.no_save:
        write_result(RESULTS, result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
