"""Label parsing speed and memory on a full-size BDD100K det_20 file.

Generates (in a temporary folder, never in the repository) a det_20 file shaped like the real
``det_train.json``: 70k frames, ~18.6 boxes per frame (~1.3M boxes), the det_20 category mix,
hex-string ids, per-label ``attributes`` ``{occluded, truncated, trafficLightColor}``, frame
``attributes`` ``{weather, scene, timeofday}`` and a ``timestamp``, indented with 2 spaces.

Then measures, each in a fresh Python process (peak RSS of a process is the honest memory number:
``tracemalloc`` misses numpy's and the decoder's C allocations; it is read from ``VmHWM`` because on
Linux ``ru_maxrss`` keeps the parent's peak across ``exec``):

* ``json.load``: the plain standard-library load, the reference for ratios;
* ``read_bdd100k``: alod's streaming parse alone;
* ``read_bdd100k via json.load``: the same reader fed by one ``json.load`` (the alternative the
  streaming decoder was chosen over);
* ``load_index (first)``: what a user's first run pays: hashing, parse, writing the cache;
* ``load_index (cached)``: the second run: hashing and loading the ``.npz``.

Each process imports numpy and alod before its clock starts; their memory is the baseline row.

Usage::

    nice -n 10 python benchmarks/bench_label_parse.py             # full size, writes results
    python benchmarks/bench_label_parse.py --frames 2000 --no-save  # quick check
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine_info, write_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "label_parse.json"

# det_20 train box counts per category (BDD100K paper / det_20 statistics), ignored classes included.
CATEGORY_MIX = {
    "car": 714121, "traffic sign": 239961, "traffic light": 186301, "pedestrian": 92159,
    "truck": 30012, "bus": 11672, "bicycle": 7227, "rider": 4517, "motorcycle": 3002,
    "train": 136, "other vehicle": 5000, "other person": 200, "trailer": 70,
}  # fmt: skip
WEATHER = ["clear", "overcast", "rainy", "snowy", "partly cloudy", "foggy", "undefined"]
SCENE = ["city street", "highway", "residential", "parking lot", "tunnel", "gas stations", "undefined"]
TIMEOFDAY = ["daytime", "night", "dawn/dusk", "undefined"]
LIGHT = ["NA", "G", "R", "Y"]

FRAME_HEAD = (
    '  {{\n    "name": "{name}",\n    "attributes": {{\n      "weather": "{weather}",\n'
    '      "scene": "{scene}",\n      "timeofday": "{tod}"\n    }},\n    "timestamp": 10000,\n'
)
LABEL = (
    '      {{\n        "id": "{id}",\n        "category": "{cat}",\n        "attributes": {{\n'
    '          "occluded": {occ},\n          "truncated": {trunc},\n'
    '          "trafficLightColor": "{light}"\n        }},\n        "box2d": {{\n'
    '          "x1": {x1!r},\n          "y1": {y1!r},\n          "x2": {x2!r},\n          "y2": {y2!r}\n'
    "        }}\n      }}"
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=70_000, help="frames in the generated file")
    p.add_argument("--boxes-per-frame", type=float, default=18.6, help="mean (Poisson) boxes per frame")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="folder for the generated file (default: a new temp dir)")
    p.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.relative_to(REPO)}")
    return p


def generate_det20(path: Path, *, frames: int, boxes_per_frame: float, seed: int) -> dict:
    """Write a synthetic det_20 file; return ``{"frames", "boxes", "bytes"}``."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(boxes_per_frame, size=frames)
    total = int(counts.sum())
    cats = np.array(list(CATEGORY_MIX))
    p = np.array(list(CATEGORY_MIX.values()), dtype=float)
    cat_idx = rng.choice(len(cats), size=total, p=p / p.sum())
    # Scalabel writes full-precision floats; round to 6 decimals like most det_20 coordinates.
    x1 = np.round(rng.uniform(0, 1200, total), 6)
    y1 = np.round(rng.uniform(0, 650, total), 6)
    x2 = np.round(np.minimum(x1 + rng.exponential(60, total) + 1, 1279.0), 6)
    y2 = np.round(np.minimum(y1 + rng.exponential(45, total) + 1, 719.0), 6)
    occ = rng.random(total) < 0.45
    trunc = rng.random(total) < 0.07
    light = rng.integers(0, len(LIGHT), total)
    ids = rng.integers(0, 2**32, total)
    frame_attr = rng.integers(0, 1 << 30, (frames, 3))
    tf = ("false", "true")
    # Python lists: indexing numpy scalars one by one would dominate the generation time.
    cat_names = cats[cat_idx].tolist()
    x1, y1, x2, y2, ids = x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist(), ids.tolist()
    occ, trunc, light = occ.astype(int).tolist(), trunc.astype(int).tolist(), light.tolist()
    k = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(frames):
            f.write(FRAME_HEAD.format(
                name=f"{ids[k % total] ^ i:08x}-{(i * 2654435761) % 2**32:08x}.jpg",
                weather=WEATHER[frame_attr[i, 0] % len(WEATHER)],
                scene=SCENE[frame_attr[i, 1] % len(SCENE)],
                tod=TIMEOFDAY[frame_attr[i, 2] % len(TIMEOFDAY)],
            ))
            n = int(counts[i])
            if n == 0:
                f.write('    "labels": []\n  }')
            else:
                parts = [
                    LABEL.format(
                        id=f"{ids[j]:08x}", cat=cat_names[j], occ=tf[occ[j]], trunc=tf[trunc[j]],
                        light=LIGHT[light[j]] if cat_names[j] == "traffic light" else "NA",
                        x1=x1[j], y1=y1[j], x2=x2[j], y2=y2[j],
                    )
                    for j in range(k, k + n)
                ]
                f.write('    "labels": [\n' + ",\n".join(parts) + "\n    ]\n  }")
            k += n
            f.write(",\n" if i + 1 < frames else "\n")
        f.write("]\n")
    return {"frames": frames, "boxes": total, "bytes": path.stat().st_size}


# Child processes: import everything first, then time only the operation.
_CHILD = """
import json, resource, sys, time
from alod.data import bdd100k
from alod.data.loading import load_index
path, cache = sys.argv[1], sys.argv[2]
quiet = lambda *a: None
t = time.perf_counter()
{body}
dt = time.perf_counter() - t
try:  # VmHWM: this process's own peak. ru_maxrss would include the parent's peak (kept across exec).
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    rss = int(hwm.split()[1]) / 1024
except OSError:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS
print(json.dumps({{"seconds": dt, "peak_rss_mb": rss}}))
"""
CASES = {
    "baseline (imports only)": "pass",
    "json.load": "json.load(open(path, encoding='utf-8'))",
    "read_bdd100k": "r = bdd100k.read_bdd100k(path, layout='bdd100k')",
    "read_bdd100k via json.load": (
        "bdd100k.iter_json_array = lambda p: iter(json.load(open(p, encoding='utf-8')))\n"
        "r = bdd100k.read_bdd100k(path, layout='bdd100k')"
    ),
    "load_index (first)": "ix = load_index(labels=path, image_root=None, fmt='bdd100k', cache_dir=cache, log=quiet)",
    "load_index (cached)": "ix = load_index(labels=path, image_root=None, fmt='bdd100k', cache_dir=cache, log=quiet)",
}


def measure(body: str, path: Path, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(body=body), str(path), str(cache)],
        capture_output=True, text=True, env=env, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])




def main(args: argparse.Namespace) -> dict:
    # Other work on the machine slows every case alike; the load average says how busy it was.
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="alod-bench-") as tmp:
        path = Path(tmp) / "det_train.json"
        cache = Path(tmp) / "cache"
        t = time.perf_counter()
        data = generate_det20(path, frames=args.frames, boxes_per_frame=args.boxes_per_frame, seed=args.seed)
        print(f"generated {data['frames']} frames, {data['boxes']} boxes, {data['bytes'] / 1e6:.0f} MB "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        rows = {}
        for name, body in CASES.items():
            rows[name] = measure(body, path, cache)
            print(f"  {name}: {rows[name]['seconds']:.2f} s, peak RSS {rows[name]['peak_rss_mb']:.0f} MB", flush=True)
        data["cache_bytes"] = sum(p.stat().st_size for p in cache.iterdir())

    base = rows["baseline (imports only)"]["peak_rss_mb"]
    ref = rows["json.load"]
    ref_extra = ref["peak_rss_mb"] - base
    print(f"\n{'case':<28} {'time s':>8} {'x json':>7} {'peak MB':>8} {'+MB':>7} {'x json':>7}")
    for name, r in rows.items():
        extra = r["peak_rss_mb"] - base
        r["extra_rss_mb"] = round(extra, 1)
        r["time_vs_json_load"] = round(r["seconds"] / ref["seconds"], 3)
        r["extra_rss_vs_json_load"] = round(extra / ref_extra, 3) if ref_extra > 0 else None
        r["seconds"] = round(r["seconds"], 3)
        r["peak_rss_mb"] = round(r["peak_rss_mb"], 1)
        if name.startswith("baseline"):
            print(f"{name:<28} {'':>8} {'':>7} {r['peak_rss_mb']:>8.0f}")
            continue
        print(f"{name:<28} {r['seconds']:>8.2f} {r['time_vs_json_load']:>7.2f} {r['peak_rss_mb']:>8.0f} "
              f"{extra:>7.0f} {ratio if (ratio := r['extra_rss_vs_json_load']) is not None else float('nan'):>7.2f}")
    print("(+MB: peak RSS above the baseline process; x json: ratio to json.load)")
    result = {
        "benchmark": "label_parse",
        "file": {**data, "layout": "bdd100k det_20 (generated)", "indent": 2},
        "results": rows,
        "machine": {**machine_info(), "load_avg_1m_at_start": load_avg},
        "note": "one fresh process per case; seconds exclude interpreter start and imports",
    }
    if not args.no_save:
        write_result(RESULTS, result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
