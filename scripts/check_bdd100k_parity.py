"""Check that alod's evaluation gives the official BDD100K detection AP and AP50 (to 1e-4).

    python scripts/check_bdd100k_parity.py                 # 50 real frames, seed 0
    python scripts/check_bdd100k_parity.py --gt det_val.json --seed 3 --out /tmp/parity.json

The official side is ``scalabel.eval.detect.evaluate_det`` with ``bdd100k.common.utils.
load_bdd100k_config("det")`` exactly as ``python -m bdd100k.eval.run -t det`` runs it
(``bdd100k_to_scalabel`` on both files first). It lives in a separate virtual env (it needs
pydantic 1 and installs a top-level ``tests`` package):

    python -m venv .venv-parity && .venv-parity/bin/pip install -r requirements-parity.txt

This script runs in the main env and calls that env's python (``--parity-python``, else
``$ALOD_PARITY_PYTHON``, else ``.venv-parity/bin/python``) on itself with ``--official-worker``.

From the ground truth (default: the shared 50 real frames) it builds, in a temp dir and with a
seeded generator, these cases:

* ``det20_original``: the ground truth as it is, perturbed predictions;
* ``det20_ignored``: a shuffled copy (file order != name order) with ``other vehicle`` / ``trailer`` / ``other person`` regions added,
  predictions that also hit those regions (which must not count as false positives);
* ``names_2018``: the same with the 2018 names (``person``, ``bike``, ``motor``) in ground truth
  and, mixed, in predictions;
* ``no_predictions``: an empty prediction list.

Predictions: each box kept with p=0.8, jittered (sd 8% of its size), some relabelled, some
duplicated, random scores (a third rounded to 0.1 for ties), 0-3 false positives per frame, a few
``train`` predictions (a class without ground truth) and ``other vehicle`` predictions (the official
eval reads them as ``car``), and ~6% of frames left out of the file.

Compares overall and per-class AP (0.50:0.95) and AP50, prints a table, writes the comparison to
``--out`` (default ``benchmarks/results/bdd100k_parity.json``) and exits 1 on a mismatch, 2 if the
parity env is missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GT = REPO.parent / "shared" / "data" / "bdd100k_val50" / "det_val50.json"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "bdd100k_parity.json"
DEFAULT_PARITY_PYTHON = REPO / ".venv-parity" / "bin" / "python"
INSTALL_HINT = "python -m venv .venv-parity && .venv-parity/bin/pip install -r requirements-parity.txt"

CLASSES = ("pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
           "traffic light", "traffic sign")
TO_2018 = {"pedestrian": "person", "bicycle": "bike", "motorcycle": "motor"}
IGNORED = {"other person": "pedestrian", "other vehicle": "car", "trailer": "truck"}


def parity_python(explicit: str | None = None) -> Path | None:
    """The parity env's python: ``explicit``, ``$ALOD_PARITY_PYTHON`` or ``.venv-parity``; None if absent."""
    for cand in (explicit, os.environ.get("ALOD_PARITY_PYTHON"), str(DEFAULT_PARITY_PYTHON)):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


# ----------------------------------------------------------------------------- official side
def official_worker(manifest_path: str, out_path: str) -> None:
    """Run in the parity env: the official evaluation of every case in the manifest."""
    import logging

    logging.disable(logging.INFO)  # scalabel logs every step at INFO
    import scalabel
    from bdd100k.common.utils import load_bdd100k_config
    from bdd100k.label.to_scalabel import bdd100k_to_scalabel
    from scalabel.eval.detect import evaluate_det
    from scalabel.label.io import load

    import numpy
    import pycocotools

    def num(v):
        v = float(v)
        return None if math.isnan(v) else v

    cfg = load_bdd100k_config("det")
    results = {}
    for case in json.loads(Path(manifest_path).read_text()):
        t0 = time.perf_counter()
        gts = bdd100k_to_scalabel(load(case["gt"]).frames, cfg)
        preds = bdd100k_to_scalabel(load(case["pred"]).frames, cfg)
        res = evaluate_det(gts, preds, cfg.scalabel, nproc=1)
        results[case["name"]] = {
            metric: {
                "overall": num(getattr(res, metric)[-1]["OVERALL"]),
                "per_class": {c: num(v) for c, v in getattr(res, metric)[0].items()},
            }
            for metric in ("AP", "AP50")
        }
        results[case["name"]]["seconds"] = time.perf_counter() - t0
    versions = {"scalabel": getattr(scalabel, "__version__", None), "numpy": numpy.__version__,
                "pycocotools": getattr(pycocotools, "__version__", None), "python": sys.version.split()[0]}
    try:
        from importlib.metadata import version

        versions.update(scalabel=version("scalabel"), bdd100k=version("bdd100k"), pydantic=version("pydantic"),
                        pycocotools=version("pycocotools"))
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    Path(out_path).write_text(json.dumps({"results": results, "versions": versions}))


# ----------------------------------------------------------------------------- cases
def _box(x1, y1, x2, y2):
    return {"x1": round(x1, 3), "y1": round(y1, 3), "x2": round(x2, 3), "y2": round(y2, 3)}


def add_ignored_regions(frames: list, rng) -> list:
    """A copy of ``frames`` with ignored-category boxes added to about a third of them."""
    out = json.loads(json.dumps(frames))
    for fi, frame in enumerate(out):
        if rng.random() > 0.35:
            continue
        labels = frame.setdefault("labels", []) or []
        frame["labels"] = labels
        for k in range(int(rng.integers(1, 3))):
            w, h = rng.uniform(20, 200), rng.uniform(20, 120)
            x1, y1 = rng.uniform(0, 1280 - w), rng.uniform(200, 720 - h)
            cat = ("other vehicle", "trailer", "other person")[int(rng.integers(3))]
            labels.append({"id": f"ign{fi}_{k}", "category": cat, "box2d": _box(x1, y1, x1 + w, y1 + h)})
    return out


def to_2018_names(frames: list) -> list:
    out = json.loads(json.dumps(frames))
    for frame in out:
        for lab in frame.get("labels") or []:
            lab["category"] = TO_2018.get(lab["category"], lab["category"])
    return out


def make_predictions(frames: list, rng, *, names_2018: bool = False) -> list:
    """Perturbed predictions for ``frames`` (see the module docstring)."""
    preds = []

    def score():
        s = float(rng.uniform(0.01, 1.0))
        return round(s, 1) if rng.random() < 0.33 else s

    def name(cat):
        if names_2018 and cat in TO_2018 and rng.random() < 0.5:
            return TO_2018[cat]
        return cat

    for frame in frames:
        if rng.random() < 0.06:
            continue  # frame missing from the predictions
        labels = []
        for lab in frame.get("labels") or []:
            cat = lab["category"]
            cat = {v: k for k, v in TO_2018.items()}.get(cat, cat)
            cat = IGNORED.get(cat, cat)  # a detector predicts the mapped class on an ignored region
            if rng.random() > 0.8:
                continue
            b = lab["box2d"]
            w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
            sd = 0.08
            x1 = b["x1"] + rng.normal(0, sd * w + 0.5)
            y1 = b["y1"] + rng.normal(0, sd * h + 0.5)
            x2 = max(x1 + 1.0, b["x2"] + rng.normal(0, sd * w + 0.5))
            y2 = max(y1 + 1.0, b["y2"] + rng.normal(0, sd * h + 0.5))
            if rng.random() < 0.1:
                cat = CLASSES[int(rng.integers(len(CLASSES)))]
            labels.append({"category": name(cat), "box2d": _box(x1, y1, x2, y2), "score": score()})
            if rng.random() < 0.1:  # a duplicate detection
                d = rng.normal(0, 2.0, 4)
                labels.append({"category": name(cat), "box2d": _box(x1 + d[0], y1 + d[1], x2 + abs(d[2]) + 1, y2 + abs(d[3]) + 1),
                               "score": score() * 0.5})
        for _ in range(int(rng.integers(0, 4))):  # false positives
            w, h = rng.uniform(5, 150), rng.uniform(5, 100)
            x1, y1 = rng.uniform(0, 1280 - w), rng.uniform(0, 720 - h)
            r = rng.random()
            cat = "train" if r < 0.05 else "other vehicle" if r < 0.1 else CLASSES[int(rng.integers(len(CLASSES)))]
            labels.append({"category": name(cat), "box2d": _box(x1, y1, x1 + w, y1 + h), "score": score()})
        for lab in frame.get("labels") or []:  # a false positive inside an ignored region
            if lab["category"] in IGNORED and rng.random() < 0.7:
                b = lab["box2d"]
                cx, cy = (b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2
                w, h = (b["x2"] - b["x1"]) / 3, (b["y2"] - b["y1"]) / 3
                labels.append({"category": IGNORED[lab["category"]], "box2d": _box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                               "score": score()})
        for k, lab in enumerate(labels):  # Scalabel's Label model requires an id
            lab["id"] = str(k)
        preds.append({"name": frame["name"], "labels": labels})
    return [preds[i] for i in rng.permutation(len(preds))]


def build_cases(gt_path: Path, work: Path, seed: int) -> list[dict]:
    import numpy as np

    frames = json.loads(gt_path.read_text())
    rng = np.random.default_rng(seed)
    ignored = add_ignored_regions(frames, rng)
    # File order != name order: the official eval numbers images by name, which decides ties.
    ignored = [ignored[i] for i in rng.permutation(len(ignored))]
    cases = []

    def write(name, obj):
        p = work / name
        p.write_text(json.dumps(obj))
        return str(p)

    cases.append({"name": "det20_original", "gt": str(gt_path),
                  "pred": write("pred_original.json", make_predictions(frames, np.random.default_rng([seed, 1])))})
    gt_ign = write("gt_ignored.json", ignored)
    cases.append({"name": "det20_ignored", "gt": gt_ign,
                  "pred": write("pred_ignored.json", make_predictions(ignored, np.random.default_rng([seed, 2])))})
    cases.append({"name": "names_2018", "gt": write("gt_2018.json", to_2018_names(ignored)),
                  "pred": write("pred_2018.json",
                                make_predictions(ignored, np.random.default_rng([seed, 3]), names_2018=True))})
    cases.append({"name": "no_predictions", "gt": gt_ign, "pred": write("pred_empty.json", [])})
    return cases


# ----------------------------------------------------------------------------- compare
def _diff(a, b) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return math.inf
    return abs(a - b)


def compare(official: dict, ours: dict) -> dict:
    """Per metric: overall and per-class values of both sides (fractions) and their |difference|."""
    rows = []
    key = {"AP": "mAP", "AP50": "mAP50"}
    for metric in ("AP", "AP50"):
        off = official[metric]
        pairs = [("overall", off["overall"], ours[key[metric]])]
        pairs += [(c, off["per_class"].get(c), ours.get(f"{metric}/{c}")) for c in CLASSES]
        for cls, o, a in pairs:
            o = None if o is None else o / 100.0
            a = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
            rows.append({"metric": metric, "class": cls, "official": o, "alod": a, "abs_diff": _diff(o, a)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gt", default=str(DEFAULT_GT), help="BDD100K det_20 labels (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4, help="largest accepted |difference| (fractions)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="comparison JSON (default: %(default)s)")
    ap.add_argument("--parity-python", default=None,
                    help="python of the env with scalabel/bdd100k (default: $ALOD_PARITY_PYTHON or .venv-parity)")
    ap.add_argument("--workdir", default=None, help="keep the generated files here (default: a temp dir)")
    ap.add_argument("--official-worker", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.official_worker:
        official_worker(*args.official_worker)
        return 0

    py = parity_python(args.parity_python)
    if py is None:
        print(f"error: the official BDD100K evaluation is not installed; install it with:\n  {INSTALL_HINT}\n"
              "or point ALOD_PARITY_PYTHON (--parity-python) to a python that has scalabel==0.3.1 and bdd100k==1.0.1",
              file=sys.stderr)
        return 2
    gt_path = Path(args.gt)
    if not gt_path.is_file():
        print(f"error: ground truth {gt_path} does not exist", file=sys.stderr)
        return 2

    sys.path.insert(0, str(REPO))
    import numpy as np
    import pycocotools

    from alod.evaluation import json_safe
    from alod.evaluation import evaluate_files
    from alod.utils import atomic_write_json, sha256_file

    with tempfile.TemporaryDirectory(prefix="alod-parity-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = build_cases(gt_path, work, args.seed)
        manifest = work / "manifest.json"
        manifest.write_text(json.dumps(cases))
        off_out = work / "official.json"
        t0 = time.perf_counter()
        proc = subprocess.run([str(py), str(Path(__file__).resolve()), "--official-worker", str(manifest), str(off_out)],
                              capture_output=True, text=True, cwd=str(work))
        t_official = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-4000:] + proc.stderr[-4000:], file=sys.stderr)
            print(f"error: the official evaluation failed (exit {proc.returncode}) with {py}", file=sys.stderr)
            return 2
        official = json.loads(off_out.read_text())

        report_cases = []
        worst = {"AP_overall": 0.0, "AP50_overall": 0.0, "AP_per_class": 0.0, "AP50_per_class": 0.0}
        for case in cases:
            t1 = time.perf_counter()
            ours = evaluate_files(gt=case["gt"], pred=case["pred"], box_convention="bdd100k", log=lambda s: None)
            t_ours = time.perf_counter() - t1
            plain = evaluate_files(gt=case["gt"], pred=case["pred"], box_convention="coco", log=lambda s: None)
            rows = compare(official["results"][case["name"]], ours)
            for r in rows:
                k = f"{r['metric']}_{'overall' if r['class'] == 'overall' else 'per_class'}"
                worst[k] = max(worst[k], r["abs_diff"])
            report_cases.append({
                "name": case["name"],
                "gt": {"path": os.path.relpath(case["gt"], work) if case["gt"].startswith(str(work)) else case["gt"],
                       "sha256": sha256_file(case["gt"])},
                "pred_sha256": sha256_file(case["pred"]),
                "counts": ours["counts"],
                "rows": rows,
                "max_abs_diff": max(r["abs_diff"] for r in rows),
                "alod_coco_box_convention": {"mAP": plain["mAP"], "mAP50": plain["mAP50"]},
                "seconds": {"official": official["results"][case["name"]]["seconds"], "alod": t_ours},
            })

    passed = all(v <= args.tol for v in worst.values())
    _print_table(report_cases, worst, args.tol, passed)
    result = {
        "format": "alod.parity/1",
        "passed": passed,
        "tolerance": args.tol,
        "seed": args.seed,
        "gt": {"path": str(gt_path), "sha256": sha256_file(gt_path)},
        "max_abs_diff": worst,
        "versions": {"official_env": official["versions"],
                     "alod_env": {"numpy": np.__version__, "pycocotools": _version("pycocotools", pycocotools),
                                  "python": sys.version.split()[0]}},
        "seconds": {"official_subprocess_total": t_official},
        "cases": report_cases,
    }
    out = Path(args.out)
    atomic_write_json(out, json_safe(_finite(result)))
    print(f"wrote {out}")
    return 0 if passed else 1


def _finite(obj):
    """inf (one side NaN, the other not) as the string "inf" so the JSON stays standard."""
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _version(dist, module):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return getattr(module, "__version__", None)


def _print_table(cases, worst, tol, passed) -> None:
    def f(v):
        return "    -  " if v is None else f"{100 * v:7.3f}"

    for case in cases:
        c = case["counts"]
        print(f"\n== {case['name']}: {c['images']} images, {c['gt_boxes']} boxes, {c['ignored_regions']} ignored, "
              f"{c['detections']} predictions ({c['images_without_predictions']} frames without)")
        print(f"{'class':<14} {'AP off':>8} {'AP alod':>8} {'AP50 off':>9} {'AP50 alod':>9}  max|diff|")
        by = {(r["metric"], r["class"]): r for r in case["rows"]}
        for cls in ("overall",) + CLASSES:
            a, b = by[("AP", cls)], by[("AP50", cls)]
            d = max(a["abs_diff"], b["abs_diff"])
            print(f"{cls:<14} {f(a['official']):>8} {f(a['alod']):>8} {f(b['official']):>9} {f(b['alod']):>9}  {d:.1e}")
        cc = case["alod_coco_box_convention"]
        print(f"(with the plain COCO box convention alod gives mAP {100 * cc['mAP']:.3f}, mAP50 {100 * cc['mAP50']:.3f})")
    print("\nmax |diff| (fractions): " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    print(f"{'PASS' if passed else 'FAIL'}: tolerance {tol:g}")


if __name__ == "__main__":
    sys.exit(main())
