"""DataLoader workers that persist across epochs, against a fresh DataLoader per epoch (what
:func:`alod.engine.fit` builds: each epoch's batch order is its own ``batch_sampler``, which is what
makes a resumed run exact).

What persisting would save is the start of each epoch: forking the workers and refilling their
prefetch queue before the first batch arrives. This times, on the real BDD100K frames of
``../shared/data`` (decoded and turned into targets by :class:`alod.data.dataset.DetectionDataset`,
as in training), per epoch: the wait for the first batch and the whole epoch, for both kinds of
loader, in alternation. The saving per epoch is then set against an epoch of BDD100K training at
the images/s ``bench_gpu.py`` measured (``benchmarks/results/gpu.json``), the case where loading
feeds a GPU.

    python benchmarks/bench_loader.py [--workers 2] [--epochs 4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from _machine import run_info, write_result
from torch.utils.data import DataLoader

from alod.data.dataset import DetectionDataset, collate_detection
from alod.data.loading import load_index
from alod.engine import epoch_batches

HERE = Path(__file__).resolve().parent
FRAMES = HERE.parent.parent / "shared" / "data" / "bdd100k_val50"


def _epoch(loader) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = None
    for _ in loader:
        if first is None:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0


class EpochBatches:
    """A batch sampler whose order is set per epoch: what a persistent loader would need."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size, self.epoch = n, batch_size, 0

    def __iter__(self):
        for b in epoch_batches(self.n, batch_size=self.batch_size, seed=0, epoch=self.epoch, rank=0, world=1):
            yield b.tolist()

    def __len__(self):
        return (self.n + self.batch_size - 1) // self.batch_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per kind of loader (the first one is warm-up)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--frames", default=str(FRAMES))
    ap.add_argument("--gpu-result", default=str(HERE / "results" / "gpu.json"))
    ap.add_argument("--out", default=str(HERE / "results" / "loader.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    root = Path(args.frames)
    index = load_index(labels=root / "det_val50.json", image_root=root / "images", log=lambda *_: None)
    ds = DetectionDataset(index)
    n = len(ds)

    def fresh(epoch: int):
        batches = epoch_batches(n, batch_size=args.batch_size, seed=0, epoch=epoch, rank=0, world=1)
        return DataLoader(ds, batch_sampler=[b.tolist() for b in batches], collate_fn=collate_detection,
                          num_workers=args.workers)

    sampler = EpochBatches(n, args.batch_size)
    persistent = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_detection, num_workers=args.workers,
                            persistent_workers=True)
    times = {"fresh": [], "persistent": []}
    for epoch in range(args.epochs):
        times["fresh"].append(_epoch(fresh(epoch)))
        sampler.epoch = epoch
        times["persistent"].append(_epoch(persistent))
    # Epoch 0 starts the persistent workers too: compare the epochs after it.
    summary = {k: {"first_batch_s": statistics.median(t[0] for t in v[1:]),
                   "epoch_s": statistics.median(t[1] for t in v[1:])} for k, v in times.items()}
    saving = summary["fresh"]["first_batch_s"] - summary["persistent"]["first_batch_s"]
    result = {
        "benchmark": "loader",
        "setup": f"{n} real BDD100K frames 1280x720 through DetectionDataset, batch {args.batch_size}, "
                 f"{args.workers} workers; {args.epochs} epochs per loader in alternation, medians of epochs 2..",
        "per_epoch": summary, "raw": times,
        "start_saving_per_epoch_s": saving,
        "machine": run_info(load_before=load_before),
    }
    print(f"{'loader':<12} {'first batch s':>14} {'epoch s':>9}   ({n} frames, {args.workers} workers)")
    for k, v in summary.items():
        print(f"{k:<12} {v['first_batch_s']:>14.3f} {v['epoch_s']:>9.3f}")
    print(f"saving per epoch start: {saving:.3f} s")
    gpu_path = Path(args.gpu_result)
    if gpu_path.exists():
        g = json.loads(gpu_path.read_text())
        rate = max(r["images_per_s"] for r in g["training"])
        epochs = {f"{k} images": k / rate for k in (1000, 14000)}
        result["vs_bdd_epoch_on_gpu"] = {
            "gpu": g["device"], "train_images_per_s": rate,
            "epoch_s": epochs, "saving_share": {k: saving / v for k, v in epochs.items()}}
        print(f"against a BDD100K training epoch on the {g['device']} at {rate:.1f} img/s: "
              + ", ".join(f"{k}: {v:.0f} s, saving {100 * saving / v:.2f}%" for k, v in epochs.items()))
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
