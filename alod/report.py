"""The comparison report: learning curves of several strategies against the ``random`` baseline.

Pure functions over plain data: no torch, no training, no reading of run folders. ``alod compare``
collects one *curve record* per (strategy, selection mode, seed) and passes the list here;
:func:`write_report` turns it into ``report.json``, ``report.md`` and ``curves.png``.

Input (plain dicts, e.g. straight from JSON; the TypedDicts below only document them)::

    CurveRecord = {"strategy": "entropy", "mode": "adaptive", "seed": 0,
                   "cycles": [CycleRecord, ...]}          # any order; sorted by "cycle" here
    CycleRecord = {"cycle": 1,                             # int, unique within a record
                   "images": 1000,                         # labeled pool size after this cycle
                   "boxes": 5200,                          # labeled ground-truth boxes in that pool
                   "mAP50": 0.41, "mAP": 0.22,             # validation metrics of this cycle's model
                   "per_class": {"car": 0.6, "train": None},   # AP50 per class; None = not measurable
                   "seconds": {"scoring": 12.0, "training": 300.0}}   # optional; a missing key is 0
    FullRecord  = {"mAP50": 0.52, "images": 7000, "boxes": 35000, "seconds": {...}} or None

How the numbers are defined:

* **Labels to reach a target** (:func:`labels_to_reach`): along one run, the first crossing of the
  target by the mAP50 curve, linearly interpolated between consecutive cycles, on the images axis
  and, separately, on the boxes axis. A curve that dips after crossing still counts as having
  reached the target at its first crossing.
* **Target**: random's *final* mAP50 (the last cycle of the random run). **Pairing**: a strategy's
  seed ``s`` is compared with random's seed ``s`` (same mode) when random has every seed the
  strategy has ("per-seed": the target, random's final images and boxes and the differences are
  taken seed by seed, which removes the variation that the seed puts into both runs alike).
  Otherwise ("mean") every seed of the strategy is compared with the mean over random's seeds, and
  the spread is that of two independent samples.
* **Baseline mode**: random of the same selection mode; when random was run in one mode only (it
  does not score, so ``precomputed`` and ``adaptive`` select alike), that mode serves every mode.
* **Saving** of a seed: random's images (boxes) at its final cycle minus the images (boxes) the
  strategy needs to reach the target; as a percent of random's. Seeds in which the strategy never
  reaches the target have no saving ("never"); means and spreads are over the seeds that reached
  it, and ``reached`` says how many did.
* **Spread**: mean ± sample standard deviation (``ddof=1``) over seeds; ``None`` for fewer than
  two values.
* **Significance** (:func:`significance`): a difference is "larger than the spread across seeds"
  when ``|mean difference| > 2 x standard error`` (paired: of the per-seed differences; unpaired:
  Welch's). With 3 seeds this is a loose screen (it corresponds to roughly 80% two-sided, not 95%),
  and the sentences say that few seeds were run. The verdict is on the image saving when every seed
  reached the target, and otherwise on the final mAP50 difference.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from alod.utils import (
    AlodError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

REPORT_FORMAT = "alod.compare-report/1"
BASELINE = "random"
#: The multiple of the standard error a mean difference must exceed to count as outside the noise.
SIGNIFICANCE_K = 2.0
#: Below this many seeds the sentences add that the seeds are few.
FEW_SEEDS = 5
REPORT_JSON, REPORT_MD, CURVES_PNG = "report.json", "report.md", "curves.png"
RULE = (f"a difference counts as larger than the spread across seeds when |mean| > {SIGNIFICANCE_K:g} x its "
        "standard error (paired per-seed differences when random was run with the same seeds, Welch's "
        "otherwise); with fewer than 5 seeds this is a rough screen, not a test")


class Seconds(TypedDict, total=False):
    scoring: float   # seconds spent scoring unlabeled images in this cycle (0 for precomputed)
    training: float  # seconds spent training this cycle's detector


class CycleRecord(TypedDict, total=False):
    cycle: int
    images: int
    boxes: int
    mAP50: float
    mAP: float
    per_class: dict[str, float | None]
    seconds: Seconds


class CurveRecord(TypedDict):
    strategy: str
    mode: str
    seed: int
    cycles: list[CycleRecord]


class FullRecord(TypedDict, total=False):
    mAP50: float
    images: int
    boxes: int
    seconds: Seconds


# --------------------------------------------------------------------------- interpolation


def labels_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The smallest ``x`` at which the curve ``y(x)`` first reaches ``target`` (``y >= target``).

    Args:
        x: ``float[n]``, non-decreasing: labeled images (or boxes) after each cycle. Equal
            consecutive values are allowed (e.g. a cycle that added images without boxes).
        y: ``float[n]``: mAP50 after each cycle. ``NaN`` never reaches the target and is not
            interpolated across.
        target: the mAP50 to reach.

    Returns:
        ``x[0]`` if the first point already reaches the target; ``x[i]`` exactly when ``y[i]`` is the
        first point equal to the target; otherwise the linear interpolation on the first segment
        ``(x[i-1], y[i-1]) -> (x[i], y[i])`` with ``y[i-1] < target < y[i]``; ``None`` ("never")
        when no point reaches it. Non-monotone curves: the *first* crossing counts, even if the
        curve falls below the target later. Flat segments below the target are passed over; a
        flat segment at the target returns its first point.

    Raises:
        ValueError: ``x`` and ``y`` of different lengths, empty, or ``x`` decreasing.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
        raise ValueError(f"x and y must be 1-D of the same non-zero length, got {x.shape} and {y.shape}")
    if np.any(np.diff(x) < 0):
        raise ValueError(f"x must be non-decreasing (labels only grow along a run), got {x.tolist()}")
    target = float(target)
    for i in range(len(y)):
        if not y[i] >= target:  # also False for NaN
            continue
        if i == 0 or y[i] == target or not np.isfinite(y[i - 1]):
            return float(x[i])
        t = (target - y[i - 1]) / (y[i] - y[i - 1])  # in (0, 1): y[i-1] < target < y[i]
        return float(x[i - 1] + t * (x[i] - x[i - 1]))
    return None


# --------------------------------------------------------------------------- statistics


def _stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """``{"mean", "std", "min", "max", "n"}`` over the values that are not ``None`` (std: ddof=1)."""
    v = np.asarray([float(a) for a in values if a is not None], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "min": float(v.min()), "max": float(v.max()), "n": len(v)}


def significance(a: Sequence[float], b: Sequence[float] | None = None, *, k: float = SIGNIFICANCE_K) -> dict[str, Any]:
    """Whether a mean difference lies outside ``k`` standard errors.

    Args:
        a: paired per-seed differences (``b`` is ``None``), or the first of two independent samples.
        b: the second independent sample; then the difference is ``mean(a) - mean(b)`` and its
            standard error Welch's ``sqrt(var(a)/n_a + var(b)/n_b)`` (``ddof=1``).
        k: the multiple of the standard error to exceed.

    Returns:
        ``{"paired", "n", "mean", "std", "se", "threshold", "outside_noise"}``: ``n`` the number of
        seeds (paired) or ``min(n_a, n_b)``; ``std`` the std of the paired differences (``None``
        unpaired); ``threshold = k * se``; ``outside_noise`` is ``|mean| > threshold`` (a zero
        standard error counts any non-zero mean), or ``None`` when there are too few seeds for a
        spread (fewer than two per sample).
    """
    a = np.asarray(a, dtype=np.float64)
    if b is None:
        n = len(a)
        mean = float(a.mean()) if n else None
        std = float(a.std(ddof=1)) if n > 1 else None
        se = std / math.sqrt(n) if std is not None else None
    else:
        b = np.asarray(b, dtype=np.float64)
        n = min(len(a), len(b))
        mean = float(a.mean() - b.mean()) if n else None
        std = None
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if n > 1 else None
    if se is None or mean is None:
        return {"paired": b is None, "n": n, "mean": mean, "std": std, "se": None, "threshold": None,
                "outside_noise": None}
    threshold = k * se
    outside = abs(mean) > threshold if se > 0 else mean != 0
    return {"paired": b is None, "n": n, "mean": mean, "std": std, "se": se, "threshold": threshold,
            "outside_noise": bool(outside)}


# --------------------------------------------------------------------------- validation


def _number(value: Any, where: str, key: str, *, allow_none: bool = False) -> float | None:
    """``float(value)``; with ``allow_none``, ``None`` and NaN (alod.evaluation's "no ground truth") give ``None``."""
    if allow_none and (value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))):
        return None
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value):
        raise AlodError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _checked(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated copies of the records, cycles sorted by cycle number; errors name the record."""
    out, seen = [], {}
    for i, rec in enumerate(records):
        where = f"curve record {i}"
        if not isinstance(rec, Mapping):
            raise AlodError(f"{where}: expected a dict with strategy, mode, seed, cycles; got {type(rec).__name__}")
        missing = [k for k in ("strategy", "mode", "seed", "cycles") if k not in rec]
        if missing:
            raise AlodError(f"{where}: missing {', '.join(missing)} "
                            "(a record is one run: strategy, mode, seed, cycles)")
        if isinstance(rec["seed"], bool) or not isinstance(rec["seed"], (int, np.integer)):
            raise AlodError(f"{where}: 'seed' must be an integer, got {rec['seed']!r}")
        key = (str(rec["strategy"]), str(rec["mode"]), int(rec["seed"]))
        where = f"curve record {i} ({key[0]}, {key[1]}, seed {key[2]})"
        if key in seen:
            raise AlodError(f"{where}: the same strategy, mode and seed as record {seen[key]}; pass each run once")
        seen[key] = i
        if not rec["cycles"]:
            raise AlodError(f"{where}: no cycles; leave out runs that have not finished a cycle")
        cycles = []
        for c in rec["cycles"]:
            miss = [k for k in ("cycle", "images", "boxes", "mAP50") if k not in c]
            if miss:
                raise AlodError(f"{where}: a cycle lacks {', '.join(miss)}: {dict(c)!r}")
            cw = f"{where}, cycle {c['cycle']}"
            sec = c.get("seconds") or {}
            per_class = c.get("per_class") or {}
            cycles.append({
                "cycle": int(c["cycle"]),
                "images": _number(c["images"], cw, "images"),
                "boxes": _number(c["boxes"], cw, "boxes"),
                "mAP50": _number(c["mAP50"], cw, "mAP50"),
                "mAP": _number(c.get("mAP"), cw, "mAP", allow_none=True),
                "per_class": {str(k): _number(v, cw, f"per_class/{k}", allow_none=True) for k, v in per_class.items()},
                "seconds": {k: _number(sec.get(k, 0.0), cw, f"seconds/{k}") for k in ("scoring", "training")},
            })
        cycles.sort(key=lambda c: c["cycle"])
        numbers = [c["cycle"] for c in cycles]
        if len(set(numbers)) != len(numbers):
            raise AlodError(f"{where}: cycle numbers repeat ({numbers}); each cycle is recorded once")
        for axis in ("images", "boxes"):
            vals = [c[axis] for c in cycles]
            if any(b < a for a, b in pairwise(vals)):
                raise AlodError(f"{where}: labeled {axis} shrink from one cycle to the next ({vals}); "
                                "the pool only grows, so the record is mixed up")
        out.append({"strategy": key[0], "mode": key[1], "seed": key[2], "cycles": cycles})
    return out


def _order(key: tuple[str, str], baseline: str = BASELINE) -> tuple:
    return (key[0] != baseline, key[0], key[1])


def _group(records: list[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for r in records:
        groups.setdefault((r["strategy"], r["mode"]), {})[r["seed"]] = r
    return {k: dict(sorted(groups[k].items())) for k in sorted(groups, key=_order)}


def _baseline_mode(groups: Mapping[tuple[str, str], Any], mode: str, baseline: str) -> str:
    modes = sorted(m for s, m in groups if s == baseline)
    if not modes:
        raise AlodError(f"no {baseline!r} runs among the curve records: savings are measured against "
                        f"{baseline}; run it too (same modes and seeds as the strategies)")
    if mode in modes:
        return mode
    if len(modes) == 1:
        return modes[0]
    raise AlodError(f"{baseline!r} was run in modes {modes} but not in {mode!r}: run {baseline} in {mode!r} "
                    "too, or in one mode only (it then serves every mode)")


# --------------------------------------------------------------------------- savings


def savings(records: Sequence[Mapping[str, Any]], *, baseline: str = BASELINE) -> dict[str, dict[str, Any]]:
    """Labels each strategy needs to reach random's final mAP50, and what it saves against random.

    Args:
        records: curve records (see the module docstring), one per (strategy, mode, seed), the
            baseline's included.
        baseline: the strategy every other one is measured against.

    Returns:
        ``{"<strategy>/<mode>": entry}`` for every strategy but the baseline, where ``entry`` is::

            {"strategy", "mode", "baseline_mode",
             "pairing": "per-seed" | "mean",
             "seeds": [int], "reached": int,            # seeds run; seeds that reached the target
             "target_mAP50": float,                     # mean over the seeds' targets
             "per_seed": [{"seed", "target_mAP50", "baseline_images", "baseline_boxes",
                           "images_needed", "boxes_needed",          # None = never
                           "images_saved", "boxes_saved",            # baseline - needed; None = never
                           "images_saved_pct", "boxes_saved_pct",    # 100 * saved / baseline
                           "final_mAP50", "baseline_final_mAP50", "final_mAP50_diff"}],
             "baseline_images", "baseline_boxes",       # stats of random's final pool (its seeds)
             "images_needed", "boxes_needed", "images_saved", "boxes_saved",
             "images_saved_pct", "boxes_saved_pct",     # stats over the seeds that reached it
             "final_mAP50", "final_mAP50_diff",         # stats over all seeds
             "significance": {"images_saved", "boxes_saved", "final_mAP50_diff": significance(...)
                                   (images/boxes: None unless every seed reached the target),
                              "verdict_on": "images_saved" | "final_mAP50_diff",
                              "outside_noise": bool | None}}

        where a *stats* dict is ``{"mean", "std", "min", "max", "n"}`` (std with ``ddof=1``,
        ``None`` below two values).

    Raises:
        AlodError: malformed records, or no baseline runs for a mode.
    """
    groups = _group(_checked(records))
    out = {}
    for (strategy, mode), runs in groups.items():
        if strategy == baseline:
            continue
        bmode = _baseline_mode(groups, mode, baseline)
        base = groups[(baseline, bmode)]
        base_final = {s: r["cycles"][-1] for s, r in base.items()}
        paired = set(runs) <= set(base)
        mean_final = {k: float(np.mean([c[k] for c in base_final.values()])) for k in ("mAP50", "images", "boxes")}
        per_seed = []
        for seed, run in runs.items():
            ref = base_final[seed] if paired else mean_final
            cyc = run["cycles"]
            y = np.array([c["mAP50"] for c in cyc])
            row = {"seed": seed, "target_mAP50": ref["mAP50"], "baseline_images": ref["images"],
                   "baseline_boxes": ref["boxes"], "final_mAP50": cyc[-1]["mAP50"],
                   "baseline_final_mAP50": ref["mAP50"], "final_mAP50_diff": cyc[-1]["mAP50"] - ref["mAP50"]}
            for axis in ("images", "boxes"):
                need = labels_to_reach(np.array([c[axis] for c in cyc]), y, ref["mAP50"])
                saved = None if need is None else ref[axis] - need
                row[f"{axis}_needed"] = need
                row[f"{axis}_saved"] = saved
                row[f"{axis}_saved_pct"] = (None if saved is None or ref[axis] == 0 else 100.0 * saved / ref[axis])
            per_seed.append(row)
        reached = sum(r["images_needed"] is not None for r in per_seed)
        entry = {"strategy": strategy, "mode": mode, "baseline_mode": bmode,
                 "pairing": "per-seed" if paired else "mean", "seeds": list(runs), "reached": reached,
                 "target_mAP50": float(np.mean([r["target_mAP50"] for r in per_seed])),
                 "per_seed": per_seed,
                 "baseline_images": _stats([c["images"] for c in base_final.values()]) if not paired
                 else _stats([r["baseline_images"] for r in per_seed]),
                 "baseline_boxes": _stats([c["boxes"] for c in base_final.values()]) if not paired
                 else _stats([r["baseline_boxes"] for r in per_seed])}
        for k in ("images_needed", "boxes_needed", "images_saved", "boxes_saved", "images_saved_pct",
                  "boxes_saved_pct", "final_mAP50", "final_mAP50_diff"):
            entry[k] = _stats([r[k] for r in per_seed])
        entry["significance"] = _significance(per_seed, base_final, paired, reached == len(per_seed))
        out[f"{strategy}/{mode}"] = entry
    return out


def _significance(per_seed: list[dict], base_final: dict[int, dict], paired: bool, all_reached: bool) -> dict:
    tests: dict[str, Any] = {}
    for axis in ("images", "boxes"):
        if not all_reached:
            tests[f"{axis}_saved"] = None
        elif paired:
            tests[f"{axis}_saved"] = significance([r[f"{axis}_saved"] for r in per_seed])
        else:
            tests[f"{axis}_saved"] = significance([c[axis] for c in base_final.values()],
                                                  [r[f"{axis}_needed"] for r in per_seed])
    if paired:
        tests["final_mAP50_diff"] = significance([r["final_mAP50_diff"] for r in per_seed])
    else:
        tests["final_mAP50_diff"] = significance([r["final_mAP50"] for r in per_seed],
                                                 [c["mAP50"] for c in base_final.values()])
    tests["verdict_on"] = "images_saved" if all_reached else "final_mAP50_diff"
    tests["outside_noise"] = tests[tests["verdict_on"]]["outside_noise"]
    return tests


# --------------------------------------------------------------------------- sentences


def _count(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "never"
    text = f"{round(mean):,}"
    return f"{text} ± {round(std):,}" if std is not None else text


def _pct(pct: float | None) -> str:
    if pct is None:
        return "no baseline to compare"
    p = round(pct)
    return f"{p}% fewer" if p > 0 else f"{-p}% more" if p < 0 else "about the same"


def _verdict(test: dict | None, what: str, n: int) -> str:
    if test is None or test["outside_noise"] is None:
        return f"with {n} seed{'s' if n != 1 else ''} there is no spread to judge the {what} against"
    few = f" ({n} seeds are few: a rough screen)" if n < FEW_SEEDS else ""
    where = "larger than the spread" if test["outside_noise"] else "within the noise"
    return f"the {what} is {where} across {n} seeds{few}"


def sentence(entry: Mapping[str, Any], *, baseline: str = BASELINE) -> str:
    """One plain sentence for one :func:`savings` entry: what it needed, what it saved, whether it is noise."""
    name = f"{entry['strategy']} ({entry['mode']})"
    n, reached = len(entry["seeds"]), entry["reached"]
    target = f"{baseline}'s final mAP50 ({entry['target_mAP50']:.3f}"
    target += "; seeds paired)" if entry["pairing"] == "per-seed" else ", the mean over its seeds; seeds not paired)"
    sig = entry["significance"]
    img, box = entry["images_needed"], entry["boxes_needed"]
    if reached == n:
        text = (f"{name} reached {target} with {_count(img['mean'], img['std'])} images instead of "
                f"{_count(entry['baseline_images']['mean'])} ({_pct(entry['images_saved_pct']['mean'])}) and "
                f"{_count(box['mean'], box['std'])} boxes instead of {_count(entry['baseline_boxes']['mean'])} "
                f"({_pct(entry['boxes_saved_pct']['mean'])})")
        if entry["images_saved"]["mean"] > 0 and entry["boxes_saved"]["mean"] <= 0:
            text += ("; it saved images but no boxes: the images it picked hold more objects, so the labeling "
                     "effort in boxes did not drop")
        return text + f"; {_verdict(sig['images_saved'], 'image saving', n)}."
    diff = entry["final_mAP50_diff"]
    spread = f" ± {diff['std']:.3f}" if diff["std"] is not None else ""
    if reached == 0:
        text = f"{name} never reached {target} in any of its {n} seed{'s' if n != 1 else ''}"
    else:
        text = (f"{name} did not reach {target} in {n - reached} of {n} seeds (never); in the {reached} that did, "
                f"it needed {_count(img['mean'], img['std'])} images and {_count(box['mean'], box['std'])} boxes")
    return (text + f"; its final mAP50 is {entry['final_mAP50']['mean']:.3f} against {entry['target_mAP50']:.3f} "
            f"({diff['mean']:+.3f}{spread}); {_verdict(sig['final_mAP50_diff'], 'mAP50 difference', n)}.")


def _baseline_sentence(summary: Mapping[str, Any], baseline: str) -> str:
    f = summary["final"]
    m = f["mAP50"]
    spread = f" ± {m['std']:.3f}" if m["std"] is not None else ""
    n = m["n"]
    return (f"{baseline} ({summary['mode']}) is the baseline: its final mAP50 is {m['mean']:.3f}{spread} with "
            f"{_count(f['images']['mean'])} images and {_count(f['boxes']['mean'], f['boxes']['std'])} boxes "
            f"({n} seed{'s' if n != 1 else ''}).")


# --------------------------------------------------------------------------- the report


def _curve_summary(runs: Mapping[int, dict]) -> dict[str, Any]:
    """Per cycle number, stats over seeds; final-cycle metrics, per-class AP50 and compute seconds."""
    by_cycle: dict[int, list[dict]] = {}
    for run in runs.values():
        for c in run["cycles"]:
            by_cycle.setdefault(c["cycle"], []).append(c)
    curve = [{"cycle": k, **{m: _stats([c[m] for c in cs]) for m in ("images", "boxes", "mAP50", "mAP")}}
             for k, cs in sorted(by_cycle.items())]
    finals = [run["cycles"][-1] for run in runs.values()]
    classes = sorted({k for c in finals for k in c["per_class"]})
    seconds = {k: _stats([sum(c["seconds"][k] for c in run["cycles"]) for run in runs.values()])
               for k in ("scoring", "training")}
    return {"seeds": list(runs), "curve": curve,
            "final": {m: _stats([c[m] for c in finals]) for m in ("images", "boxes", "mAP50", "mAP")},
            "per_class_AP50": {k: _stats([c["per_class"].get(k) for c in finals]) for k in classes},
            "seconds": seconds}


def build_report(records: Sequence[Mapping[str, Any]], full: Mapping[str, Any] | None = None, *,
                 baseline: str = BASELINE) -> dict[str, Any]:
    """The report as a dict (what :func:`write_report` writes to ``report.json``), without writing files.

    Keys::

        format:     "alod.compare-report/1"
        baseline:   "random"
        seeds:      sorted seeds found in the records
        modes:      sorted selection modes found
        rule:       the significance rule, in words
        full:       {"mAP50", "images", "boxes", "mAP"?, "seconds"?} or None
        strategies: {"<strategy>/<mode>": {      # baseline first, then by strategy and mode
            "strategy", "mode", "seeds",
            "curve": [{"cycle", "images", "boxes", "mAP50", "mAP"}],   # each a stats dict over seeds
            "final": {"images", "boxes", "mAP50", "mAP"},               # last cycle, stats over seeds
            "per_class_AP50": {class: stats},    # last cycle; seeds where the class had no AP left out
            "seconds": {"scoring", "training"},  # per-run totals over cycles, stats over seeds
            "savings": savings(...) entry or None for the baseline,
            "sentence": str}}
    """
    checked = _checked(records)
    groups = _group(checked)
    saved = savings(checked, baseline=baseline)
    strategies = {}
    for (strategy, mode), runs in groups.items():
        key = f"{strategy}/{mode}"
        summary = {"strategy": strategy, "mode": mode, **_curve_summary(runs), "savings": saved.get(key)}
        summary["sentence"] = (_baseline_sentence(summary, baseline) if strategy == baseline
                               else sentence(saved[key], baseline=baseline))
        strategies[key] = summary
    full_out = None
    if full is not None:
        full_out = {k: _number(full.get(k), "full run", k) for k in ("mAP50", "images", "boxes")}
        if full.get("mAP") is not None:
            full_out["mAP"] = _number(full["mAP"], "full run", "mAP")
        if full.get("seconds"):
            full_out["seconds"] = {k: _number(v, "full run", f"seconds/{k}") for k, v in full["seconds"].items()}
    return {"format": REPORT_FORMAT, "baseline": baseline,
            "seeds": sorted({r["seed"] for r in checked}), "modes": sorted({r["mode"] for r in checked}),
            "rule": RULE, "full": full_out, "strategies": strategies}


def _cell(stats: Mapping[str, Any] | None, fmt: str = "{:.3f}") -> str:
    if stats is None or stats["mean"] is None:
        return "never" if stats is not None else "-"
    text = fmt.format(stats["mean"])
    return f"{text} ± {fmt.format(stats['std'])}" if stats["std"] is not None else text


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: a summary table, mAP50 by pool size, and one sentence per strategy and mode."""
    base = report["baseline"]
    lines = ["# Strategy comparison", "",
             (f"Baseline: `{base}`. Target: {base}'s final mAP50. Values are mean ± std over seeds; "
              "\"needed\" is the labeled pool at which a run's mAP50 first reaches the target (interpolated "
              "between cycles); \"saved\" is the baseline's final pool minus that."), "",
             ("| strategy | mode | seeds | final mAP50 | images needed | images saved | boxes needed | boxes saved "
              "| reached | outside noise | scoring s | training s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    count = "{:,.0f}"
    for s in report["strategies"].values():
        sv = s["savings"]
        if sv is None:
            needed = ["-"] * 4 + ["-", "-"]
        else:
            pct = sv["images_saved_pct"]["mean"], sv["boxes_saved_pct"]["mean"]
            needed = [_cell(sv["images_needed"], count),
                      _cell(sv["images_saved"], count) + (f" ({pct[0]:.0f}%)" if pct[0] is not None else ""),
                      _cell(sv["boxes_needed"], count),
                      _cell(sv["boxes_saved"], count) + (f" ({pct[1]:.0f}%)" if pct[1] is not None else ""),
                      f"{sv['reached']}/{len(sv['seeds'])}",
                      {True: "yes", False: "no", None: "n/a"}[sv["significance"]["outside_noise"]]]
        lines.append("| " + " | ".join([s["strategy"], s["mode"], str(len(s["seeds"])), _cell(s["final"]["mAP50"]),
                                        *needed, _cell(s["seconds"]["scoring"], "{:,.0f}"),
                                        _cell(s["seconds"]["training"], "{:,.0f}")]) + " |")
    full = report["full"]
    if full is not None:
        train_s = full.get("seconds", {}).get("training")
        lines.append(f"| full training split | - | 1 | {full['mAP50']:.3f} | {full['images']:,.0f} | - | "
                     f"{full['boxes']:,.0f} | - | - | - | - | {'-' if train_s is None else f'{train_s:,.0f}'} |")
    # mAP50 against labeled images, one column per strategy/mode, rows by cycle.
    keys = list(report["strategies"])
    cycles = sorted({p["cycle"] for s in report["strategies"].values() for p in s["curve"]})
    lines += ["", "mAP50 by cycle (images: the labeled pool, mean over every run that reached the cycle):", "",
              "| cycle | images | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for k in cycles:
        points = [next((p for p in s["curve"] if p["cycle"] == k), None) for s in report["strategies"].values()]
        images = np.average([p["images"]["mean"] for p in points if p], weights=[p["images"]["n"] for p in points if p])
        lines.append(f"| {k} | {images:,.0f} | " + " | ".join(_cell(p["mAP50"]) if p else "-" for p in points) + " |")
    lines += ["", *(f"- {s['sentence']}" for s in report["strategies"].values())]
    if full is not None:
        lines.append(f"- The full training split ({full['images']:,.0f} images, {full['boxes']:,.0f} boxes) "
                     f"reaches mAP50 {full['mAP50']:.3f}: the upper bound.")
    lines += ["", f"Significance rule: {report['rule']}.", ""]
    return "\n".join(lines)


def plot_curves(report: Mapping[str, Any], *, dpi: int = 120) -> bytes:
    """``curves.png`` as bytes: mAP50 against labeled images (left) and labeled boxes (right).

    Per strategy and mode, the mean over seeds as a line and the min-max over seeds as a band (with
    3 seeds a ±std band would claim more than the data show); the full-data run as a horizontal
    line. Colour names the strategy, line style the mode. Uses matplotlib's Agg canvas through
    ``Figure`` directly, so no pyplot state or display is touched.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    strategies = sorted({s["strategy"] for s in report["strategies"].values()},
                        key=lambda s: (s != report["baseline"], s))
    colours = {s: ("black" if s == report["baseline"] else f"C{i}") for i, s in enumerate(strategies)}
    modes = sorted(report["modes"], key=lambda m: ({"precomputed": 0, "adaptive": 1}.get(m, 2), m))
    styles = {m: ls for m, ls in zip(modes, ["-", "--", ":", "-."] * (len(modes) // 4 + 1))}
    for ax, axis in zip(axes, ("images", "boxes")):
        for key, s in report["strategies"].items():
            x = [p[axis]["mean"] for p in s["curve"]]
            m = [p["mAP50"]["mean"] for p in s["curve"]]
            ax.plot(x, m, color=colours[s["strategy"]], linestyle=styles[s["mode"]], marker="o", markersize=3,
                    label=f"{key} (n={len(s['seeds'])})")
            ax.fill_between(x, [p["mAP50"]["min"] for p in s["curve"]], [p["mAP50"]["max"] for p in s["curve"]],
                            color=colours[s["strategy"]], alpha=0.15, linewidth=0)
        if report["full"] is not None:
            ax.axhline(report["full"]["mAP50"], color="grey", linestyle="-.", linewidth=1,
                       label=f"full training split ({report['full']['images']:,.0f} images)")
        ax.set_xlabel(f"labeled {axis} (mean over seeds)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("validation mAP50")
    axes[0].set_title("mAP50 against labeled images (band: min-max over seeds)")
    axes[1].set_title("mAP50 against labeled boxes")
    axes[1].legend(fontsize=8, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write_report(records: Sequence[Mapping[str, Any]], full: Mapping[str, Any] | None,
                 out_dir: str | Path, *, baseline: str = BASELINE) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``curves.png`` into ``out_dir`` (each atomically).

    Args:
        records: curve records, one per (strategy, mode, seed); see the module docstring.
        full: the full-training-split run (``{"mAP50", "images", "boxes", "seconds"?}``) or ``None``.
        out_dir: created if missing.
        baseline: the strategy the others are measured against.

    Returns:
        The report dict written to ``report.json`` (keys: :func:`build_report`).
    """
    report = build_report(records, full, baseline=baseline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, render_markdown(report))
    atomic_write_bytes(out / CURVES_PNG, plot_curves(report))
    return report
