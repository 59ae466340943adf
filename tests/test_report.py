"""alod.report on hand-made curves with exact expected numbers.

The mAP50 values are dyadic fractions (0.125, 0.25, ...), so interpolated pool sizes are exact in
binary floating point and most assertions can use ``==``.

Random (precomputed, seeds 0/1/2): pools of 100/200/300/400 images and 500/1000/1500/2000 boxes;
final mAP50 0.5 / 0.375 / 0.4375 (so per-seed pairing and the mean target differ).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from alod.report import (
    REPORT_FORMAT,
    build_report,
    labels_to_reach,
    savings,
    sentence,
    significance,
    write_report,
)
from alod.utils import AlodError

IMAGES = [100, 200, 300, 400]
BOXES = [500, 1000, 1500, 2000]
RANDOM = {0: [0.125, 0.25, 0.375, 0.5], 1: [0.125, 0.25, 0.25, 0.375], 2: [0.125, 0.25, 0.375, 0.4375]}


def run(strategy, mode, seed, maps, *, boxes=BOXES, images=IMAGES, per_class=None):
    cycles = [{"cycle": i + 1, "images": n, "boxes": b, "mAP50": m, "mAP": m / 2,
               "per_class": {}, "seconds": {"scoring": 1.0, "training": 10.0}}
              for i, (n, b, m) in enumerate(zip(images, boxes, maps))]
    cycles[-1]["per_class"] = per_class or {"car": maps[-1], "train": None}
    return {"strategy": strategy, "mode": mode, "seed": seed, "cycles": cycles}


def random_runs(mode="precomputed"):
    return [run("random", mode, s, m) for s, m in RANDOM.items()]


# Clearly better: reaches each seed's target at 200 / 150 / 175 images.
ENTROPY = [run("entropy", "precomputed", s, [0.25, 0.5, 0.5, 0.625], boxes=[5 * n for n in IMAGES]) for s in RANDOM]
# Within the noise: saves 200 / 0 / 100 images.
MARGIN = [run("margin", "precomputed", 0, [0.25, 0.5, 0.5, 0.5]),
          run("margin", "precomputed", 1, [0.125, 0.25, 0.25, 0.375]),
          run("margin", "precomputed", 2, [0.125, 0.25, 0.4375, 0.5])]
# Crowded images: 12 boxes per image instead of 5: saves images, costs boxes.
CROWDED = [run("box_count", "precomputed", s, [0.25, 0.5, 0.625, 0.75], boxes=[12 * n for n in IMAGES])
           for s in RANDOM]
# Never reaches random's final in seed 0; only adaptive, so random's one mode serves as baseline.
MC = [run("mc_dropout", "adaptive", 0, [0.125, 0.25, 0.375, 0.4375]),
      run("mc_dropout", "adaptive", 1, [0.125, 0.25, 0.375, 0.4375]),
      run("mc_dropout", "adaptive", 2, [0.125, 0.25, 0.375, 0.4375])]
ALL = random_runs() + ENTROPY + MARGIN + CROWDED + MC
FULL = {"mAP50": 0.75, "images": 1000, "boxes": 5000, "seconds": {"training": 120.0}}


# --------------------------------------------------------------------------- labels_to_reach


@pytest.mark.parametrize("target, expected", [
    (0.375, 200.0),   # exact hit at a point
    (0.25, 150.0),    # halfway between the first two points
    (0.5, 250.0),     # halfway between the last two
    (0.125, 100.0),   # reached at the first point, exactly
    (0.0, 100.0),     # already above at the first point
    (0.625, 300.0),   # exact at the last point
    (0.75, None),     # never
])
def test_labels_to_reach_interpolates_between_cycles(target, expected):
    assert labels_to_reach(np.array([100, 200, 300]), np.array([0.125, 0.375, 0.625]), target) == expected


def test_labels_to_reach_flat_segments_and_ties():
    x = np.array([100, 200, 300, 400])
    # flat below the target: passed over, crossing on the next rising segment
    assert labels_to_reach(x, np.array([0.25, 0.25, 0.5, 0.5]), 0.375) == 250.0
    assert labels_to_reach(x, np.array([0.125, 0.25, 0.25, 0.5]), 0.375) == 350.0
    # flat at the target (tied points): the first of them
    assert labels_to_reach(x, np.array([0.125, 0.375, 0.375, 0.5]), 0.375) == 200.0
    # flat above the target after the crossing: the crossing
    assert labels_to_reach(x, np.array([0.125, 0.625, 0.625, 0.625]), 0.375) == 150.0
    # tied x (a cycle that added no boxes): the crossing lies at that x
    assert labels_to_reach(np.array([500, 1000, 1000, 1500]), np.array([0.125, 0.25, 0.5, 0.625]), 0.375) == 1000.0
    # a fully flat curve below the target never reaches it
    assert labels_to_reach(x, np.full(4, 0.25), 0.375) is None


def test_labels_to_reach_non_monotone_takes_the_first_crossing():
    x, y = np.array([100, 200, 300, 400]), np.array([0.125, 0.625, 0.25, 0.75])
    assert labels_to_reach(x, y, 0.5) == 175.0   # first rise, although the curve dips below later
    assert labels_to_reach(x, y, 0.6875) == 387.5  # only the last segment reaches it
    # NaN never reaches and is not interpolated across
    assert labels_to_reach(np.array([100, 200]), np.array([np.nan, 0.5]), 0.25) == 200.0


def test_labels_to_reach_rejects_bad_input():
    with pytest.raises(ValueError, match="non-decreasing"):
        labels_to_reach(np.array([200, 100]), np.array([0.1, 0.2]), 0.1)
    with pytest.raises(ValueError, match="same non-zero length"):
        labels_to_reach(np.array([100, 200]), np.array([0.1]), 0.1)


# --------------------------------------------------------------------------- savings


def test_savings_pairs_seeds_and_gives_mean_and_std():
    e = savings(ALL)["entropy/precomputed"]
    assert e["pairing"] == "per-seed" and e["baseline_mode"] == "precomputed"
    assert [r["target_mAP50"] for r in e["per_seed"]] == [0.5, 0.375, 0.4375]
    assert [r["images_needed"] for r in e["per_seed"]] == [200.0, 150.0, 175.0]
    assert [r["images_saved"] for r in e["per_seed"]] == [200.0, 250.0, 225.0]
    assert [r["boxes_needed"] for r in e["per_seed"]] == [1000.0, 750.0, 875.0]
    assert [r["boxes_saved"] for r in e["per_seed"]] == [1000.0, 1250.0, 1125.0]
    assert e["images_needed"]["mean"] == 175.0 and e["images_needed"]["std"] == 25.0
    assert e["images_saved"]["mean"] == 225.0 and e["images_saved"]["std"] == 25.0
    assert e["images_saved_pct"]["mean"] == pytest.approx(56.25)
    assert e["boxes_saved_pct"]["mean"] == pytest.approx(56.25)
    assert e["reached"] == 3 and e["seeds"] == [0, 1, 2]
    assert e["target_mAP50"] == 0.4375
    assert [r["final_mAP50_diff"] for r in e["per_seed"]] == [0.125, 0.25, 0.1875]


def test_savings_without_matching_seeds_compares_with_random_mean():
    # Seed 5 has no random run: every seed is compared with random's mean (0.4375 at 400 images).
    recs = random_runs() + [run("entropy", "precomputed", s, [0.25, 0.5, 0.5, 0.625]) for s in (0, 1, 5)]
    e = savings(recs)["entropy/precomputed"]
    assert e["pairing"] == "mean"
    assert [r["images_needed"] for r in e["per_seed"]] == [175.0, 175.0, 175.0]
    assert e["images_needed"]["std"] == 0.0
    assert e["significance"]["images_saved"]["paired"] is False
    assert "mean over its seeds; seeds not paired" in sentence(e)


def test_crowded_images_save_images_but_cost_boxes():
    c = savings(ALL)["box_count/precomputed"]
    assert [r["images_needed"] for r in c["per_seed"]] == [200.0, 150.0, 175.0]
    assert [r["boxes_needed"] for r in c["per_seed"]] == [2400.0, 1800.0, 2100.0]
    assert [r["boxes_saved"] for r in c["per_seed"]] == [-400.0, 200.0, -100.0]
    assert c["images_saved"]["mean"] == 225.0 and c["boxes_saved"]["mean"] == -100.0
    s = sentence(c)
    assert "2,100 ± 300 boxes instead of 2,000 (5% more)" in s
    assert "saved images but no boxes" in s


def test_strategy_that_never_reaches_in_some_seed():
    m = savings(ALL)["mc_dropout/adaptive"]
    assert m["baseline_mode"] == "precomputed"  # random was run in one mode only
    assert [r["images_needed"] for r in m["per_seed"]] == [None, 300.0, 400.0]
    assert [r["images_saved"] for r in m["per_seed"]] == [None, 100.0, 0.0]
    assert m["reached"] == 2 and m["images_saved"]["n"] == 2 and m["images_saved"]["mean"] == 50.0
    sig = m["significance"]
    assert sig["images_saved"] is None and sig["verdict_on"] == "final_mAP50_diff"
    assert sig["final_mAP50_diff"]["mean"] == 0.0 and sig["outside_noise"] is False
    s = sentence(m)
    assert s.startswith("mc_dropout (adaptive) did not reach random's final mAP50 (0.438; seeds paired) "
                        "in 1 of 3 seeds (never)")
    assert "mAP50 difference is within the noise across 3 seeds" in s


def test_baseline_errors_name_what_to_do():
    with pytest.raises(AlodError, match="no 'random' runs"):
        savings(ENTROPY)
    two_modes = random_runs("precomputed") + random_runs("adaptive") + [run("entropy", "other", 0, RANDOM[0])]
    with pytest.raises(AlodError, match="not in 'other'"):
        savings(two_modes)
    with pytest.raises(AlodError, match="same strategy, mode and seed as record 0"):
        savings(random_runs() + random_runs())
    nan_map = run("random", "precomputed", 0, [0.125, float("nan"), 0.25, 0.5])
    with pytest.raises(AlodError, match=r"seed 0\), cycle 2: 'mAP50' must be a finite number"):
        savings([nan_map])
    shrinking = run("random", "precomputed", 0, RANDOM[0], boxes=[500, 400, 600, 700])
    with pytest.raises(AlodError, match=r"record 0 \(random, precomputed, seed 0\): labeled boxes shrink"):
        savings([shrinking])


# --------------------------------------------------------------------------- significance


def test_significance_rule():
    better = significance([200.0, 250.0, 225.0])
    assert better["mean"] == 225.0 and better["std"] == 25.0
    assert better["se"] == pytest.approx(25.0 / math.sqrt(3))
    assert better["outside_noise"] is True
    noise = significance([200.0, 0.0, 100.0])  # mean 100 < 2 * 100 / sqrt(3) = 115.5
    assert noise["threshold"] == pytest.approx(200.0 / math.sqrt(3)) and noise["outside_noise"] is False
    assert significance([5.0])["outside_noise"] is None          # one seed: no spread
    assert significance([1.0, 1.0, 1.0])["outside_noise"] is True  # no spread at all, non-zero mean
    assert significance([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["outside_noise"] is False  # Welch, unpaired
    welch = significance([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    assert welch["mean"] == 2.0 and welch["se"] == pytest.approx(math.sqrt(2 / 3)) and welch["outside_noise"] is True


def test_sentences_for_a_clear_gain_and_for_noise():
    sv = savings(ALL)
    assert sentence(sv["entropy/precomputed"]) == (
        "entropy (precomputed) reached random's final mAP50 (0.438; seeds paired) with 175 ± 25 images instead of 400 "
        "(56% fewer) and 875 ± 125 boxes instead of 2,000 (56% fewer); the image saving is larger than the "
        "spread across 3 seeds (3 seeds are few: a rough screen).")
    m = sv["margin/precomputed"]
    assert [r["images_saved"] for r in m["per_seed"]] == [200.0, 0.0, 100.0]
    assert m["significance"]["outside_noise"] is False
    assert sentence(m).endswith(
        "the image saving is within the noise across 3 seeds (3 seeds are few: a rough screen).")
    assert "no boxes" not in sentence(m)


# --------------------------------------------------------------------------- the files


def test_write_report_files(tmp_path):
    report = write_report(ALL, FULL, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data == json.loads(json.dumps(report))
    assert data["format"] == REPORT_FORMAT == "alod.compare-report/1"
    assert data["baseline"] == "random" and data["seeds"] == [0, 1, 2]
    assert data["modes"] == ["adaptive", "precomputed"]
    assert data["full"] == {"mAP50": 0.75, "images": 1000.0, "boxes": 5000.0, "seconds": {"training": 120.0}}
    assert "2 x its standard error" in data["rule"]
    keys = list(report["strategies"])  # the returned dict keeps the baseline first; report.json sorts keys
    assert keys[0] == "random/precomputed"
    assert set(keys) == {"random/precomputed", "entropy/precomputed", "margin/precomputed",
                         "box_count/precomputed", "mc_dropout/adaptive"}
    for s in data["strategies"].values():
        assert set(s) == {"strategy", "mode", "seeds", "curve", "final", "per_class_AP50", "seconds", "savings",
                          "sentence"}
    r = data["strategies"]["random/precomputed"]
    assert r["savings"] is None
    assert [p["images"]["mean"] for p in r["curve"]] == IMAGES
    assert r["curve"][3]["mAP50"]["mean"] == 0.4375 and r["curve"][3]["mAP50"]["std"] == 0.0625
    assert r["curve"][3]["mAP50"]["min"] == 0.375 and r["curve"][3]["mAP50"]["max"] == 0.5
    assert r["per_class_AP50"]["car"]["mean"] == 0.4375
    assert r["per_class_AP50"]["train"] == {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    assert r["seconds"]["scoring"]["mean"] == 4.0 and r["seconds"]["training"]["mean"] == 40.0
    assert r["sentence"] == ("random (precomputed) is the baseline: its final mAP50 is 0.438 ± 0.062 with 400 "
                             "images and 2,000 ± 0 boxes (3 seeds).")
    e = data["strategies"]["entropy/precomputed"]
    assert e["savings"]["images_saved"]["mean"] == 225.0 and e["savings"]["reached"] == 3
    assert e["sentence"].startswith("entropy (precomputed) reached random's final mAP50")

    md = (tmp_path / "out" / "report.md").read_text()
    assert "| strategy | mode | seeds | final mAP50 | images needed | images saved | boxes needed | boxes saved" in md
    assert "| cycle | images | random/precomputed | box_count/precomputed | entropy/precomputed |" in md
    assert "| full training split |" in md
    for s in data["strategies"].values():
        assert md.count(s["sentence"]) == 1
    assert sum(line.startswith("- ") for line in md.splitlines()) == len(keys) + 1  # + the full-data line

    png = (tmp_path / "out" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(tmp_path / "out" / "curves.png") as im:
        im.verify()
    with Image.open(tmp_path / "out" / "curves.png") as im:
        assert im.size[0] > 0 and im.size[1] > 0


def test_report_without_full_run_and_with_nan_class_ap():
    nan_class = [run("random", "precomputed", 0, RANDOM[0], per_class={"car": 0.5, "train": float("nan")})]
    report = build_report(nan_class + random_runs()[1:] + ENTROPY, None)
    assert report["full"] is None
    assert list(report["strategies"]) == ["random/precomputed", "entropy/precomputed"]
    # a class with no ground truth (NaN from alod.evaluation) counts as "no AP", like None
    assert report["strategies"]["random/precomputed"]["per_class_AP50"]["train"]["n"] == 0
