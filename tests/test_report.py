"""alod.compare.report on hand-made curves with exact expected numbers, plus property tests.

The mAP50 values are mostly dyadic fractions (0.125, 0.25, ...), so areas and linear crossings are
exact in binary floating point and many assertions use ``==``. Log-interpolated crossings are
checked against closed forms computed by hand in the test.

Random (precomputed, seeds 0/1/2): pools of 100/200/300/400 images and 500/1000/1500/2000 boxes.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from alod.compare.report import (
    REPORT_FORMAT,
    aulc,
    build_report,
    holm,
    monotone_envelope,
    needed_linear,
    needed_log,
    paired_test,
    render_markdown,
    sentence,
    write_report,
)
from alod.utils import AlodError

IMAGES = [100, 200, 300, 400]
BOXES = [500, 1000, 1500, 2000]
RANDOM = {0: [0.125, 0.25, 0.375, 0.5], 1: [0.125, 0.25, 0.25, 0.375], 2: [0.125, 0.25, 0.375, 0.4375]}
PROTOCOL = {"seeds": [0, 1, 2], "cycle1_shared": True, "scorer": "cycle-1 detector"}
FULL = [{"seed": 0, "mAP50": 0.75, "images": 1000, "boxes": 5000, "recipe": {"epochs": 3},
         "seconds": {"training": 1.0}},
        {"seed": 1, "mAP50": 0.8125, "images": 1000, "boxes": 5000, "recipe": {"epochs": 3}}]


def run(strategy, seed, maps, *, mode="precomputed", images=IMAGES, boxes=BOXES, eq=None, per_class=None, **extra):
    cycles = [{"cycle": i + 1, "images": n, "boxes": b, "mAP50": m, "mAP": m / 2, "per_class": {},
               "seconds": {"scoring": 1.0, "training": 10.0}}
              for i, (n, b, m) in enumerate(zip(images, boxes, maps))]
    cycles[-1]["per_class"] = per_class or {"car": maps[-1], "train": None}
    return {"strategy": strategy, "mode": mode, "seed": seed, "equal_boxes_to": eq, "cycles": cycles, **extra}


def random_runs(mode="precomputed", curves=RANDOM):
    return [run("random", s, m, mode=mode) for s, m in curves.items()]


def only(report, strategy, mode="precomputed"):
    [c] = [c for c in report["comparisons"] if (c["strategy"], c["mode"]) == (strategy, mode)]
    return c


# --------------------------------------------------------------------------- curve arithmetic


def test_aulc_of_a_known_curve():
    # (0,0) prepended: 100 * (0.125 + 0.375 + 0.625 + 0.875) / 2 = 100, over 400 images.
    assert aulc(IMAGES, RANDOM[0]) == 0.25
    assert aulc([100, 200], [0.25, 0.5]) == 0.25  # 12.5 + 37.5 over 200
    assert aulc([0], [0.5]) is None  # no budget


@pytest.mark.parametrize("target, expected", [
    (math.sqrt(0.01 * 0.1), 150.0),   # halfway in log between (100, 0.01) and (200, 0.1)
    (0.1, 200.0),                     # exactly a point
    (0.01, 100.0),
    (1e-3, 50.0),                     # from the floor (0, 1e-4): log(10) / log(100) of the way to 100
    (1e-4, 0.0), (0.0, 0.0),          # at or below the floor: no labels needed
    (0.2, None),                      # never
])
def test_needed_log_by_hand(target, expected):
    got = needed_log([100, 200], [0.01, 0.1], target)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-9))


def test_needed_log_uses_the_running_maximum_and_linear_the_raw_first_crossing():
    x, y = [100, 200, 300], [0.2, 0.1, 0.4]
    # Envelope (0, 1e-4), (100, .2), (200, .2), (300, .4): 0.3 lies log(1.5)/log(2) of the way 200 -> 300.
    assert needed_log(x, y, 0.3) == pytest.approx(200 + 100 * math.log(1.5) / math.log(2), abs=1e-9)
    assert needed_log(x, y, 0.15) == pytest.approx(100 * math.log(1500) / math.log(2000), abs=1e-9)
    assert needed_log(x, y, 0.2) == 100.0
    # Linear on the raw curve with (0, 0): 0.3 crosses on (200, 0.1) -> (300, 0.4), 2/3 of the way.
    assert needed_linear(x, y, 0.3) == pytest.approx(200 + 100 * 2 / 3, abs=1e-9)
    assert needed_linear(x, y, 0.15) == pytest.approx(75.0, abs=1e-9)
    assert needed_linear(x, y, 0.4) == 300.0 and needed_linear(x, y, 0.5) is None


def test_holm_on_known_p_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.01]) == pytest.approx([0.5, None, 0.02]) and holm([0.5, None])[1] is None
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


def test_paired_test_matches_scipy():
    a, b = np.array([0.31, 0.35, 0.30, 0.36, 0.33]), np.array([0.30, 0.31, 0.29, 0.33, 0.30])
    t = paired_test(a - b)
    d = a - b
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert t["ci95"] == pytest.approx([lo, hi], abs=1e-12)
    assert t["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, abs=1e-12)
    assert t["n"] == 5 and t["sd"] == pytest.approx(d.std(ddof=1))


def test_paired_test_edge_cases():
    one = paired_test([0.1])
    assert one["mean"] == 0.1 and one["ci95"] is None and one["p"] is None
    assert paired_test([0.0, 0.0, 0.0])["p"] == 1.0
    assert paired_test([0.25, 0.25])["p"] == 0.0 and paired_test([0.25, 0.25])["ci95"] == [0.25, 0.25]


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=8, unique=True),
       st.floats(0, 1, allow_subnormal=False))
def test_aulc_of_a_constant_curve(xs, c):
    # With (0, 0) prepended the first segment ramps up, so a constant c averages c (1 - x1 / (2 x_n)):
    # exactly c over [x1, x_n], half of c over [0, x1].
    x = sorted(xs)
    assert aulc(x, [c] * len(x)) == pytest.approx(c * (1 - x[0] / (2 * x[-1])), abs=1e-12)
    assert aulc([10 * v for v in x], [c] * len(x)) == pytest.approx(aulc(x, [c] * len(x)), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_subnormal=False), min_size=1, max_size=10))
def test_monotone_envelope_never_decreases(y):
    env = monotone_envelope(y)
    assert np.all(np.diff(env) >= 0) and np.all(env >= np.asarray(y)) and env[-1] == max(y)


curve = st.lists(st.floats(0, 1, allow_subnormal=False), min_size=2, max_size=5)


@settings(max_examples=40, deadline=None)
@given(st.lists(curve, min_size=2, max_size=4).filter(lambda cs: len({len(c) for c in cs}) == 1))
def test_a_strategy_identical_to_random_saves_nothing_at_any_target(curves):
    n = len(curves[0])
    images, boxes = [100 * (i + 1) for i in range(n)], [500 * (i + 1) for i in range(n)]
    recs = [run(s, seed, m, images=images, boxes=boxes) for seed, m in enumerate(curves) for s in ("random", "same")]
    c = only(build_report(recs, [], protocol={**PROTOCOL, "seeds": list(range(len(curves)))}), "same")
    assert c["aulc"]["difference"] == 0 and c["p"] == 1.0
    assert len(c["targets"]) == n
    for t in c["targets"]:
        assert t["censored"] == 0
        for axis in ("images", "boxes"):
            for interp in ("log", "linear"):
                assert t[axis][interp]["saved"] == 0 and t[axis][interp]["p"] == 1.0


@settings(max_examples=60, deadline=None)
@given(curve, st.floats(0, 1, allow_subnormal=False), st.floats(0, 1, allow_subnormal=False))
def test_needed_log_grows_with_the_target_and_stays_in_the_budget(y, t1, t2):
    x = [100 * (i + 1) for i in range(len(y))]
    a, b = needed_log(x, y, min(t1, t2)), needed_log(x, y, max(t1, t2))
    if b is not None:
        assert a is not None and 0 <= a <= b <= x[-1]


# --------------------------------------------------------------------------- the report


def test_targets_are_random_per_cycle_seed_by_seed_with_censoring():
    # Seed 1 never reaches random's seed-1 final (0.375): censored at its budget, kept in the mean.
    strat = {0: [0.25, 0.5, 0.5, 0.625], 1: [0.125, 0.25, 0.25, 0.25], 2: [0.25, 0.5, 0.5, 0.5]}
    recs = random_runs() + [run("entropy", s, m) for s, m in strat.items()]
    c = only(build_report(recs, FULL, protocol=PROTOCOL), "entropy")
    assert [t["cycle"] for t in c["targets"]] == [1, 2, 3, 4]
    last = c["targets"][-1]
    assert last["target_mAP50"] == pytest.approx((0.5 + 0.375 + 0.4375) / 3)
    assert last["n"] == 3 and last["censored"] == 1 and last["censored_seeds"] == [1]
    seed1 = last["per_seed"][1]
    assert seed1["censored"] and seed1["images"]["log"]["needed"] == 400.0 and seed1["boxes"]["log"]["needed"] == 2000.0
    # Linear raw crossings: seed 0 reaches 0.5 at 200; seed 2 reaches 0.4375 at 175; random needs 400 in both.
    assert [r["images"]["linear"]["needed"] for r in last["per_seed"]] == [200.0, 400.0, 175.0]
    assert last["images"]["linear"]["saved"] == pytest.approx((200 + 0 + 225) / 3)
    # Random seed 1 dips to 0.25 at cycle 3: its own envelope reached 0.25 at 200 images, the reference.
    t3 = c["targets"][2]["per_seed"][1]
    assert t3["random_images"] == 300.0 and t3["images"]["linear"]["reference"] == 200.0
    assert t3["images"]["linear"]["saved"] == 0.0
    assert "never reached random's mAP50 at cycle 4 in 1 of 3 seeds" in c["sentence"]


def test_headline_aulc_and_holm_over_strategies_and_modes():
    recs = random_runs() + random_runs("adaptive")
    recs += [run("entropy", s, [m + 0.0625 + 0.001 * s for m in RANDOM[s]]) for s in RANDOM]
    recs += [run("margin", s, [m + (0.01 if s else -0.01) for m in RANDOM[s]], mode="adaptive") for s in RANDOM]
    rep = build_report(recs, FULL, protocol=PROTOCOL)
    e, m = only(rep, "entropy"), only(rep, "margin", "adaptive")
    assert e["aulc"]["random"] == pytest.approx(np.mean([aulc(IMAGES, RANDOM[s]) for s in RANDOM]))
    # A constant shift d of every cycle adds d (1 - 100 / 800) to the AULC.
    assert e["aulc"]["difference"] == pytest.approx((0.0625 + 0.001) * (1 - 100 / 800))
    assert e["p_holm"] == pytest.approx(min(1, 2 * e["p"])) and m["p_holm"] == pytest.approx(max(m["p"], e["p_holm"]))
    assert e["ci95"][0] > 0 and "a measurable gain" in e["sentence"]
    assert "no measurable gain" in m["sentence"] and m["ci95"][0] < 0 < m["ci95"][1]


def test_better_at_equal_images_but_not_at_equal_boxes_is_said_plainly():
    seeds = [0, 1, 2, 3, 4]
    crowded = {s: [0.2 + 0.002 * s, 0.3, 0.4, 0.5 + 0.002 * s] for s in seeds}
    recs = [run("random", s, [0.1, 0.2, 0.3, 0.4 + 0.003 * s]) for s in seeds]
    recs += [run("box_count", s, crowded[s], boxes=[2 * b for b in BOXES]) for s in seeds]
    # Random that took images until it had the same boxes: as good, within noise.
    recs += [run("random", s, [v + (0.004 if s % 2 else -0.004) for v in crowded[s]], images=[2 * n for n in IMAGES],
                 boxes=[2 * b + s for b in BOXES], eq="box_count") for s in seeds]
    rep = build_report(recs, None, protocol={**PROTOCOL, "seeds": seeds})
    c = only(rep, "box_count")
    eq = c["equal_boxes"]
    assert eq["seeds"] == seeds and eq["final_box_mismatch"] == pytest.approx(2.0)
    assert [x["random_images"] for x in eq["cycles"]] == [200, 400, 600, 800]
    assert eq["aulc_boxes"]["p_holm"] is not None and eq["final_mAP50"]["p_holm"] >= eq["final_mAP50"]["p"]
    assert "better at equal images but not at equal boxes" in c["sentence"]
    assert "at equal images, AULC" in c["sentence"] and "a measurable gain" in c["sentence"]
    assert c["targets"][-1]["boxes"]["log"]["saved"] < 0 < c["targets"][-1]["images"]["log"]["saved"]


def test_untested_at_equal_boxes_blames_boxes_only_when_more_were_labeled():
    recs = random_runs()
    recs += [run("entropy", s, [m + 0.0625 + 0.001 * s for m in RANDOM[s]]) for s in RANDOM]
    recs += [run("crowd", s, [m + 0.0625 + 0.001 * s for m in RANDOM[s]], boxes=[2 * b for b in BOXES]) for s in RANDOM]
    rep = build_report(recs, None, protocol=PROTOCOL)
    same, crowd = only(rep, "entropy"), only(rep, "crowd")
    assert same["equal_boxes"] is None and "at equal boxes it was not tested" in same["sentence"]
    assert "more boxes per image" not in same["sentence"]
    assert "untested at equal boxes, and it labeled more boxes" in crowd["sentence"]
    assert "(+100% against random)" in crowd["sentence"]


def test_one_seed_gives_no_interval_and_says_so():
    recs = [run("random", 0, RANDOM[0]), run("entropy", 0, [0.25, 0.5, 0.5, 0.625])]
    c = only(build_report(recs, [], protocol={**PROTOCOL, "seeds": [0]}), "entropy")
    assert c["p"] is None and c["ci95"] is None and c["p_holm"] is None
    assert all(t["images"]["log"]["ci95"] is None for t in c["targets"])
    assert "from one seed, with no interval or p-value: no claim" in c["sentence"]
    assert "Only 1 seed" in c["sentence"]


def test_scorer_labels_are_charged_on_both_axes():
    recs = random_runs() + [run("entropy", s, RANDOM[s], scorer_images=80, scorer_charged=50,
                                scorer_boxes_charged=250) for s in RANDOM]
    c = only(build_report(recs, [], protocol=PROTOCOL), "entropy")
    assert c["scorer_images"] == 80 and c["final_images"]["strategy"] == 450 and c["final_boxes"]["strategy"] == 2250
    assert c["aulc"]["strategy"] == pytest.approx(np.mean([aulc([n + 50 for n in IMAGES], RANDOM[s]) for s in RANDOM]))
    assert c["aulc"]["difference"] < 0   # the same curve, paid 50 images more
    assert c["targets"][-1]["images"]["linear"]["saved"] == -50.0
    assert "charged" in c["sentence"]


def test_full_data_line_and_noise_floor():
    rep = build_report(random_runs() + [run("entropy", s, RANDOM[s]) for s in RANDOM], FULL, protocol=PROTOCOL)
    full = rep["full"]
    assert full["seeds"] == [0, 1] and full["mAP50"]["mean"] == 0.78125
    assert full["mAP50"]["ci95"] == pytest.approx(list(stats.t.interval(0.95, 1, loc=0.78125, scale=0.03125)))
    random_final = np.mean([m[-1] for m in RANDOM.values()])
    assert rep["random_final_over_full"]["precomputed"] == pytest.approx(random_final / 0.78125)
    assert rep["off_noise_floor"] == {"precomputed": True}
    assert full["recipe"] == {"epochs": 3}
    low = build_report(random_runs(), [{"seed": 0, "mAP50": 2.0, "images": 1, "boxes": 1}], protocol=PROTOCOL)
    assert low["off_noise_floor"] == {"precomputed": False}
    assert "NEAR THE NOISE FLOOR" in render_markdown(low)


def test_per_class_ap_is_none_aware():
    recs = [run("random", s, RANDOM[s], per_class={"car": 0.5, "train": None if s else 0.25}) for s in RANDOM]
    rep = build_report(recs, None, protocol=PROTOCOL)
    [row] = rep["per_class"]["rows"]
    assert rep["per_class"]["classes"] == ["car", "train"]
    assert row["AP50"] == {"car": 0.5, "train": 0.25} and row["n"] == {"car": 3, "train": 1}
    assert rep["comparisons"] == []


def test_write_report_files(tmp_path):
    recs = random_runs() + [run("entropy", s, [0.25, 0.5, 0.5, 0.625 - 0.0625 * s]) for s in RANDOM]
    recs += [run("random", s, [0.125, 0.25, 0.375, 0.5], images=[120, 240, 360, 480], eq="entropy") for s in RANDOM]
    recs[0]["cycles"][-1]["per_class"]["bus"] = float("nan")
    report = write_report(recs, FULL, tmp_path / "out", protocol={**PROTOCOL, "extra": "kept"})
    text = (tmp_path / "out" / "report.json").read_text()
    on_disk = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["format"] == REPORT_FORMAT == "alod.compare-report/2"
    assert on_disk["protocol"] == {**PROTOCOL, "extra": "kept"}
    assert on_disk["full"]["seeds"] == [0, 1] and set(on_disk["full"]["mAP50"]) >= {"mean", "ci95"}
    for c in on_disk["comparisons"]:
        assert {"aulc", "ci95", "p", "p_holm", "targets", "equal_boxes", "scorer_images", "sentence"} <= set(c)
        assert all("censored" in t for t in c["targets"])
    md = (tmp_path / "out" / "report.md").read_text()
    for c in on_disk["comparisons"]:
        assert c["sentence"] in md
    for heading in ("Headline", "At equal boxes", "Labels to reach", "AP50 per class", "Cycle 1 shared", "recipe"):
        assert heading in md
    png = (tmp_path / "out" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in png
    from alod.compare.report import plot_curves
    assert plot_curves(report) == png  # deterministic: no timestamp in the file


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r[0].pop("seed"), "curve record 0: missing seed"),
    (lambda r: r[1].update(mode="online"), "unknown mode 'online'"),
    (lambda r: r.append(dict(r[0])), "the same strategy, mode, seed and equal_boxes_to as curve record 0"),
    (lambda r: r[3]["cycles"][1].update(mAP50=float("nan")), "curve record 3 (entropy (precomputed), seed 0), "
                                                             "cycle 2: 'mAP50' must be a finite number"),
    (lambda r: r[3]["cycles"][1].update(images=float("inf")), "'images' must be a finite number"),
    (lambda r: r[3]["cycles"][0].pop("boxes"), "a cycle lacks boxes"),
    (lambda r: r[3].update(equal_boxes_to="margin"), "equal_boxes_to is set, so the run must be 'random'"),
    (lambda r: r.pop(1), "entropy (precomputed) has seeds [1] that random (precomputed) lacks"),
    (lambda r: r.append(run("random", 0, RANDOM[0], eq="margin")), "have no margin (precomputed) run"),
    (lambda r: r.append(run("margin", 0, RANDOM[0], mode="adaptive")), "no random (adaptive) runs"),
    (lambda r: r.append(run("margin", 7, RANDOM[0])), "seed 7 is not among protocol seeds"),
    (lambda r: r[3].update(scorer_charged=5), "scorer_charged (5) exceeds scorer_images (0)"),
    (lambda r: r[3]["cycles"].pop(), "have different cycles"),
])
def test_bad_records_name_the_record(mutate, message):
    recs = random_runs() + [run("entropy", s, RANDOM[s]) for s in RANDOM]
    mutate(recs)
    with pytest.raises(AlodError) as err:
        build_report(recs, FULL, protocol=PROTOCOL)
    assert message in str(err.value)


def test_bad_protocol_and_full_records():
    recs = random_runs()
    with pytest.raises(AlodError, match="protocol lacks cycle1_shared, scorer"):
        build_report(recs, None, protocol={"seeds": [0, 1, 2]})
    with pytest.raises(AlodError, match="full record 1: missing images"):
        build_report(recs, [FULL[0], {"seed": 1, "mAP50": 0.5, "boxes": 3}], protocol=PROTOCOL)
    with pytest.raises(AlodError, match="seed 0 appears twice"):
        build_report(recs, [FULL[0], FULL[0]], protocol=PROTOCOL)
    with pytest.raises(AlodError, match=r"full record 0 \(seed 0\): 'mAP50' must be a finite number"):
        build_report(recs, [{**FULL[0], "mAP50": float("inf")}], protocol=PROTOCOL)


# --------------------------------------------------------------------------- annotator actions and stopping
#
# Random's pools cost 500/800/1,100/1,400 annotator actions (cycle 1: every box drawn, actions == boxes;
# later cycles pre-annotated). The "entropy" runs below share random's mAP50 curve seed by seed and
# cost 500/700/900/1,000 + 100 s actions, so every action saving is a difference of pool sizes.

RANDOM_ACTIONS = [500, 800, 1100, 1400]


def strategy_actions(seed):
    return [500, 700, 900, 1000 + 100 * seed]


def with_actions(rec, actions, agreement=None, **extra):
    for c, a in zip(rec["cycles"], actions):
        c["actions"] = a
    for c, g in zip(rec["cycles"], agreement or []):
        c["agreement"] = g
    rec.update(extra)
    return rec


def action_records(eq=False):
    recs = [with_actions(r, RANDOM_ACTIONS) for r in random_runs()]
    recs += [with_actions(run("entropy", s, RANDOM[s]), strategy_actions(s)) for s in RANDOM]
    if eq:  # equal-box random runs: same curve and boxes, more images, 1,700 - 100 s actions at the end
        recs += [with_actions(run("random", s, RANDOM[s], images=[120, 240, 360, 480], eq="entropy"),
                              [500, 900, 1300, 1700 - 100 * s]) for s in RANDOM]
    return recs


def t_p(mean, sd, n):
    return 2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)


def test_action_savings_per_target_and_final_actions_by_hand():
    rep = build_report(action_records(), None, protocol=PROTOCOL)
    assert rep["actions_recorded"] is True
    c = only(rep, "entropy")
    half = stats.t.ppf(0.975, 2) * 100 / math.sqrt(3)
    last = c["targets"][-1]
    # Seed s reaches random's final at cycle 4 with 1,000 + 100 s actions; random with 1,400.
    assert [r["actions"]["log"]["saved"] for r in last["per_seed"]] == [400.0, 300.0, 200.0]
    a = last["actions"]["log"]
    assert a["saved"] == 300.0 and a["needed"] == 1100.0 and a["reference"] == 1400.0
    assert a["saved_pct"] == pytest.approx(100 * 300 / 1400)
    assert a["ci95"] == pytest.approx([300 - half, 300 + half]) and a["p"] == pytest.approx(t_p(300, 100, 3))
    assert last["actions"]["linear"]["saved"] == 300.0 and last["random_actions"] == 1400.0
    # Cycle 1: the same 500 actions (saved 0, p 1); cycle 2: 100 each (p 0); cycle 3: random seed 1
    # reached its 0.25 at cycle 2 already, so [200, 100, 200]. Holm over the four action savings.
    assert [t["actions"]["log"]["saved"] for t in c["targets"]] == pytest.approx([0, 100, 500 / 3, 300])
    p3, p4 = t_p(500 / 3, 100 / math.sqrt(3), 3), t_p(300, 100, 3)
    assert c["targets"][2]["actions"]["log"]["p"] == pytest.approx(p3)
    assert [t["actions"]["log"]["p_holm"] for t in c["targets"]] == pytest.approx(
        [1.0, 0.0, max(3 * p4, 2 * p3), 3 * p4])
    # The image savings keep their own family, untouched by the actions.
    assert [t["images"]["log"]["saved"] for t in c["targets"]] == [0, 0, 0, 0]
    fa = c["final_actions"]
    assert fa["strategy"] == 1100.0 and fa["random"] == 1400.0 and fa["difference"] == -300.0
    assert fa["ci95"] == pytest.approx([-300 - half, -300 + half]) and fa["p"] == pytest.approx(t_p(300, 100, 3))
    assert c["actions_per_box"] == pytest.approx({"strategy": 0.55, "random": 0.7})
    assert c["aulc_actions"]["random"] == pytest.approx(np.mean([aulc(RANDOM_ACTIONS, RANDOM[s]) for s in RANDOM]))
    assert ("in annotator actions it needed 1,100 to random's 1,400 to reach random's final mAP50 "
            "(saving: no measurable gain (+300") in c["sentence"]   # 3 p4 = 0.10: not measurable
    assert "0.55 actions per box (random: 0.70)" in c["sentence"]
    assert rep["curves"][0]["cycles"][-1]["actions"] == 1400.0


def test_equal_boxes_compares_final_actions_in_its_holm_family():
    c = only(build_report(action_records(eq=True), None, protocol=PROTOCOL), "entropy")
    e = c["equal_boxes"]
    # Strategy minus equal-box random: (1,000 + 100 s) - (1,700 - 100 s) = -700, -500, -300.
    fa = e["final_actions"]
    assert fa["difference"] == -500.0 and fa["p"] == pytest.approx(t_p(500, 200, 3))
    # Same curve and boxes: final mAP50 and AULC on boxes differ by 0 (p 1), so Holm multiplies by 3.
    assert e["final_mAP50"]["p"] == 1.0 and e["aulc_boxes"]["p"] == 1.0
    assert fa["p_holm"] == pytest.approx(3 * fa["p"]) and e["final_mAP50"]["p_holm"] == 1.0
    assert e["actions_per_box"] == pytest.approx({"strategy": 0.55, "random": 0.8})
    assert e["cycles"][-1]["strategy_actions"] == 1100.0 and e["cycles"][-1]["random_actions"] == 1600.0
    assert ("at those equal boxes it spent 1,100 annotator actions to random's 1,600: no measurable gain"
            in c["sentence"])


def test_more_actions_for_a_gain_at_equal_images_is_said_plainly():
    seeds = [0, 1, 2, 3, 4]
    recs = [with_actions(run("random", s, [0.1, 0.2, 0.3, 0.4 + 0.003 * s]), RANDOM_ACTIONS) for s in seeds]
    recs += [with_actions(run("crowd", s, [0.1625, 0.2625, 0.3625, 0.4625 + 0.004 * s]),
                          [1500, 3000, 4500, 6000 + 10 * s]) for s in seeds]
    c = only(build_report(recs, None, protocol={**PROTOCOL, "seeds": seeds}), "crowd")
    assert "a measurable gain" in c["sentence"] and c["targets"][-1]["actions"]["log"]["ci95"][1] < 0
    assert "measurably more actions than random" in c["sentence"]
    assert "better at equal images but needs measurably more annotator actions" in c["sentence"]
    assert "at equal boxes it was not tested" in c["sentence"] and "and spent 6,020 annotator actions" in c["sentence"]


def _strip_new(report):
    """The report without the keys that annotator actions and stopping added."""
    rep = {k: v for k, v in report.items()
           if k not in ("actions_recorded", "actions_partly_recorded", "stopping_recorded")}
    rep["curves"] = [{**{k: v for k, v in g.items() if k != "stopping"},
                      "cycles": [{k: v for k, v in c.items() if k not in ("actions", "agreement")}
                                 for c in g["cycles"]]}
                     for g in rep["curves"]]
    comps = []
    for c in rep["comparisons"]:
        c = {k: v for k, v in c.items() if k not in ("aulc_actions", "final_actions", "actions_per_box", "sentence")}
        c["targets"] = [{**{k: v for k, v in t.items() if k not in ("actions", "random_actions", "per_seed")},
                         "per_seed": [{k: v for k, v in r.items() if k not in ("actions", "random_actions")}
                                      for r in t["per_seed"]]} for t in c["targets"]]
        comps.append(c)
    rep["comparisons"] = comps
    return rep


def test_actions_leave_every_existing_number_alone_and_without_them_the_report_says_so():
    with_ = build_report(action_records(), FULL, protocol=PROTOCOL)
    plain = build_report(random_runs() + [run("entropy", s, RANDOM[s]) for s in RANDOM], FULL, protocol=PROTOCOL)
    assert _strip_new(with_) == _strip_new(plain)
    assert plain["actions_recorded"] is False and plain["actions_partly_recorded"] is False
    c = only(plain, "entropy")
    assert c["final_actions"] is None and c["actions_per_box"] is None and c["targets"][-1]["actions"] is None
    assert "annotator actions" not in c["sentence"] and plain["curves"][0]["stopping"] is None
    md = render_markdown(plain)
    assert "Annotator actions: not recorded" in md and "Stopping signal: not recorded" in md
    assert "## Annotator actions" not in md and "## Stopping" not in md
    # One record without actions: none are used, and the report says why.
    partial = action_records()
    for cyc in partial[4]["cycles"]:
        del cyc["actions"]
    rep = build_report(partial, FULL, protocol=PROTOCOL)
    assert _strip_new(rep) == _strip_new(plain) and rep["actions_partly_recorded"] is True
    assert "Annotator actions: not recorded for every run" in render_markdown(rep)


AGREEMENT = {0: [None, 0.5, 0.92, 0.95], 1: [None, 0.5, 0.6, 0.7], 2: [None, 0.9, 0.95, 0.99]}


def stopping_records():
    recs = [with_actions(r, RANDOM_ACTIONS) for r in random_runs()]
    recs[0]["stop_cycle"] = 4   # given without agreements: taken as recorded; seeds 1 and 2 have no signal
    recs += [with_actions(run("entropy", s, RANDOM[s]), strategy_actions(s), AGREEMENT[s]) for s in RANDOM]
    return recs


def test_stopping_summary_by_hand():
    rep = build_report(stopping_records(), None, protocol={**PROTOCOL, "stop_agreement": 0.9})
    assert rep["stopping_recorded"] is True
    st = [g for g in rep["curves"] if g["strategy"] == "entropy"][0]["stopping"]
    # Seed 0 first reaches 0.9 at cycle 3, seed 2 at cycle 2 (>= counts), seed 1 never.
    assert [r["stop_cycle"] for r in st["per_seed"]] == [3, None, 2]
    assert st["threshold"] == 0.9 and st["n"] == 3 and st["stopped"] == 2 and st["stopped_seeds"] == [0, 2]
    assert st["stop_cycle"] == 2.5 and st["at_stop"] == {"images": 250.0, "boxes": 1250.0, "actions": 800.0}
    assert st["mAP50_at_stop"] == 0.3125 and st["mAP50_final"] == 0.46875   # (0.375 + 0.25) / 2, (0.5 + 0.4375) / 2
    assert st["mAP50_lost"]["mean"] == 0.15625 and st["mAP50_lost"]["n"] == 2
    # Saved: images 100 and 200, boxes 500 and 1,000, actions 1,000 - 900 and 1,200 - 700.
    assert st["saved"] == {"images": 150.0, "boxes": 750.0, "actions": 300.0}
    rnd = rep["curves"][0]["stopping"]
    assert rnd["n"] == 1 and rnd["stopped"] == 1 and rnd["unrecorded_seeds"] == [1, 2]
    assert rnd["saved"] == {"images": 0.0, "boxes": 0.0, "actions": 0.0}
    assert any("stop signal is missing for some seeds of random (precomputed)" in n for n in rep["notes"])
    assert [c["agreement"] for c in rep["curves"][1]["cycles"]] == pytest.approx([None, 1.9 / 3, 2.47 / 3, 2.64 / 3])
    md = render_markdown(rep)
    assert "## Stopping signal (agreement >= 0.9 between consecutive cycles' models)" in md
    assert "| entropy (precomputed) | 3 | 2 | 2.5 | 0.312 | 0.469 |" in md
    # Without stop_agreement the agreements give no stop cycle, and random's given one stands alone.
    rep = build_report(stopping_records(), None, protocol=PROTOCOL)
    assert rep["curves"][1]["stopping"] is None and rep["curves"][0]["stopping"]["threshold"] is None


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r[3].update(stop_cycle=4), "stop_cycle 4 disagrees with its cycles' agreements, which first reach "
                                          "stop_agreement 0.9 at cycle 3"),
    (lambda r: r[0].update(stop_cycle=9), "stop_cycle 9 is not one of its cycles [1, 2, 3, 4]"),
    (lambda r: r[4]["cycles"][2].update(agreement=1.5), "cycle 3: 'agreement' must lie in [0, 1]"),
    (lambda r: r[4]["cycles"][2].update(actions=600), "annotator actions shrink from one cycle to the next"),
    (lambda r: r[4]["cycles"][2].update(actions=-1), "'actions' must be a non-negative whole number"),
])
def test_bad_actions_and_stop_records_name_the_record(mutate, message):
    recs = stopping_records()
    mutate(recs)
    with pytest.raises(AlodError) as err:
        build_report(recs, None, protocol={**PROTOCOL, "stop_agreement": 0.9})
    assert message in str(err.value)
    with pytest.raises(AlodError, match="'stop_agreement' must lie in"):
        build_report(random_runs(), None, protocol={**PROTOCOL, "stop_agreement": 2})


def test_write_report_with_actions_and_stopping(tmp_path):
    from alod.compare.report import curves_figure, plot_curves

    recs = stopping_records() + action_records(eq=True)[6:]
    report = write_report(recs, FULL, tmp_path, protocol={**PROTOCOL, "stop_agreement": 0.9})
    on_disk = json.loads((tmp_path / "report.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert on_disk == json.loads(json.dumps(report)) and on_disk["actions_recorded"] is True
    assert all("stopping" in g for g in on_disk["curves"])
    md = (tmp_path / "report.md").read_text()
    for heading in ("## Annotator actions at equal images", "## Stopping signal", "final actions diff",
                    "Annotator actions: recorded"):
        assert heading in md
    assert only(report, "entropy")["sentence"] in md
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and plot_curves(report) == png
    fig = curves_figure(report)
    assert len(fig.axes) == 3 and "annotator actions" in fig.axes[2].get_title()
    assert any("stops (agreement >= 0.9)" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert len(curves_figure(build_report(random_runs(), None, protocol=PROTOCOL)).axes) == 2


# --------------------------------------------------------------------------- variants against their base


def test_a_variant_is_also_compared_with_its_base_strategy_seed_by_seed():
    base = {s: [m + 0.0625 for m in ms] for s, ms in RANDOM.items()}
    # The variant's AULC is above the base's by 0.0625 * k / 4 on seed k (differences 0, 1/64, 2/64).
    variant = {s: [m + 0.0625 * s / 4 for m in ms] for s, ms in base.items()}
    records = (random_runs() + [run("entropy", s, m) for s, m in base.items()]
               + [run("entropy+div", s, m, boxes=[b - 100 for b in BOXES]) for s, m in variant.items()])
    report = build_report(records, None, protocol=PROTOCOL)
    [v] = report["variant_comparisons"]
    assert (v["strategy"], v["base"], v["mode"], v["seeds"], v["n"]) == ("entropy+div", "entropy", "precomputed",
                                                                        [0, 1, 2], 3)
    per_seed = {p["seed"]: p["strategy"] - p["base"] for p in v["aulc"]["per_seed"]}
    expected = {s: aulc(IMAGES, variant[s]) - aulc(IMAGES, base[s]) for s in base}
    assert per_seed == pytest.approx(expected)
    assert v["aulc"]["difference"] == pytest.approx(np.mean(list(expected.values())))
    assert v["aulc"]["p_holm"] == pytest.approx(v["aulc"]["p"])  # a family of one
    assert v["final_boxes"]["difference"] == pytest.approx(-100)
    assert v["final_actions"] is None  # not recorded in these records
    # Both strategies are still compared with random, and the markdown has the variants' table.
    assert {c["strategy"] for c in report["comparisons"]} == {"entropy", "entropy+div"}
    assert "## Variants against their base strategy" in render_markdown(report)


def test_a_report_without_variants_has_no_variant_comparisons():
    report = build_report(random_runs() + [run("entropy", s, m) for s, m in RANDOM.items()], None,
                          protocol=PROTOCOL)
    assert "variant_comparisons" not in report
    assert "Variants against" not in render_markdown(report)


def test_a_variant_without_its_base_runs_is_compared_with_random_only():
    report = build_report(random_runs() + [run("entropy+div", s, m) for s, m in RANDOM.items()], None,
                          protocol=PROTOCOL)
    assert "variant_comparisons" not in report and only(report, "entropy+div")["n"] == 3


def test_box_budgets_report_what_each_cycle_labeled_against_the_budget():
    # Budget 500 boxes per cycle; seed 0 adds 400, 600, 500 boxes after cycle 1, seed 1 adds 500 each time.
    boxes = {0: [500, 900, 1500, 2000], 1: [500, 1000, 1500, 2000]}
    images = {0: [100, 180, 290, 390], 1: [100, 200, 300, 400]}
    budgeted = [run("entropy+boxes", s, RANDOM[s], boxes=boxes[s], images=images[s], box_budget=500)
                for s in (0, 1)]
    report = build_report(random_runs() + budgeted, None, protocol=PROTOCOL)
    [b] = report["box_budgets"]
    assert (b["label"], b["box_budget"], b["seeds"], b["cycles"]) == ("entropy+boxes (precomputed)", 500, [0, 1], 6)
    assert b["boxes_per_cycle"] == 500.0 and b["images_per_cycle"] == pytest.approx((290 + 300) / 6)
    assert b["ratio"] == {"mean": 1.0, "min": 0.8, "max": 1.2}
    assert "## Budgets in boxes" in render_markdown(report)
    plain = build_report(random_runs(), None, protocol=PROTOCOL)
    assert "box_budgets" not in plain and "Budgets in boxes" not in render_markdown(plain)
    with pytest.raises(AlodError, match="different box budgets"):
        build_report(random_runs() + [budgeted[0], {**budgeted[1], "box_budget": 400}], None, protocol=PROTOCOL)
    with pytest.raises(AlodError, match="box_budget must be > 0"):
        build_report(random_runs() + [{**budgeted[0], "box_budget": 0}], None, protocol=PROTOCOL)


def test_a_censored_run_on_a_smaller_budget_is_credited_no_saving():
    """A box budget that underspends: its last pool (1,200 boxes) is below what random needed
    (2,000) and it never reaches random's final mAP50. Counted at its budget it would 'save' 800
    boxes; it is credited 0, and on a budget at least random's its (negative) saving stays."""
    small = [run("entropy+boxes", s, [0.125, 0.125, 0.125, 0.125], boxes=[300, 600, 900, 1200]) for s in RANDOM]
    c = only(build_report(random_runs() + small, None, protocol=PROTOCOL), "entropy+boxes")
    last = c["targets"][-1]
    assert last["censored"] == 3
    for r in last["per_seed"]:
        assert r["boxes"]["log"]["needed"] == 1200.0 and r["boxes"]["log"]["reference"] == 2000.0
        assert r["boxes"]["log"]["saved"] == 0.0 and r["boxes"]["linear"]["saved"] == 0.0
        assert r["images"]["log"]["saved"] == 0.0  # 400 images, random's own need: no more, no less
    big = [run("entropy", s, [0.125, 0.125, 0.125, 0.125], boxes=[600, 1200, 1800, 2400]) for s in RANDOM]
    c = only(build_report(random_runs() + big, None, protocol=PROTOCOL), "entropy")
    assert [r["boxes"]["log"]["saved"] for r in c["targets"][-1]["per_seed"]] == [-400.0, -400.0, -400.0]


def test_the_sentence_calls_a_censored_need_a_lower_bound():
    small = [run("entropy+boxes", s, [0.125, 0.125, 0.125, 0.125], boxes=[300, 600, 900, 1200]) for s in RANDOM]
    text = sentence(only(build_report(random_runs() + small, None, protocol=PROTOCOL), "entropy+boxes"))
    assert "it needed at least 400 images to random's 400 and at least 1,200 boxes" in text
    assert "credited no saving" in text and "upper bound" not in text
    reached = [run("entropy", s, [0.2, 0.3, 0.4, 0.5]) for s in RANDOM]
    assert "at least" not in sentence(only(build_report(random_runs() + reached, None, protocol=PROTOCOL), "entropy"))
