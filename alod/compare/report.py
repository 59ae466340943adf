"""The comparison report: does a strategy beat ``random`` at equal images, and at equal boxes?

Pure functions over plain dicts: no torch, no training, no reading of run folders. ``alod compare``
collects one *curve record* per run and passes the list here; :func:`write_report` turns it into
``report.json`` (full precision), ``report.md`` (rounded for reading) and ``curves.png``.

Input (plain dicts, e.g. straight from JSON)::

    write_report(records, full, out_dir, *, protocol) -> dict

    CurveRecord = {"strategy": "entropy",
                   "mode": "adaptive" | "precomputed",
                   "seed": 0,
                   "equal_boxes_to": None | "entropy",   # optional, default None. A random run that took
                        # random images until its pool's box count reached strategy X's pool (same seed,
                        # same mode) at every cycle; "strategy" is then "random".
                   "scorer_images": 0,          # optional, default 0: labeled images a scorer was trained on
                   "scorer_charged": 0,         # optional, default 0: how many of them are NOT in the run's
                                                # labeled pool; added to every cycle's images
                   "scorer_boxes_charged": 0,   # optional, default 0: their boxes; added to every cycle's boxes
                   "stop_cycle": 3,             # optional: int | None, the first cycle whose "agreement" >=
                        # protocol["stop_agreement"] (None: never). Absent: derived from the cycles'
                        # agreements when the protocol has stop_agreement and some agreement is recorded;
                        # given together with them, the two must agree.
                   "cycles": [CycleRecord, ...]}          # any order; sorted by "cycle" here
    CycleRecord = {"cycle": 1,                            # int, unique within a record
                   "images": 60, "boxes": 420,            # labeled pool after this cycle
                   "mAP50": 0.05,                         # validation mAP50 of this cycle's model, finite
                   "mAP": 0.02,                           # optional; None / NaN = not measured
                   "per_class": {"car": 0.1, "bus": None},   # optional AP50 per class; None / NaN = no AP
                   "seconds": {"scoring": 1.0, "training": 30.0},   # optional; a missing key is 0
                   "actions": 380,       # optional (None = not recorded): cumulative annotator actions to
                        # label the pool up to this cycle when the previous cycle's model pre-annotates
                        # (alod.cycle.actions: draw + fix + delete); cycle 1 has no model, so its boxes
                        # are all drawn (actions == boxes). Never decreases from cycle to cycle.
                   "agreement": 0.93}    # optional, None at cycle 1: class-aware F1 in [0, 1] between this
                        # cycle's and the previous cycle's models on a fixed probe of unlabeled images
    FullRecord  = {"seed": 0, "mAP50": 0.3, "images": 600, "boxes": 4000,   # one per seed
                   "mAP": 0.15, "recipe": {...}, "seconds": {"training": 100.0}}   # optional keys
    full        = list of FullRecord, possibly empty, or None
    protocol    = dict copied into report.json["protocol"]; must hold "seeds" (list of int, every
                  record's seed among them), "cycle1_shared" (bool) and "scorer" (str); optional
                  "stop_agreement" (number in [0, 1]: the agreement at which a run stops).

Every new key is optional: records without ``actions``, ``agreement`` and ``stop_cycle`` give the
report they gave before those keys existed (the new report keys are then ``None`` / ``False``).

Runs with strategy ``random`` and no ``equal_boxes_to`` are the *baseline at equal images*, per mode.
A strategy named ``<base>+<variant>`` (``alod compare``'s variants) is also compared with ``<base>``
of its mode, seed by seed (``variant_comparisons``): does the option help the strategy it modifies?

Definitions (``n`` = number of paired seeds; every interval and test is over per-seed differences):

* **Axes.** A run's images axis is its pool's images plus ``scorer_charged``; its boxes axis its
  pool's boxes plus ``scorer_boxes_charged``: labels a scorer used are spent even if the pool
  never holds them. Its **actions axis** (only when *every* record has ``actions`` on every cycle:
  ``actions_recorded``; otherwise the report says "annotator actions: not recorded" and has no
  actions numbers) is its pool's actions plus ``scorer_boxes_charged``: the scorer's images were
  labeled without a model's help, every box drawn. Wherever the boxes axis appears below, the
  actions axis appears beside it: ``aulc_actions``, ``final_actions``, savings per target in actions,
  and at equal boxes the final actions difference.
* **Pairing.** Strategy (mode m, seed s) is compared with random (mode m, seed s); a missing random
  seed, or paired runs with different cycle numbers, is an :class:`AlodError`.
* **AULC** (:func:`aulc`): trapezoid area under mAP50 over the images axis with ``(0, 0)``
  prepended, divided by the final images: the mean mAP50 over the budget, in mAP50 units.
  ``aulc_boxes`` is the same on the boxes axis. Each run is normalised by its *own* budget, so
  ``aulc_boxes`` ignores how many boxes a run spent: it compares runs only at equal box budgets (the
  equal-box comparison); at equal images, the boxes spent (``final_boxes``) and the box savings per
  target carry the cost in boxes. With a scorer charge the strategy's budget is
  longer than random's, and its first segment starts later: the charge lowers its AULC.
* **Interval and test** (:func:`paired_test`): ``ci95 = mean ± t_{0.975, n-1} sd / sqrt(n)`` with
  ``sd`` the ``ddof=1`` standard deviation of the differences; two-sided paired t-test p-value.
  With ``sd == 0`` the p-value is 1 for a zero mean and 0 otherwise. With ``n = 1``: ``ci95`` and
  ``p`` are ``None`` (no spread to judge against), and the sentences say so.
* **Holm** (:func:`holm`): Holm-Bonferroni adjusted p-values (``p_holm``) in four families: the
  headline AULC differences at equal images over every (strategy x mode); the equal-boxes tests
  (final mAP50, AULC-on-boxes and, with actions recorded, final actions differences of every
  strategy x mode); the image savings (log interpolation) over every (strategy x mode x target);
  and, with actions recorded, the action savings (log) likewise. Tests with ``p = None`` are not in
  a family.
* **Measurable**: the ci95 excludes 0 *and* ``p_holm < 0.05``; otherwise "no measurable gain".
* **Targets.** For each of random's cycles ``k`` and each seed ``s``: ``target_k(s)`` is random_s's
  mAP50 at cycle k. *Needed* labels to reach it (:func:`needed_log`, primary): on the running
  maximum of the curve (a later dip does not undo a reached level), starting from
  ``(0, 1e-4)``, interpolated linearly in ``log(max(mAP50, 1e-4))`` between consecutive cycles.
  Sensitivity (:func:`needed_linear`): the first crossing of the raw curve, with ``(0, 0)``
  prepended, interpolated linearly in mAP50. Both on the images and the boxes axis.
* **Saving** = random's *own* needed labels for ``target_k(s)`` (same rule, same axis) minus the
  strategy's; ``saved_pct = 100 * mean(saving) / mean(random's needed)``. Random's own needed at
  cycle k equals its images (boxes) at k whenever its curve rises strictly up to k, so savings
  measure the strategy against random's curve; where random's curve dips or is flat, its own
  envelope reaches the lower target earlier, and measuring against its images at k would credit
  the strategy with random's noise. ``random_images`` / ``random_boxes`` (at k) are reported beside.
* **Censored**: a run whose curve never reaches ``target_k(s)`` (the same condition under both
  interpolations: its maximum is below the target). Its needed value is its final images (boxes),
  i.e. censored at the budget: the seed stays in the mean (a lower bound on what it would need),
  and ``censored`` counts such seeds per target. Its saving is ``min(random's need - budget, 0)``:
  never positive, because a run that stopped short of the target on a *smaller* budget than random
  needed (a box budget that underspent) has shown no saving, only that its saving is below
  ``random's need - budget``; counted at its budget it would look like one.
* **Actions per box** (``actions_per_box``, per comparison and at equal boxes): the mean over
  seeds of the pool's actions / the pool's boxes at the final cycle (no scorer charge), for the
  strategy and for random: 1 means pre-annotation saved nothing, 0.6 that it saved 40% of the
  drawing.
* **Equal boxes.** For each strategy with equal-box random runs (same mode, every seed): per seed,
  strategy minus equal-box random of the final mAP50, of ``aulc_boxes`` and (with actions
  recorded) of ``final_actions``, with ci95, p, p_holm.
  Per cycle, the mean pool boxes and images of both; ``final_box_mismatch`` = mean over seeds of
  ``|strategy pool boxes - random pool boxes|`` at the final cycle (pool boxes: what was matched).
* **Full data**: mean and ci95 of mAP50 over the full records' seeds. ``random_final_over_full``
  (per mode) = random's mean final mAP50 / the full mean; ``off_noise_floor`` is ``ratio >= 0.5``:
  below half of the full-data detector the cycles' detectors sit near the noise floor, and
  differences between strategies say little.
* **Stopping** (``curves[i].stopping``, per run group; ``None`` when no run of the group records
  a stop signal): a run stops at its ``stop_cycle``. ``n`` runs record the signal, ``stopped`` of
  them stop; over the stopped seeds: the mean stop cycle, the mean mAP50 at the stop cycle and at
  the final cycle (the same seeds), ``mAP50_lost`` = final minus at stop (mean, ci95), and
  ``saved`` = final minus at stop of the images, boxes and (when the group's runs have them)
  actions axes: the labels that stopping would not have spent. Runs that never stop save nothing
  and are not in these means.
* **Sentences**, one per (strategy, mode): the AULC verdict at equal images ("a measurable gain",
  "measurably worse than random" or "no measurable gain"), the labels it needed for random's final
  mAP50 (with actions recorded: also in annotator actions, with the saving's verdict), the
  equal-boxes verdict on ``aulc_boxes`` with the final mAP50 (and actions) difference beside it (or
  that equal boxes were not tested, with the boxes and actions each spent), and, stated outright,
  "better at equal images but not at equal boxes" when that is the case (likewise when it needs
  measurably more actions); then actions per box, charged scorer labels, censored targets, and
  fewer than 5 seeds.
* **Per-class AP50** at the final cycle: per run group, the mean over the seeds with an AP for
  that class (``n`` says how many), so rare classes show.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter
from scipy import stats

from alod.utils import AlodError, atomic_write_bytes, atomic_write_json, atomic_write_text

REPORT_FORMAT = "alod.compare-report/2"
BASELINE = "random"
MODES = ("precomputed", "adaptive")
#: mAP50 floor of the log interpolation: log(0) is undefined and early cycles sit near 0.
LOG_FLOOR = 1e-4
ALPHA = 0.05
#: GUIDE section 3 asks for at least this many seeds.
MIN_SEEDS = 5
#: random's final mAP50 over the full-data mAP50 below which the detectors sit near the floor.
NOISE_FLOOR_RATIO = 0.5
REPORT_JSON, REPORT_MD, CURVES_PNG = "report.json", "report.md", "curves.png"
#: Okabe & Ito (2008), colour-blind safe; black is random.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
PROTOCOL_KEYS = ("seeds", "cycle1_shared", "scorer")

GroupKey = tuple[str, str, str | None]   # (strategy, mode, equal_boxes_to)


# --------------------------------------------------------------------------- curve arithmetic


def aulc(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Normalised area under a learning curve: the mean of ``y`` over ``[0, x[-1]]``.

    Args:
        x: ``float[n]`` non-decreasing labels (images or boxes) after each cycle.
        y: ``float[n]`` mAP50 after each cycle.

    Returns:
        The trapezoid area of ``y`` over ``x`` with ``(0, 0)`` prepended, divided by ``x[-1]``
        (mAP50 units); ``None`` when ``x[-1]`` is 0 (no labels, no budget to average over).
    """
    xs = np.concatenate([[0.0], np.asarray(x, dtype=np.float64)])
    ys = np.concatenate([[0.0], np.asarray(y, dtype=np.float64)])
    if xs[-1] <= 0:
        return None
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))
    return area / float(xs[-1])


def monotone_envelope(y: Sequence[float]) -> np.ndarray:
    """Running maximum of ``y``: the best mAP50 reached so far (``float[n]``, never decreasing)."""
    return np.maximum.accumulate(np.asarray(y, dtype=np.float64))


def needed_log(x: Sequence[float], y: Sequence[float], target: float, *, floor: float = LOG_FLOOR) -> float | None:
    """Labels a curve needs to reach ``target``: log interpolation on its monotone envelope.

    Args:
        x: ``float[n]`` non-decreasing labels after each cycle; ``(0, floor)`` is prepended.
        y: ``float[n]`` mAP50 after each cycle; values below ``floor`` count as ``floor``.
        target: mAP50 to reach.

    Returns:
        0 for a target at or below ``floor``; ``x`` of the first envelope point that equals the
        target exactly; otherwise the point on the first segment that crosses it, linear in
        ``log(mAP50)``; ``None`` when the curve never reaches it (censored).
    """
    xs = np.concatenate([[0.0], np.asarray(x, dtype=np.float64)])
    logs = np.log(monotone_envelope(np.maximum(np.concatenate([[floor], np.asarray(y, dtype=np.float64)]), floor)))
    goal = math.log(max(float(target), floor))
    hits = np.flatnonzero(logs >= goal)
    if len(hits) == 0:
        return None
    i = int(hits[0])
    if i == 0:
        return 0.0
    if logs[i] == goal:  # exact: a + (b - a) may miss b by an ulp
        return float(xs[i])
    frac = (goal - logs[i - 1]) / (logs[i] - logs[i - 1])
    return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))


def needed_linear(x: Sequence[float], y: Sequence[float], target: float) -> float | None:
    """Labels at the first crossing of ``target`` by the raw curve, linear between cycles.

    Args:
        x: ``float[n]`` non-decreasing labels after each cycle; ``(0, 0)`` is prepended.
        y: ``float[n]`` mAP50 after each cycle (not made monotone: a later dip does not matter,
            only the first crossing does).
        target: mAP50 to reach.

    Returns:
        The crossing's ``x`` (exactly ``x[i]`` when ``y[i] == target``), or ``None`` if never.
    """
    xs = np.concatenate([[0.0], np.asarray(x, dtype=np.float64)])
    ys = np.concatenate([[0.0], np.asarray(y, dtype=np.float64)])
    hits = np.flatnonzero(ys >= float(target))
    if len(hits) == 0:
        return None
    i = int(hits[0])
    if i == 0 or ys[i] == target:
        return float(xs[i])
    frac = (target - ys[i - 1]) / (ys[i] - ys[i - 1])
    return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))


# --------------------------------------------------------------------------- statistics


def paired_test(diffs: Sequence[float]) -> dict[str, Any]:
    """Mean, 95% t interval and two-sided t-test p-value of per-seed differences.

    Args:
        diffs: ``float[n]`` one difference per seed (strategy minus random), in its own unit.

    Returns:
        ``{"n", "mean", "sd", "ci95": [lo, hi] | None, "p": float | None}``; ``sd`` with ``ddof=1``;
        ``ci95`` and ``p`` are ``None`` below two seeds. A zero ``sd`` gives ``p = 1`` for a zero
        mean and ``p = 0`` otherwise (a difference without spread).
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None, "p": None}
    mean = float(d.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "ci95": None, "p": None}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
    else:  # by hand: scipy warns about precision on nearly constant differences
        p = float(2.0 * stats.t.sf(abs(mean / (sd / math.sqrt(n))), n - 1))
    return {"n": n, "mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "p": p}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order; ``None`` stays ``None`` and is not counted.

    The ``j``-th smallest of ``m`` p-values becomes ``max_{i<=j} min(1, (m - i) p_(i))`` (0-based ``i``).
    """
    present = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(present, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def measurable(test: Mapping[str, Any]) -> bool | None:
    """True when ``test["ci95"]`` excludes 0 and ``test["p_holm"] < 0.05``; ``None`` without an interval."""
    if test.get("ci95") is None or test.get("p_holm") is None:
        return None
    lo, hi = test["ci95"]
    return (lo > 0 or hi < 0) and test["p_holm"] < ALPHA


def _mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci95", "n"}`` of plain values (the t interval of :func:`paired_test`)."""
    t = paired_test(values)
    return {"mean": t["mean"], "ci95": t["ci95"], "n": t["n"]}


def _mean(values: Sequence[float | None]) -> float | None:
    v = [float(a) for a in values if a is not None]
    return float(np.mean(v)) if v else None


# --------------------------------------------------------------------------- validation


def _number(value: Any, where: str, key: str, *, allow_none: bool = False) -> float | None:
    """``float(value)``; with ``allow_none``, ``None`` and NaN (alod.evaluation's "no AP") give ``None``."""
    if allow_none and (value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))):
        return None
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value):
        raise AlodError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _count(value: Any, where: str, key: str) -> int:
    """A non-negative integer (labels are counted, never fractional)."""
    v = _number(value, where, key)
    if v < 0 or v != int(v):
        raise AlodError(f"{where}: {key!r} must be a non-negative whole number, got {value!r}")
    return int(v)


def _check_protocol(protocol: Any) -> dict[str, Any]:
    if not isinstance(protocol, Mapping):
        raise AlodError(f"protocol must be a dict with {', '.join(PROTOCOL_KEYS)}; got {type(protocol).__name__}")
    missing = [k for k in PROTOCOL_KEYS if k not in protocol]
    if missing:
        raise AlodError(f"protocol lacks {', '.join(missing)}: the report states them in its header "
                        "(seeds run, whether cycle 1 is shared, which scorer ranked the images)")
    seeds = protocol["seeds"]
    if not isinstance(seeds, Sequence) or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                                  for s in seeds):
        raise AlodError(f"protocol: 'seeds' must be a list of integers, got {seeds!r}")
    if not isinstance(protocol["cycle1_shared"], bool):
        raise AlodError(f"protocol: 'cycle1_shared' must be true or false, got {protocol['cycle1_shared']!r}")
    if not isinstance(protocol["scorer"], str):
        raise AlodError(f"protocol: 'scorer' must be a string, got {protocol['scorer']!r}")
    stop = protocol.get("stop_agreement")
    if stop is not None and not 0.0 <= _number(stop, "protocol", "stop_agreement") <= 1.0:
        raise AlodError(f"protocol: 'stop_agreement' must lie in [0, 1] (an F1 between two models), got {stop!r}")
    return {**protocol, "seeds": [int(s) for s in seeds]}


def _check_cycle(c: Any, where: str) -> dict[str, Any]:
    if not isinstance(c, Mapping):
        raise AlodError(f"{where}: a cycle must be a dict, got {c!r}")
    miss = [k for k in ("cycle", "images", "boxes", "mAP50") if k not in c]
    if miss:
        raise AlodError(f"{where}: a cycle lacks {', '.join(miss)}: {dict(c)!r}")
    cw = f"{where}, cycle {c['cycle']}"
    sec = c.get("seconds") or {}
    per_class = c.get("per_class") or {}
    return {"cycle": _count(c["cycle"], where, "cycle"),
            "images": _count(c["images"], cw, "images"), "boxes": _count(c["boxes"], cw, "boxes"),
            "mAP50": _number(c["mAP50"], cw, "mAP50"),
            "mAP": _number(c.get("mAP"), cw, "mAP", allow_none=True),
            "per_class": {str(k): _number(v, cw, f"per_class/{k}", allow_none=True) for k, v in per_class.items()},
            "seconds": {k: _number(sec.get(k, 0.0), cw, f"seconds/{k}") for k in ("scoring", "training")},
            "actions": None if c.get("actions") is None else _count(c["actions"], cw, "actions"),
            "agreement": _agreement(c.get("agreement"), cw)}


def _agreement(value: Any, where: str) -> float | None:
    """An F1 in [0, 1], or ``None`` (not measured: cycle 1 has no previous model)."""
    v = _number(value, where, "agreement", allow_none=True)
    if v is not None and not 0.0 <= v <= 1.0:
        raise AlodError(f"{where}: 'agreement' must lie in [0, 1] (an F1 between two models), got {value!r}")
    return v


def _stop(rec: Mapping[str, Any], cycles: list[dict], where: str, threshold: float | None) -> dict[str, Any]:
    """``{"stop_recorded", "stop_cycle"}`` of one run: given, or derived from its agreements (module docstring)."""
    numbers = [c["cycle"] for c in cycles]
    derivable = threshold is not None and any(c["agreement"] is not None for c in cycles)
    derived = next((c["cycle"] for c in cycles if c["agreement"] is not None and c["agreement"] >= threshold),
                   None) if derivable else None
    if "stop_cycle" not in rec:
        return {"stop_recorded": derivable, "stop_cycle": derived}
    given = rec["stop_cycle"]
    if given is not None:
        given = _count(given, where, "stop_cycle")
        if given not in numbers:
            raise AlodError(f"{where}: stop_cycle {given} is not one of its cycles {numbers}")
    if derivable and given != derived:
        raise AlodError(f"{where}: stop_cycle {given} disagrees with its cycles' agreements, which first reach "
                        f"stop_agreement {threshold} at cycle {derived}; recompute one of them")
    return {"stop_recorded": True, "stop_cycle": given}


def _record_head(rec: Any, i: int) -> tuple[GroupKey, int, str]:
    """The record's (strategy, mode, equal_boxes_to), its seed, and a name for messages."""
    where = f"curve record {i}"
    if not isinstance(rec, Mapping):
        raise AlodError(f"{where}: expected a dict with strategy, mode, seed, cycles; got {type(rec).__name__}")
    missing = [k for k in ("strategy", "mode", "seed", "cycles") if k not in rec]
    if missing:
        raise AlodError(f"{where}: missing {', '.join(missing)} (a record is one run: strategy, mode, seed, cycles)")
    if isinstance(rec["seed"], bool) or not isinstance(rec["seed"], (int, np.integer)):
        raise AlodError(f"{where}: 'seed' must be an integer, got {rec['seed']!r}")
    eq = rec.get("equal_boxes_to")
    key = (str(rec["strategy"]), str(rec["mode"]), None if eq is None else str(eq))
    where = f"curve record {i} ({_label(key)}, seed {int(rec['seed'])})"
    if key[1] not in MODES:
        raise AlodError(f"{where}: unknown mode {key[1]!r}; choose from {', '.join(MODES)}")
    if eq is not None and key[0] != BASELINE:
        raise AlodError(f"{where}: equal_boxes_to is set, so the run must be {BASELINE!r}, not {key[0]!r}")
    return key, int(rec["seed"]), where


def _check_record(rec: Any, i: int, threshold: float | None = None) -> dict[str, Any]:
    """A validated copy of one curve record; errors name it. ``threshold``: protocol stop_agreement."""
    key, seed, where = _record_head(rec, i)
    if not rec["cycles"]:
        raise AlodError(f"{where}: no cycles; leave out runs that have not finished a cycle")
    cycles = sorted((_check_cycle(c, where) for c in rec["cycles"]), key=lambda c: c["cycle"])
    numbers = [c["cycle"] for c in cycles]
    if len(set(numbers)) != len(numbers):
        raise AlodError(f"{where}: cycle numbers repeat ({numbers}); each cycle is recorded once")
    for axis in ("images", "boxes"):
        vals = [c[axis] for c in cycles]
        if any(b < a for a, b in pairwise(vals)):
            raise AlodError(f"{where}: labeled {axis} shrink from one cycle to the next ({vals}); "
                            "the pool only grows, so the record is mixed up")
    acts = [c["actions"] for c in cycles]
    if None not in acts and any(b < a for a, b in pairwise(acts)):
        raise AlodError(f"{where}: annotator actions shrink from one cycle to the next ({acts}); "
                        "they are cumulative, so the record is mixed up")
    scorer = {k: _count(rec.get(k, 0), where, k) for k in ("scorer_images", "scorer_charged", "scorer_boxes_charged")}
    if scorer["scorer_charged"] > scorer["scorer_images"]:
        raise AlodError(f"{where}: scorer_charged ({scorer['scorer_charged']}) exceeds scorer_images "
                        f"({scorer['scorer_images']}): only images the scorer saw can be charged")
    if scorer["scorer_boxes_charged"] and not scorer["scorer_charged"]:
        raise AlodError(f"{where}: scorer_boxes_charged without scorer_charged images")
    if cycles[-1]["images"] + scorer["scorer_charged"] == 0:
        raise AlodError(f"{where}: no labeled images at the final cycle; there is no curve to compare")
    budget = rec.get("box_budget")
    if budget is not None and _count(budget, where, "box_budget") == 0:
        raise AlodError(f"{where}: box_budget must be > 0 boxes per cycle (or absent), got {budget!r}")
    return {"strategy": key[0], "mode": key[1], "equal_boxes_to": key[2], "seed": seed, "where": where,
            "cycles": cycles, **scorer, "has_actions": None not in acts, **_stop(rec, cycles, where, threshold),
            "box_budget": None if budget is None else int(budget)}


def _check_records(records: Any, protocol: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        raise AlodError(f"records must be a list of curve records, got {type(records).__name__}")
    out, seen = [], {}
    for i, rec in enumerate(records):
        r = _check_record(rec, i, protocol.get("stop_agreement"))
        key = (r["strategy"], r["mode"], r["equal_boxes_to"], r["seed"])
        if key in seen:
            raise AlodError(f"{r['where']}: the same strategy, mode, seed and equal_boxes_to as curve record "
                            f"{seen[key]}; pass each run once")
        if r["seed"] not in protocol["seeds"]:
            raise AlodError(f"{r['where']}: seed {r['seed']} is not among protocol seeds {protocol['seeds']}")
        seen[key] = i
        out.append(r)
    return out


def _check_full(full: Any) -> list[dict[str, Any]]:
    """Validated full-data records, sorted by seed; ``None`` or ``[]`` give ``[]``."""
    if full is None:
        return []
    if isinstance(full, Mapping) or not isinstance(full, Sequence):
        raise AlodError(f"full must be a list of full-data records (one per seed) or None, got {type(full).__name__}")
    out, seeds = [], set()
    for i, f in enumerate(full):
        where = f"full record {i}"
        missing = [k for k in ("seed", "mAP50", "images", "boxes") if not isinstance(f, Mapping) or k not in f]
        if missing:
            raise AlodError(f"{where}: missing {', '.join(missing)} (a full record is one seed's full-data run)")
        if isinstance(f["seed"], bool) or not isinstance(f["seed"], (int, np.integer)):
            raise AlodError(f"{where}: 'seed' must be an integer, got {f['seed']!r}")
        seed = int(f["seed"])
        if seed in seeds:
            raise AlodError(f"{where}: seed {seed} appears twice among the full records")
        seeds.add(seed)
        where = f"full record {i} (seed {seed})"
        sec = f.get("seconds") or {}
        out.append({"seed": seed, "mAP50": _number(f["mAP50"], where, "mAP50"),
                    "mAP": _number(f.get("mAP"), where, "mAP", allow_none=True),
                    "images": _count(f["images"], where, "images"), "boxes": _count(f["boxes"], where, "boxes"),
                    "recipe": dict(f.get("recipe") or {}),
                    "seconds": {k: _number(v, where, f"seconds/{k}") for k, v in sec.items()}})
    return sorted(out, key=lambda f: f["seed"])


# --------------------------------------------------------------------------- grouping


def _label(key: GroupKey) -> str:
    strategy, mode, eq = key
    return f"{strategy}, equal boxes to {eq} ({mode})" if eq else f"{strategy} ({mode})"


def _order(key: GroupKey) -> tuple:
    strategy, mode, eq = key
    return (MODES.index(mode), eq is not None, strategy != BASELINE, eq or "", strategy)


def _group(records: list[dict]) -> dict[GroupKey, dict[int, dict]]:
    groups: dict[GroupKey, dict[int, dict]] = {}
    for r in records:
        groups.setdefault((r["strategy"], r["mode"], r["equal_boxes_to"]), {})[r["seed"]] = r
    return {k: dict(sorted(groups[k].items())) for k in sorted(groups, key=_order)}


def _axes(run: Mapping[str, Any]) -> dict[str, np.ndarray | None]:
    """A run's charged images, boxes and actions axes and its mAP50 (each ``float[n_cycles]``;
    ``actions`` is ``None`` when the run does not record them)."""
    cyc = run["cycles"]
    actions = (np.array([c["actions"] + run["scorer_boxes_charged"] for c in cyc], dtype=np.float64)
               if run["has_actions"] else None)
    return {"images": np.array([c["images"] + run["scorer_charged"] for c in cyc], dtype=np.float64),
            "boxes": np.array([c["boxes"] + run["scorer_boxes_charged"] for c in cyc], dtype=np.float64),
            "actions": actions, "mAP50": np.array([c["mAP50"] for c in cyc], dtype=np.float64)}


def _pairs(groups: Mapping[GroupKey, dict[int, dict]], key: GroupKey,
           against: GroupKey) -> list[tuple[int, dict, dict]]:
    """``(seed, run, reference run)`` for every seed of ``key``; errors if ``against`` lacks one."""
    runs, refs = groups[key], groups.get(against, {})
    missing = [s for s in runs if s not in refs]
    if missing:
        raise AlodError(f"{_label(key)} has seeds {missing} that {_label(against)} lacks: every comparison is "
                        f"paired by seed, so run {_label(against)} with seeds {missing} too")
    out = []
    for seed, run in runs.items():
        ref = refs[seed]
        if [c["cycle"] for c in run["cycles"]] != [c["cycle"] for c in ref["cycles"]]:
            raise AlodError(f"{run['where']} and {ref['where']} have different cycles "
                            f"({[c['cycle'] for c in run['cycles']]} vs {[c['cycle'] for c in ref['cycles']]}); "
                            "compare finished runs of the same schedule")
        out.append((seed, run, ref))
    return out


def _check_equal_box_runs(groups: Mapping[GroupKey, dict[int, dict]]) -> None:
    """Every equal-box random run matches a strategy run of the same mode and seed."""
    for (strategy, mode, eq), runs in groups.items():
        if eq is None:
            continue
        target = groups.get((eq, mode, None), {})
        orphans = [s for s in runs if s not in target]
        if orphans:
            raise AlodError(f"{_label((strategy, mode, eq))}: seeds {orphans} have no {eq} ({mode}) run to match "
                            "boxes with; pass that run too or leave the equal-box run out")


# --------------------------------------------------------------------------- comparisons


def _difference(pairs: Sequence[tuple[int, dict, dict]], value, *, ref: str = "random") -> dict[str, Any]:
    """Strategy mean, reference mean (under the key ``ref``) and the paired difference of
    ``value(run)`` over ``pairs``."""
    a = [value(run) for _, run, _ in pairs]
    b = [value(r) for _, _, r in pairs]
    if any(v is None for v in a + b):
        return {"strategy": _mean(a), ref: _mean(b), "difference": None, "ci95": None, "p": None,
                "p_holm": None, "n": 0}
    t = paired_test([x - y for x, y in zip(a, b)])
    return {"strategy": float(np.mean(a)), ref: float(np.mean(b)), "difference": t["mean"],
            "ci95": t["ci95"], "p": t["p"], "p_holm": None, "n": t["n"],
            "per_seed": [{"seed": s, "strategy": x, ref: y} for (s, _, _), x, y in zip(pairs, a, b)]}


def _aulc_of(axis: str):
    return lambda run: aulc(_axes(run)[axis], _axes(run)["mAP50"])


def _final_of(key: str):
    """The final cycle's ``key`` (``images``, ``boxes``: on the charged axes)."""
    return lambda run: float(_axes(run)[key][-1])


def _needed_row(x: np.ndarray, y: np.ndarray, xr: np.ndarray, yr: np.ndarray, target: float) -> dict[str, Any]:
    """One seed and one target on one axis: needed labels of the strategy and random, both interpolations."""
    row = {}
    for name, fn in (("log", needed_log), ("linear", needed_linear)):
        need = fn(x, y, target)
        ref = fn(xr, yr, target)  # never None: random reaches its own value
        if need is None:  # censored: it needs more than its budget, by how much is unknown
            need = float(x[-1])
            # A run that stopped short of the target on a smaller budget than random needed is
            # credited no saving: all its data says is that the saving is below ref - budget.
            row[name] = {"needed": need, "reference": ref, "saved": min(ref - need, 0.0)}
            continue
        row[name] = {"needed": need, "reference": ref, "saved": ref - need}
    return row


def _target(pairs: Sequence[tuple[int, dict, dict]], k: int, *, actions: bool = False) -> dict[str, Any]:
    """Savings at random's cycle-``k`` mAP50, seed by seed (targets differ per seed); on the actions
    axis too when ``actions`` (else its keys are ``None``)."""
    axes = ("images", "boxes", "actions") if actions else ("images", "boxes")
    per_seed = []
    for seed, run, ref in pairs:
        a, r = _axes(run), _axes(ref)
        j = [c["cycle"] for c in ref["cycles"]].index(k)
        goal = float(r["mAP50"][j])
        row = {"seed": seed, "target_mAP50": goal, "censored": bool(a["mAP50"].max() < goal),
               "random_images": float(r["images"][j]), "random_boxes": float(r["boxes"][j])}
        if actions:
            row["random_actions"] = float(r["actions"][j])
        for axis in axes:
            row[axis] = _needed_row(a[axis], a["mAP50"], r[axis], r["mAP50"], goal)
        per_seed.append(row)
    out = {"cycle": k, "n": len(per_seed), "target_mAP50": _mean([r["target_mAP50"] for r in per_seed]),
           "censored": sum(r["censored"] for r in per_seed),
           "censored_seeds": [r["seed"] for r in per_seed if r["censored"]],
           "random_images": _mean([r["random_images"] for r in per_seed]),
           "random_boxes": _mean([r["random_boxes"] for r in per_seed]),
           "random_actions": _mean([r["random_actions"] for r in per_seed]) if actions else None,
           "actions": None, "per_seed": per_seed}
    for axis in axes:
        out[axis] = {}
        for name in ("log", "linear"):
            cells = [r[axis][name] for r in per_seed]
            t = paired_test([c["saved"] for c in cells])
            ref = _mean([c["reference"] for c in cells])
            out[axis][name] = {"reference": ref, "needed": _mean([c["needed"] for c in cells]),
                               "saved": t["mean"], "saved_pct": 100.0 * t["mean"] / ref if ref else None,
                               "ci95": t["ci95"], "p": t["p"], "p_holm": None}
    return out


def _actions_per_box(run: Mapping[str, Any]) -> float | None:
    """The pool's actions over its boxes at the final cycle (no scorer charge); ``None`` without boxes."""
    last = run["cycles"][-1]
    return last["actions"] / last["boxes"] if last["boxes"] and last["actions"] is not None else None


def _apb(pairs: Sequence[tuple[int, dict, dict]]) -> dict[str, float | None]:
    return {"strategy": _mean([_actions_per_box(run) for _, run, _ in pairs]),
            "random": _mean([_actions_per_box(ref) for _, _, ref in pairs])}


def _equal_boxes(groups: Mapping[GroupKey, dict[int, dict]], key: GroupKey, *,
                 actions: bool = False) -> dict[str, Any] | None:
    """Strategy ``key`` against its equal-box random runs, or ``None`` when there are none."""
    eq_key = (BASELINE, key[1], key[0])
    if eq_key not in groups:
        return None
    pairs = _pairs(groups, key, eq_key)
    mismatch = [abs(run["cycles"][-1]["boxes"] - ref["cycles"][-1]["boxes"]) for _, run, ref in pairs]
    strategy_boxes = _mean([run["cycles"][-1]["boxes"] for _, run, _ in pairs])
    cycles = []
    for j, c in enumerate(pairs[0][1]["cycles"]):
        cycles.append({"cycle": c["cycle"], **{f"{who}_{axis}": _mean([p[i]["cycles"][j][axis] for p in pairs])
                                               for who, i in (("strategy", 1), ("random", 2))
                                               for axis in ("boxes", "images", *(("actions",) if actions else ()))}})
    return {"seeds": [s for s, _, _ in pairs], "final_mAP50": _difference(pairs, _final_of("mAP50")),
            "aulc_boxes": _difference(pairs, _aulc_of("boxes")),
            "final_actions": _difference(pairs, _final_of("actions")) if actions else None,
            "actions_per_box": _apb(pairs) if actions else None, "cycles": cycles,
            "final_box_mismatch": _mean(mismatch),
            "final_box_mismatch_pct": 100.0 * _mean(mismatch) / strategy_boxes if strategy_boxes else None}


def _comparison(groups: Mapping[GroupKey, dict[int, dict]], key: GroupKey, *, actions: bool = False) -> dict[str, Any]:
    """Everything measured for one (strategy, mode) against random of its mode; no Holm, no sentence yet.
    ``actions``: every record has annotator actions (else the actions keys are ``None``)."""
    base = (BASELINE, key[1], None)
    if base not in groups:
        raise AlodError(f"no {BASELINE} ({key[1]}) runs: {_label(key)} is measured against random of its own "
                        f"mode; run {BASELINE} in {key[1]!r} with the same seeds")
    pairs = _pairs(groups, key, base)
    head = _difference(pairs, _aulc_of("images"))
    cycles = sorted({c["cycle"] for _, _, ref in pairs for c in ref["cycles"]})
    runs = [run for _, run, _ in pairs]
    return {"strategy": key[0], "mode": key[1], "seeds": [s for s, _, _ in pairs], "n": len(pairs),
            "aulc": {k: head.get(k) for k in ("strategy", "random", "difference", "per_seed")},
            "ci95": head["ci95"], "p": head["p"], "p_holm": None,
            "aulc_boxes": _difference(pairs, _aulc_of("boxes")),
            "final_mAP50": _difference(pairs, _final_of("mAP50")),
            "final_images": _difference(pairs, _final_of("images")),
            "final_boxes": _difference(pairs, _final_of("boxes")),
            "aulc_actions": _difference(pairs, _aulc_of("actions")) if actions else None,
            "final_actions": _difference(pairs, _final_of("actions")) if actions else None,
            "actions_per_box": _apb(pairs) if actions else None,
            "targets": [_target(pairs, k, actions=actions) for k in cycles],
            "equal_boxes": _equal_boxes(groups, key, actions=actions),
            "scorer_images": _mean([r["scorer_images"] for r in runs]),
            "scorer_charged": _mean([r["scorer_charged"] for r in runs]),
            "scorer_boxes_charged": _mean([r["scorer_boxes_charged"] for r in runs])}


def _against_base(groups: Mapping[GroupKey, dict[int, dict]], key: GroupKey, *,
                  actions: bool = False) -> dict[str, Any]:
    """A variant ``<base>+<name>`` (mode m) against ``<base>`` (mode m), paired by seed: AULC on the
    images and boxes axes, final mAP50, boxes and (when recorded) actions; the reference is ``base``."""
    base = (key[0].partition("+")[0], key[1], None)
    pairs = _pairs(groups, key, base)
    diff = lambda value: _difference(pairs, value, ref="base")  # noqa: E731
    return {"strategy": key[0], "base": base[0], "mode": key[1], "seeds": [s for s, _, _ in pairs],
            "n": len(pairs), "aulc": diff(_aulc_of("images")), "aulc_boxes": diff(_aulc_of("boxes")),
            "final_mAP50": diff(_final_of("mAP50")), "final_boxes": diff(_final_of("boxes")),
            "final_actions": diff(_final_of("actions")) if actions else None}


def _apply_holm(comparisons: list[dict[str, Any]]) -> None:
    """Fill ``p_holm`` in the four families (see the module docstring), in place."""
    for c, p in zip(comparisons, holm([c["p"] for c in comparisons])):
        c["p_holm"] = p
    eq_tests = [c["equal_boxes"][k] for c in comparisons if c["equal_boxes"]
                for k in ("final_mAP50", "aulc_boxes", "final_actions") if c["equal_boxes"][k] is not None]
    for t, p in zip(eq_tests, holm([t["p"] for t in eq_tests])):
        t["p_holm"] = p
    for axis in ("images", "actions"):
        savings = [t[axis]["log"] for c in comparisons for t in c["targets"] if t[axis] is not None]
        for t, p in zip(savings, holm([t["p"] for t in savings])):
            t["p_holm"] = p


# --------------------------------------------------------------------------- sentences


def _ci(ci: Sequence[float] | None, fmt: str = "{:+.3f}") -> str:
    return "no interval" if ci is None else f"95% CI [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _verdict(test: Mapping[str, Any]) -> tuple[str, bool | None]:
    """Words for one paired difference, and whether it is a measurable gain (``None``: not judged)."""
    d = test["difference"]
    if d is None:
        return "not measurable (no labels on this axis)", None
    ok = measurable(test)
    if ok is None:
        return f"{d:+.3f} from one seed, with no interval or p-value: no claim", None
    num = f"{d:+.3f}, {_ci(test['ci95'])}, Holm p {_p(test['p_holm'])}"
    if ok and d > 0:
        return f"a measurable gain ({num})", True
    if ok and d < 0:
        return f"measurably worse than random ({num})", False
    return f"no measurable gain ({num})", False


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fewer_actions(test: Mapping[str, Any], *, fewer_is: str) -> tuple[str, bool | None]:
    """Words for a paired difference in annotator actions, and whether it is a measurable gain.

    ``fewer_is``: ``"gain"`` when a negative difference means fewer actions (strategy minus random),
    ``"loss"`` when a positive one does (a saving: random minus strategy).
    """
    d = test.get("difference", test.get("saved"))
    if d is None:
        return "not measurable", None
    ok = measurable(test)
    if ok is None:
        return f"{d:+,.0f} from one seed, with no interval or p-value: no claim", None
    num = f"{d:+,.0f}, {_ci(test['ci95'], '{:+,.0f}')}, Holm p {_p(test['p_holm'])}"
    gain = d < 0 if fewer_is == "gain" else d > 0
    if ok and gain:
        return f"a measurable gain: fewer actions ({num})", True
    if ok:
        return f"measurably more actions than random ({num})", False
    return f"no measurable gain ({num})", False


def _boxes_clause(c: Mapping[str, Any]) -> tuple[str, bool | None]:
    eq = c["equal_boxes"]
    if eq is None:
        fb, fa = c["final_boxes"], c["final_actions"]
        pct = 100.0 * (fb["strategy"] - fb["random"]) / fb["random"] if fb["random"] else None
        more = "" if pct is None else f" ({pct:+.0f}% against random)"
        acts = "" if fa is None else (f", and spent {fa['strategy']:,.0f} annotator actions to random's "
                                      f"{fa['random']:,.0f}")
        return (f"at equal boxes it was not tested (no random run matched to its boxes); it labeled "
                f"{fb['strategy']:,.0f} boxes to random's {fb['random']:,.0f}{more}{acts}"), None
    words, ok = _verdict(eq["aulc_boxes"])
    f = eq["final_mAP50"]
    seen = {True: "measurable", False: "not measurable", None: "not judged"}[measurable(f)]
    text = (f"at equal boxes (matched to within {eq['final_box_mismatch']:,.0f} boxes at the final cycle), "
            f"AULC on boxes: {words}, and the final mAP50 differs by {f['difference']:+.3f} ({_ci(f['ci95'])}, "
            f"Holm p {_p(f['p_holm'])}: {seen})")
    if eq["final_actions"] is not None:
        fa = eq["final_actions"]
        text += (f"; at those equal boxes it spent {fa['strategy']:,.0f} annotator actions to random's "
                 f"{fa['random']:,.0f}: {_fewer_actions(fa, fewer_is='gain')[0]}")
    return text, ok


def _actions_clause(c: Mapping[str, Any]) -> tuple[str, bool | None]:
    """In annotator actions: what it needed for random's final mAP50, and the saving's verdict."""
    last = c["targets"][-1] if c["targets"] else None
    if last is None or last["actions"] is None:
        return "", None
    a = last["actions"]["log"]
    words, ok = _fewer_actions(a, fewer_is="loss")
    return (f"; in annotator actions it needed {a['needed']:,.0f} to random's {a['reference']:,.0f} to reach "
            f"random's final mAP50 (saving: {words})"), ok


def _censor_clause(c: Mapping[str, Any]) -> str:
    parts = [f"cycle {t['cycle']} in {t['censored']} of {t['n']} seeds" for t in c["targets"] if t["censored"]]
    if not parts:
        return ""
    return (" It never reached random's mAP50 at " + ", ".join(parts)
            + " (censored: such a seed's need counts its whole budget, a lower bound, and it is credited"
              " no saving).")


def sentence(c: Mapping[str, Any]) -> str:
    """One plain sentence for one comparison: what holds at equal images and at equal boxes, and what does not."""
    head = {**c["aulc"], "ci95": c["ci95"], "p": c["p"], "p_holm": c["p_holm"]}
    img_words, img_ok = _verdict(head)
    box_words, box_ok = _boxes_clause(c)
    last = c["targets"][-1] if c["targets"] else None
    text = (f"{c['strategy']} ({c['mode']}, {c['n']} seed{'s' if c['n'] != 1 else ''}): at equal images, "
            f"AULC {c['aulc']['strategy']:.3f} against random's {c['aulc']['random']:.3f}: {img_words}")
    if last is not None:
        i, b = last["images"]["log"], last["boxes"]["log"]
        # A censored seed counts at its budget, so the mean need is then only a lower bound.
        need = "at least " if last["censored"] else ""
        text += (f"; to reach random's final mAP50 it needed {need}{i['needed']:,.0f} images to random's "
                 f"{i['reference']:,.0f} and {need}{b['needed']:,.0f} boxes to random's {b['reference']:,.0f}")
    act_words, act_ok = _actions_clause(c)
    text += f"{act_words}; {box_words}."
    fb = c["final_boxes"]
    if img_ok and box_ok is False:
        text += (" So it is better at equal images but not at equal boxes: the gain does not survive equal "
                 "annotation cost in boxes.")
    elif img_ok and box_ok is None and fb["strategy"] > fb["random"]:
        text += (" So it is better at equal images, untested at equal boxes, and it labeled more boxes: part or "
                 "all of the gain may come from labeling more boxes per image.")
    if img_ok and act_ok is False and measurable(c["targets"][-1]["actions"]["log"]):
        text += (" It is better at equal images but needs measurably more annotator actions than random to "
                 "reach random's final mAP50.")
    apb = c["actions_per_box"]
    if apb is not None and apb["strategy"] is not None and apb["random"] is not None:
        text += (f" Pre-annotation by the previous model cost it {apb['strategy']:.2f} actions per box "
                 f"(random: {apb['random']:.2f}).")
    if c["scorer_charged"]:
        text += f" Its scorer's {c['scorer_charged']:,.0f} extra labeled images are charged on the images axis."
    text += _censor_clause(c)
    if c["n"] < MIN_SEEDS:
        text += f" Only {c['n']} seed{'s' if c['n'] != 1 else ''}: fewer than the {MIN_SEEDS} the protocol asks for."
    return text


# --------------------------------------------------------------------------- summaries


def _stopping(runs: Mapping[int, dict], threshold: float | None) -> dict[str, Any] | None:
    """The stop signal of one run group (module docstring, **Stopping**); ``None`` when no run records it."""
    per_seed = []
    for seed, run in runs.items():
        if not run["stop_recorded"]:
            continue
        k = run["stop_cycle"]
        if k is None:
            per_seed.append({"seed": seed, "stop_cycle": None})
            continue
        ax, j = _axes(run), [c["cycle"] for c in run["cycles"]].index(k)
        at = {axis: (None if ax[axis] is None else float(ax[axis][j])) for axis in ("images", "boxes", "actions")}
        per_seed.append({"seed": seed, "stop_cycle": k, "mAP50_at_stop": float(ax["mAP50"][j]),
                         "mAP50_final": float(ax["mAP50"][-1]), "at_stop": at,
                         "saved": {axis: (None if v is None else float(ax[axis][-1]) - v) for axis, v in at.items()}})
    if not per_seed:
        return None
    stopped = [r for r in per_seed if r["stop_cycle"] is not None]

    def mean_all(values):  # None as soon as one stopped seed lacks the value (actions not recorded)
        return None if not values or any(v is None for v in values) else _mean(values)

    return {"threshold": threshold, "n": len(per_seed), "stopped": len(stopped),
            "stopped_seeds": [r["seed"] for r in stopped],
            "unrecorded_seeds": [s for s, run in runs.items() if not run["stop_recorded"]],
            "stop_cycle": _mean([r["stop_cycle"] for r in stopped]),
            "mAP50_at_stop": _mean([r["mAP50_at_stop"] for r in stopped]),
            "mAP50_final": _mean([r["mAP50_final"] for r in stopped]),
            "mAP50_lost": _mean_ci([r["mAP50_final"] - r["mAP50_at_stop"] for r in stopped]),
            "at_stop": {a: mean_all([r["at_stop"][a] for r in stopped]) for a in ("images", "boxes", "actions")},
            "saved": {a: mean_all([r["saved"][a] for r in stopped]) for a in ("images", "boxes", "actions")},
            "per_seed": per_seed}


def _curve_summary(key: GroupKey, runs: Mapping[int, dict], *, threshold: float | None = None) -> dict[str, Any]:
    """Per cycle number: mean charged images, boxes and actions (``None`` unless every run of the
    group records them), mAP50 mean and 95% t interval over seeds, mean agreement over the seeds
    that measured one; and the group's ``stopping`` (:func:`_stopping`)."""
    by_cycle: dict[int, list[dict[str, float]]] = {}
    for run in runs.values():
        ax = _axes(run)
        for j, c in enumerate(run["cycles"]):
            by_cycle.setdefault(c["cycle"], []).append(
                {"images": ax["images"][j], "boxes": ax["boxes"][j], "mAP50": c["mAP50"],
                 "actions": None if ax["actions"] is None else ax["actions"][j], "agreement": c["agreement"]})
    cycles = [{"cycle": k, "n": len(pts), "images": _mean([p["images"] for p in pts]),
               "boxes": _mean([p["boxes"] for p in pts]), "mAP50": _mean_ci([p["mAP50"] for p in pts]),
               "actions": None if any(p["actions"] is None for p in pts) else _mean([p["actions"] for p in pts]),
               "agreement": _mean([p["agreement"] for p in pts])}
              for k, pts in sorted(by_cycle.items())]
    seconds = {k: _mean([sum(c["seconds"][k] for c in run["cycles"]) for run in runs.values()])
               for k in ("scoring", "training")}
    return {"strategy": key[0], "mode": key[1], "equal_boxes_to": key[2], "label": _label(key),
            "seeds": list(runs), "cycles": cycles, "seconds": seconds, "stopping": _stopping(runs, threshold)}


def _box_budgets(groups: Mapping[GroupKey, dict[int, dict]]) -> list[dict[str, Any]]:
    """Per run group with a budget in boxes (``schedule.budget: boxes``): what its cycles actually
    labeled against the budget. Cycles from 2 on (cycle 1 is the shared draw of images), per seed
    and cycle the boxes added over ``box_budget``: their mean, min and max, and the mean images and
    boxes added per cycle. The selector filled each cycle with the model's *estimate*; the true
    count is what annotators drew."""
    rows = []
    for key, runs in groups.items():
        budgets = {r["box_budget"] for r in runs.values()}
        if budgets == {None}:
            continue
        if len(budgets) != 1:
            raise AlodError(f"{_label(key)}: its seeds ran with different box budgets {sorted(map(str, budgets))}")
        budget = budgets.pop()
        added = [(b["boxes"] - a["boxes"], b["images"] - a["images"])
                 for r in runs.values() for a, b in pairwise(r["cycles"])]
        ratios = [boxes / budget for boxes, _ in added]
        rows.append({"label": _label(key), "strategy": key[0], "mode": key[1], "box_budget": budget,
                     "seeds": list(runs), "cycles": len(added),
                     "boxes_per_cycle": _mean([b for b, _ in added]), "images_per_cycle": _mean([i for _, i in added]),
                     "ratio": {"mean": _mean(ratios), "min": min(ratios, default=None),
                               "max": max(ratios, default=None)}})
    return rows


def _per_class(groups: Mapping[GroupKey, dict[int, dict]]) -> dict[str, Any]:
    """Final-cycle AP50 per class and run group: mean over the seeds that have an AP, and their count."""
    classes = sorted({k for runs in groups.values() for r in runs.values() for k in r["cycles"][-1]["per_class"]})
    rows = []
    for key, runs in groups.items():
        vals = {k: [r["cycles"][-1]["per_class"].get(k) for r in runs.values()] for k in classes}
        rows.append({"label": _label(key), "strategy": key[0], "mode": key[1], "equal_boxes_to": key[2],
                     "AP50": {k: _mean(v) for k, v in vals.items()},
                     "n": {k: sum(x is not None for x in v) for k, v in vals.items()}})
    return {"classes": classes, "rows": rows}


def _full_summary(full: list[dict], groups: Mapping[GroupKey, dict[int, dict]]) -> dict[str, Any]:
    """The full-data line and random's final mAP50 as a fraction of it, per mode."""
    recipes = [f["recipe"] for f in full]
    out = {"seeds": [f["seed"] for f in full], "mAP50": _mean_ci([f["mAP50"] for f in full]),
           "images": _mean([f["images"] for f in full]), "boxes": _mean([f["boxes"] for f in full]),
           "training_seconds": _mean([f["seconds"].get("training") for f in full]),
           "recipe": recipes[0] if recipes and all(r == recipes[0] for r in recipes) else None,
           "recipes_differ": len({repr(sorted(r.items())) for r in recipes}) > 1, "runs": full}
    ratio, off = {}, {}
    for mode in MODES:
        runs = groups.get((BASELINE, mode, None))
        if not runs:
            continue
        final = _mean([r["cycles"][-1]["mAP50"] for r in runs.values()])
        full_mean = out["mAP50"]["mean"]
        ratio[mode] = final / full_mean if full_mean else None
        off[mode] = None if ratio[mode] is None else ratio[mode] >= NOISE_FLOOR_RATIO
    return {"full": out, "random_final_over_full": ratio, "off_noise_floor": off}


def _no_nan(obj: Any) -> Any:
    """JSON has no NaN or infinity: they become ``None`` (numpy scalars become Python numbers)."""
    if isinstance(obj, Mapping):
        return {str(k): _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def build_report(records: Sequence[Mapping[str, Any]], full: Sequence[Mapping[str, Any]] | None, *,
                 protocol: Mapping[str, Any]) -> dict[str, Any]:
    """The report as a dict (what :func:`write_report` writes to ``report.json``), without writing files.

    Keys: ``format`` (``"alod.compare-report/2"``), ``protocol``, ``seeds``, ``modes``, ``full``
    (``seeds``, ``mAP50`` {mean, ci95, n}, ``images``, ``boxes``, ``recipe``, ``runs``),
    ``random_final_over_full`` and ``off_noise_floor`` (per mode), ``curves`` (per run group),
    ``comparisons`` (per strategy and mode: ``aulc``, ``ci95``, ``p``, ``p_holm``, ``aulc_boxes``,
    ``final_mAP50``, ``final_images``, ``final_boxes``, ``aulc_actions``, ``final_actions``,
    ``actions_per_box``, ``targets`` (``images``, ``boxes``, ``actions``), ``equal_boxes`` (with
    ``final_actions``, ``actions_per_box``), ``scorer_images``, ``sentence``, ...), ``per_class``,
    ``notes``, ``box_budgets`` (only with a run group under ``schedule.budget: boxes``:
    :func:`_box_budgets`), ``actions_recorded`` (every record has actions: else every actions key is ``None``),
    ``actions_partly_recorded`` and ``stopping_recorded``; each curve has ``stopping`` and per cycle
    ``actions`` and ``agreement``. Definitions: module docstring.

    Raises:
        AlodError: malformed input (naming the record), or a comparison without its paired runs.
    """
    proto = _check_protocol(protocol)
    checked = _check_records(records, proto)
    fulls = _check_full(full)
    groups = _group(checked)
    _check_equal_box_runs(groups)
    actions = all(r["has_actions"] for r in checked)
    keys = [k for k in groups if k[0] != BASELINE and k[2] is None]
    comparisons = [_comparison(groups, k, actions=actions) for k in keys]
    _apply_holm(comparisons)
    variants = [_against_base(groups, k, actions=actions) for k in keys
                if "+" in k[0] and (k[0].partition("+")[0], k[1], None) in groups]
    for v, p in zip(variants, holm([v["aulc"]["p"] for v in variants])):  # their own family
        v["aulc"]["p_holm"] = p
    for c in comparisons:
        c["sentence"] = sentence(c)
    notes = [f"{_label(k)} ran seeds {list(runs)}, not every protocol seed {proto['seeds']}"
             for k, runs in groups.items() if set(runs) != set(proto["seeds"])]
    if any(c["n"] < 2 for c in comparisons):
        notes.append("comparisons with one seed have no interval and no p-value (ci95 and p are null)")
    threshold = proto.get("stop_agreement")
    threshold = None if threshold is None else float(threshold)
    curves = [_curve_summary(k, r, threshold=threshold) for k, r in groups.items()]
    partly = [c["label"] for c in curves if c["stopping"] and c["stopping"]["unrecorded_seeds"]]
    if partly:
        notes.append(f"the stop signal is missing for some seeds of {'; '.join(partly)} (see curves[].stopping)")
    report = {"format": REPORT_FORMAT, "protocol": proto, "seeds": sorted({r["seed"] for r in checked}),
              "modes": [m for m in MODES if any(r["mode"] == m for r in checked)],
              **_full_summary(fulls, groups), "curves": curves,
              "comparisons": comparisons, "per_class": _per_class(groups), "notes": notes,
              "actions_recorded": actions,
              "actions_partly_recorded": not actions and any(r["has_actions"] for r in checked),
              "stopping_recorded": any(c["stopping"] is not None for c in curves)}
    if variants:  # only then, so that a report without variants keeps its bytes
        report["variant_comparisons"] = variants
    budgets = _box_budgets(groups)
    if budgets:  # likewise
        report["box_budgets"] = budgets
    return _no_nan(report)


# --------------------------------------------------------------------------- markdown


def _f(v: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _ci_cell(ci: Sequence[float] | None, fmt: str = "{:+.3f}") -> str:
    return "-" if ci is None else f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str]) -> list[str]:
    return [_row(header), _row(["---"] * len(header))]


def _floor_words(off: bool | None) -> str:
    return {True: "off the noise floor", False: "NEAR THE NOISE FLOOR: differences say little",
            None: "unknown (full-data mAP50 is 0)"}[off]


def _md_header(report: Mapping[str, Any]) -> list[str]:
    proto, full = report["protocol"], report["full"]
    charged = [f"{c['strategy']} ({c['mode']}): scorer saw {c['scorer_images']:,.0f} labeled images, "
               f"{c['scorer_charged']:,.0f} charged" for c in report["comparisons"]]
    lines = ["# Strategy comparison", "",
             f"- Seeds: {proto['seeds']} ({len(proto['seeds'])}; the protocol asks for at least {MIN_SEEDS}).",
             f"- Cycle 1 shared by every run of a seed: {'yes' if proto['cycle1_shared'] else 'NO'}.",
             f"- Scorer: {proto['scorer']}. Scorer labels charged: " + ("; ".join(charged) or "no strategies") + "."]
    if full["seeds"]:
        ratio = ", ".join(f"{m}: {_f(r, '{:.2f}')} ({_floor_words(report['off_noise_floor'][m])})"
                          for m, r in report["random_final_over_full"].items())
        recipe = full["recipe"] if full["recipe"] is not None else "differs between seeds (see report.json)"
        spread = _ci_cell(full["mAP50"]["ci95"], "{:.3f}") if full["mAP50"]["ci95"] else "(one seed: no interval)"
        lines += [f"- Full data: mAP50 {_f(full['mAP50']['mean'])} {spread} "
                  f"over seeds {full['seeds']}, {_f(full['images'], '{:,.0f}')} images; recipe: `{recipe}`.",
                  f"- Random's final mAP50 / full data (>= {NOISE_FLOOR_RATIO} is off the noise floor): {ratio}."]
    else:
        lines.append("- Full data: not run, so nobody can tell whether the detectors are off the noise floor.")
    if report["actions_recorded"]:
        lines.append("- Annotator actions: recorded (the previous cycle's model pre-annotates; cycle 1's boxes are "
                     "all drawn; scorer-charged boxes count as drawn).")
    else:
        partly = " for every run (only some runs have them), so" if report["actions_partly_recorded"] else ";"
        lines.append(f"- Annotator actions: not recorded{partly} labeling cost is counted in images and boxes only.")
    if not report["stopping_recorded"]:
        lines.append("- Stopping signal: not recorded.")
    lines += ["", "Definitions are in `alod/report.py`; `report.json` has full precision. Intervals: 95% t "
              "over per-seed paired differences (n-1 degrees of freedom). Holm: Holm-Bonferroni within each "
              "table's family. Measurable: the interval excludes 0 and Holm p < 0.05."]
    return lines


def _md_runs(report: Mapping[str, Any]) -> list[str]:
    acts = report["actions_recorded"]
    lines = ["", "## Runs (final cycle, mean over seeds)", "",
             *_table(["run", "seeds", "images", "boxes", *(("actions",) if acts else ()), "mAP50", "95% CI",
                      "scoring s", "training s"])]
    for g in report["curves"]:
        last, sec = g["cycles"][-1], g["seconds"]
        lines.append(_row([g["label"], len(g["seeds"]), f"{last['images']:,.0f}", f"{last['boxes']:,.0f}",
                           *((_f(last["actions"], "{:,.0f}"),) if acts else ()),
                           _f(last["mAP50"]["mean"]), _ci_cell(last["mAP50"]["ci95"], "{:.3f}"),
                           _f(sec["scoring"], "{:,.0f}"), _f(sec["training"], "{:,.0f}")]))
    return lines


def _md_headline(report: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Headline: AULC at equal images (mean mAP50 over the labeling budget)", "",
             *_table(["strategy", "mode", "seeds", "AULC", "random", "difference", "95% CI", "p", "Holm p",
                      "final boxes (strategy / random)"])]
    for c in report["comparisons"]:
        a, b = c["aulc"], c["final_boxes"]
        lines.append(_row([c["strategy"], c["mode"], c["n"], _f(a["strategy"]), _f(a["random"]),
                           _f(a["difference"], "{:+.3f}"), _ci_cell(c["ci95"]), _p(c["p"]), _p(c["p_holm"]),
                           f"{b['strategy']:,.0f} / {b['random']:,.0f}"]))
    return lines


def _md_variants(report: Mapping[str, Any]) -> list[str]:
    if not report.get("variant_comparisons"):
        return []
    lines = ["", "## Variants against their base strategy (paired by seed; Holm within this table)", "",
             *_table(["variant", "mode", "seeds", "AULC", "base", "difference", "95% CI", "Holm p",
                      "AULC on boxes: difference", "final mAP50: difference", "final boxes: difference"])]
    for v in report["variant_comparisons"]:
        a, ab, fm, fb = v["aulc"], v["aulc_boxes"], v["final_mAP50"], v["final_boxes"]
        lines.append(_row([v["strategy"], v["mode"], v["n"], _f(a["strategy"]), _f(a["base"]),
                           _f(a["difference"], "{:+.3f}"), _ci_cell(a["ci95"]), _p(a["p_holm"]),
                           f"{_f(ab['difference'], '{:+.3f}')} {_ci_cell(ab['ci95'])}",
                           f"{_f(fm['difference'], '{:+.3f}')} {_ci_cell(fm['ci95'])}",
                           f"{_f(fb['difference'], '{:+,.0f}')} {_ci_cell(fb['ci95'], '{:+,.0f}')}"]))
    return lines


def _md_box_budgets(report: Mapping[str, Any]) -> list[str]:
    if not report.get("box_budgets"):
        return []
    lines = ["", "## Budgets in boxes (cycles 2 on: true boxes labeled per cycle against the budget)", "",
             *_table(["run", "seeds", "box budget", "boxes per cycle", "images per cycle", "labeled / budget: mean",
                      "min", "max"])]
    for b in report["box_budgets"]:
        r = b["ratio"]
        lines.append(_row([b["label"], len(b["seeds"]), f"{b['box_budget']:,}", _f(b["boxes_per_cycle"], "{:,.1f}"),
                           _f(b["images_per_cycle"], "{:,.1f}"), _f(r["mean"], "{:.2f}"), _f(r["min"], "{:.2f}"),
                           _f(r["max"], "{:.2f}")]))
    return lines


def _md_actions(report: Mapping[str, Any]) -> list[str]:
    if not report["actions_recorded"] or not report["comparisons"]:
        return []
    n0 = "{:+,.0f}"
    lines = ["", "## Annotator actions at equal images (the previous cycle's model pre-annotates)", "",
             "Final actions: strategy minus random, paired by seed (no Holm: a cost beside the headline). Actions "
             "per box: the pool's actions over its boxes at the final cycle (1 = pre-annotation saved nothing).", "",
             *_table(["strategy", "mode", "seeds", "final actions (strategy / random)", "difference", "95% CI", "p",
                      "actions per box (strategy / random)", "AULC on actions (strategy / random)"])]
    for c in report["comparisons"]:
        fa, apb, aa = c["final_actions"], c["actions_per_box"], c["aulc_actions"]
        lines.append(_row([c["strategy"], c["mode"], c["n"], f"{fa['strategy']:,.0f} / {fa['random']:,.0f}",
                           _f(fa["difference"], n0), _ci_cell(fa["ci95"], n0), _p(fa["p"]),
                           f"{_f(apb['strategy'], '{:.2f}')} / {_f(apb['random'], '{:.2f}')}",
                           f"{_f(aa['strategy'])} / {_f(aa['random'])}"]))
    lines += ["", "Annotator actions to reach random's mAP50 at each of its cycles (saving = random's own need "
              "minus the strategy's; censored as for images; Holm p: over every strategy, mode and target, log).", "",
              *_table(["strategy", "mode", "cycle", "target mAP50", "censored", "random's actions",
                       "actions saved (log)", "%", "95% CI", "Holm p", "actions saved (linear)"])]
    for c in report["comparisons"]:
        for t in c["targets"]:
            al = t["actions"]["log"]
            lines.append(_row([c["strategy"], c["mode"], t["cycle"], _f(t["target_mAP50"]), f"{t['censored']}/{t['n']}",
                               _f(t["random_actions"], "{:,.0f}"), _f(al["saved"], n0), _f(al["saved_pct"], "{:+.0f}"),
                               _ci_cell(al["ci95"], n0), _p(al["p_holm"]), _f(t["actions"]["linear"]["saved"], n0)]))
    return lines


def _md_stopping(report: Mapping[str, Any]) -> list[str]:
    rows = [g for g in report["curves"] if g["stopping"]]
    if not rows:
        return []
    th = report["protocol"].get("stop_agreement")
    rule = f"agreement >= {th}" if th is not None else "the recorded stop_cycle"
    lines = ["", f"## Stopping signal ({rule} between consecutive cycles' models)", "",
             "Over the seeds that stopped: mAP50 at the stop cycle and at the final cycle (same seeds), and the labels "
             "stopping would not have spent (final minus at stop). Seeds that never stop save nothing.", "",
             *_table(["run", "seeds with the signal", "stopped", "mean stop cycle", "mAP50 at stop", "mAP50 final",
                      "lost (95% CI)", "images saved", "boxes saved", "actions saved"])]
    n0 = "{:,.0f}"
    for g in rows:
        st = g["stopping"]
        lost = st["mAP50_lost"]
        lines.append(_row([g["label"], st["n"], st["stopped"], _f(st["stop_cycle"], "{:.1f}"),
                           _f(st["mAP50_at_stop"]), _f(st["mAP50_final"]),
                           f"{_f(lost['mean'], '{:+.3f}')} {_ci_cell(lost['ci95'])}" if lost["ci95"] else
                           _f(lost["mean"], "{:+.3f}"),
                           _f(st["saved"]["images"], n0), _f(st["saved"]["boxes"], n0),
                           _f(st["saved"]["actions"], n0)]))
    return lines


def _md_equal_boxes(report: Mapping[str, Any]) -> list[str]:
    rows = [c for c in report["comparisons"] if c["equal_boxes"]]
    lines = ["", "## At equal boxes (strategy minus random that took random images up to the same box count)", ""]
    if not rows:
        return lines + ["No equal-box random runs: nothing here says whether a gain survives at equal annotation cost."]
    acts = report["actions_recorded"]
    lines += _table(["strategy", "mode", "seeds", "final mAP50 diff", "95% CI", "Holm p", "AULC boxes diff",
                     "95% CI", "Holm p", "final boxes (strategy / random)", "mean box mismatch",
                     *(("final actions diff", "95% CI", "Holm p", "actions per box (strategy / random)")
                       if acts else ())])
    for c in rows:
        e = c["equal_boxes"]
        f, a, last = e["final_mAP50"], e["aulc_boxes"], e["cycles"][-1]
        extra = []
        if acts:
            fa, apb = e["final_actions"], e["actions_per_box"]
            extra = [_f(fa["difference"], "{:+,.0f}"), _ci_cell(fa["ci95"], "{:+,.0f}"), _p(fa["p_holm"]),
                     f"{_f(apb['strategy'], '{:.2f}')} / {_f(apb['random'], '{:.2f}')}"]
        lines.append(_row([c["strategy"], c["mode"], len(e["seeds"]), _f(f["difference"], "{:+.3f}"),
                           _ci_cell(f["ci95"]), _p(f["p_holm"]), _f(a["difference"], "{:+.3f}"), _ci_cell(a["ci95"]),
                           _p(a["p_holm"]), f"{last['strategy_boxes']:,.0f} / {last['random_boxes']:,.0f}",
                           f"{e['final_box_mismatch']:,.0f} ({_f(e['final_box_mismatch_pct'], '{:.1f}')}%)", *extra]))
    return lines


def _md_targets(report: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Labels to reach random's mAP50 at each of its cycles", "",
             "Saving = random's own need minus the strategy's. Primary: log interpolation on the running "
             "maximum; linear: first crossing of the raw curve. Censored seeds never reached the target and "
             "are counted at their budget. Holm p: over every strategy, mode and target (images, log).", "",
             *_table(["strategy", "mode", "cycle", "target mAP50", "censored", "images saved (log)", "%", "95% CI",
                      "Holm p", "images saved (linear)", "boxes saved (log)", "%", "95% CI", "boxes saved (linear)"])]
    n0 = "{:+,.0f}"
    for c in report["comparisons"]:
        for t in c["targets"]:
            il, ib = t["images"]["log"], t["boxes"]["log"]
            lines.append(_row([c["strategy"], c["mode"], t["cycle"], _f(t["target_mAP50"]), f"{t['censored']}/{t['n']}",
                               _f(il["saved"], n0), _f(il["saved_pct"], "{:+.0f}"), _ci_cell(il["ci95"], n0),
                               _p(il["p_holm"]), _f(t["images"]["linear"]["saved"], n0), _f(ib["saved"], n0),
                               _f(ib["saved_pct"], "{:+.0f}"), _ci_cell(ib["ci95"], n0),
                               _f(t["boxes"]["linear"]["saved"], n0)]))
    return lines


def _md_per_class(report: Mapping[str, Any]) -> list[str]:
    pc = report["per_class"]
    if not pc["classes"]:
        return []
    lines = ["", "## AP50 per class at the final cycle (mean over seeds with an AP; seeds without one: -)", "",
             *_table(["run", *pc["classes"]])]
    for r in pc["rows"]:
        lines.append(_row([r["label"], *(_f(r["AP50"][k]) for k in pc["classes"])]))
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: protocol header, runs, headline, variants against their base, box budgets, annotator actions,
    equal boxes, targets, stopping, per class, sentences (rounded). Sections on actions and stopping appear only when recorded."""
    lines = [*_md_header(report), *_md_runs(report), *_md_headline(report), *_md_variants(report),
             *_md_box_budgets(report), *_md_actions(report),
             *_md_equal_boxes(report), *_md_targets(report), *_md_stopping(report), *_md_per_class(report),
             "", "## In words", ""]
    lines += [f"- {c['sentence']}" for c in report["comparisons"]] or ["- No strategy besides random was run."]
    lines += [f"- Note: {n}." for n in report["notes"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- curves.png


def _styles(report: Mapping[str, Any]) -> dict[str, str]:
    """Colour per strategy: random black, the others Okabe-Ito in name order."""
    names = sorted({g["equal_boxes_to"] or g["strategy"] for g in report["curves"]} - {BASELINE})
    colours = {BASELINE: OKABE_ITO[0]}
    colours.update({s: OKABE_ITO[1 + i % (len(OKABE_ITO) - 1)] for i, s in enumerate(names)})
    return colours


def _plot_group(ax, g: Mapping[str, Any], axis: str, colours: Mapping[str, str]) -> None:
    """Mean line and 95% t band of one run group against ``axis`` (images or boxes).

    Colour names the strategy (an equal-box random run takes its strategy's colour, dotted, so the
    pair reads together); line style the mode.
    """
    x = [c[axis] for c in g["cycles"]]
    y = [c["mAP50"]["mean"] for c in g["cycles"]]
    colour = colours[g["equal_boxes_to"] or g["strategy"]]
    dashes = ":" if g["equal_boxes_to"] else "-" if g["mode"] == "precomputed" else "--"
    label = g["label"]
    ax.plot(x, y, color=colour, linestyle=dashes, marker="o", markersize=3, label=f"{label}, n={len(g['seeds'])}")
    band = [(xi, c["mAP50"]["ci95"]) for xi, c in zip(x, g["cycles"]) if c["mAP50"]["ci95"] is not None]
    if band:
        ax.fill_between([b[0] for b in band], [b[1][0] for b in band], [b[1][1] for b in band],
                        color=colour, alpha=0.15, linewidth=0)


def _plot_targets(ax, report: Mapping[str, Any], colours: Mapping[str, str]) -> None:
    """Random's per-cycle targets (dotted) and where each strategy's mean curve crosses them."""
    for g in report["curves"]:
        if g["strategy"] == BASELINE and g["equal_boxes_to"] is None:
            for c in g["cycles"]:
                ax.axhline(c["mAP50"]["mean"], color="0.6", linestyle=":", linewidth=0.7)
    for c in report["comparisons"]:
        pts = [(t["images"]["log"]["needed"], t["target_mAP50"]) for t in c["targets"] if t["censored"] == 0]
        if pts:
            ax.plot(*zip(*pts), linestyle="none", marker="x", markersize=6, color=colours[c["strategy"]])
    ax.plot([], [], color="0.6", linestyle=":", linewidth=0.7,
            label="random's per-cycle targets; x: crossings (log interp.)")


def _symlog_y(ax) -> None:
    """Symlog y (linear below 0.01, log above) with plain-number ticks: early cycles sit near 0."""
    ax.set_yscale("symlog", linthresh=0.01)
    top = max(ax.get_ylim()[1], 0.02)
    ax.set_ylim(0, top)
    ticks = [t for t in (0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0) if t <= top]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _plot_stops(ax, report: Mapping[str, Any], colours: Mapping[str, str]) -> None:
    """A hollow marker per run group (not the equal-box runs) at the mean images and mean mAP50 of
    its stopped seeds' stop cycles."""
    drawn = False
    for g in report["curves"]:
        st = g["stopping"]
        if g["equal_boxes_to"] or not st or not st["stopped"]:
            continue
        ax.plot([st["at_stop"]["images"]], [st["mAP50_at_stop"]], linestyle="none", marker="o", markersize=11,
                markerfacecolor="none", markeredgewidth=1.6, color=colours[g["strategy"]])
        drawn = True
    if drawn:
        th = report["protocol"].get("stop_agreement")
        rule = f"agreement >= {th}" if th is not None else "recorded stop cycle"
        ax.plot([], [], linestyle="none", marker="o", markersize=8, markerfacecolor="none", color="0.3",
                label=f"stops ({rule}): mean over stopped seeds")


def curves_figure(report: Mapping[str, Any], *, dpi: int = 120):
    """The ``matplotlib.figure.Figure`` of :func:`plot_curves`: one axes per panel (2, or 3 with
    annotator actions recorded)."""
    panels = ("images", "boxes", "actions") if report["actions_recorded"] else ("images", "boxes")
    fig = Figure(figsize=(6.5 * len(panels), 5.2), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True)
    colours = _styles(report)
    for ax, axis in zip(axes, panels):
        for g in report["curves"]:
            if axis == "images" and g["equal_boxes_to"]:
                continue  # equal-box runs belong to the boxes panel, where their matching shows
            _plot_group(ax, g, axis, colours)
        if report["full"]["seeds"]:
            ax.axhline(report["full"]["mAP50"]["mean"], color="0.3", linestyle="--", linewidth=1.2,
                       label=f"full data, mean of {len(report['full']['seeds'])} seed(s)")
        what = "annotator actions" if axis == "actions" else f"labeled {axis}"
        ax.set_xlabel(f"{what} (scorer labels charged; mean over seeds)")
        ax.grid(True, alpha=0.3)
    _plot_targets(axes[0], report, colours)
    _plot_stops(axes[0], report, colours)
    _symlog_y(axes[0])  # after every line is drawn: the shared y limits cover every panel
    axes[0].set_ylabel("validation mAP50 (symlog)")
    axes[0].set_title("mAP50 vs labeled images (band: 95% CI over seeds)")
    axes[1].set_title("mAP50 vs labeled boxes, with equal-box random runs")
    if len(axes) > 2:
        axes[2].set_title("mAP50 vs annotator actions (previous model pre-annotates)")
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(color="0.5", alpha=0.15))
        ax.legend(handles, [*labels, "95% CI over seeds"], fontsize=7, loc="lower right")
    return fig


def plot_curves(report: Mapping[str, Any], *, dpi: int = 120) -> bytes:
    """``curves.png`` as PNG bytes: mAP50 against labeled images (left), labeled boxes (middle) and,
    when recorded, annotator actions (right).

    Lines are means over seeds; bands the 95% t interval over seeds; y on a symlog axis (linear
    below 0.01) so early cycles stay readable; the full-data mean dashed. The boxes panel holds
    the equal-box random runs; the images panel marks each group's mean stop cycle (hollow circle).
    Uses matplotlib's Agg canvas through ``Figure`` (no pyplot state); no timestamp or software
    tag in the metadata, so the same report gives the same bytes.
    """
    fig = curves_figure(report, dpi=dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write_report(records: Sequence[Mapping[str, Any]], full: Sequence[Mapping[str, Any]] | None,
                 out_dir: str | Path, *, protocol: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``curves.png`` into ``out_dir`` (each atomically).

    Args:
        records: curve records, one per run; see the module docstring.
        full: full-data records, one per seed, or ``None`` / ``[]``.
        out_dir: created if missing.
        protocol: must hold ``seeds``, ``cycle1_shared`` and ``scorer``; copied into the report.

    Returns:
        The report dict written to ``report.json`` (keys: :func:`build_report`).
    """
    report = build_report(records, full, protocol=protocol)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, render_markdown(report))
    atomic_write_bytes(out / CURVES_PNG, plot_curves(report))
    return report
