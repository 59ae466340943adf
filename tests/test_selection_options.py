"""The selection options of issue 19 without a model: class weights in the strategies, the config keys,
the precomputed schedule built with options, and the comparison's variants (plan, names, configs)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from alod.compare.protocol import (check_variants, equal_boxes_name, plan, resolve, run_labels,
                                   run_name, split_label, variant_config)
from alod.config import load_config
from alod.stages.setup import check_config, load_checked_config
from alod.cycle.batch_rules import SelectOptions, choose
from alod.schedule import build_schedule, dumps_schedule
from alod.strategies import STRATEGIES, box_entropy, difficulty_weights, get_strategy, score_images
from alod.utils import AlodError


# ------------------------------------------------------------------------------------ class weights
def test_difficulty_weights_are_one_minus_ap50_clipped_with_unknowns_at_one():
    metrics = {"AP50/car": 0.9, "AP50/person": 0.2, "AP50/bike": float("nan"), "AP50/bus": 0.99,
               "AP50/truck": None, "mAP50": 0.5}
    w = difficulty_weights(metrics, ["car", "person", "bike", "bus", "truck", "tram"])
    np.testing.assert_allclose(w, [1.0, 0.1, 0.8, 1.0, 0.05, 1.0, 1.0])  # background, ..., tram: no key


def _det(probs, scores):
    probs = np.asarray(probs, dtype=np.float32)
    return {"probs": probs, "scores": np.asarray(scores, dtype=np.float32),
            "labels": 1 + np.argmax(probs[:, 1:], axis=1)}


def test_class_weights_reverse_a_ranking_in_a_known_way():
    # Image A: one uncertain "car" (class 1); image B: one less uncertain "person" (class 2).
    a = _det([[0.3, 0.4, 0.3, 0.0]], [0.9])
    b = _det([[0.1, 0.1, 0.8, 0.0]], [0.9])
    plain = score_images([a, b], strategy="entropy")
    ea, eb = box_entropy(a["probs"])[0], box_entropy(b["probs"])[0]
    np.testing.assert_allclose(plain, [ea, eb])
    assert plain[0] > plain[1]
    w = np.array([1.0, 0.1, 0.8, 1.0])  # cars are easy (AP50 0.9), persons hard (0.2)
    weighted = score_images([a, b], strategy="entropy", class_weights=w)
    np.testing.assert_allclose(weighted, [0.1 * ea, 0.8 * eb])
    assert weighted[1] > weighted[0]
    # box_count sums the weights of its confident boxes; without weights it counts.
    two = _det([[0.1, 0.8, 0.1, 0.0], [0.1, 0.1, 0.1, 0.7]], [0.9, 0.6])
    assert score_images([two], strategy="box_count").tolist() == [2.0]
    np.testing.assert_allclose(score_images([two], strategy="box_count", class_weights=w), [1.1])


def test_class_weights_are_an_input_not_a_yaml_parameter():
    assert "class_weights" not in get_strategy("entropy").params and get_strategy("entropy").weighted
    assert {n for n, s in STRATEGIES.items() if s.weighted} >= {"entropy", "least_confidence", "margin",
                                                                "box_count", "mc_dropout"}
    assert not get_strategy("random").weighted
    with pytest.raises(AlodError, match="takes no class weights"):
        score_images([{}], strategy="random", class_weights=np.ones(3))
    with pytest.raises(AlodError, match="has no parameter 'class_weights'"):
        load_checked_config(None, ["score.params={entropy: {class_weights: [1, 1]}}"])


def test_mc_dropout_weight_is_the_most_likely_foreground_class():
    # One box, T = 2 passes, C = 2: the mean is [0.1, 0.5, 0.4], so class 1 (weight 0.5) is its class.
    mc = np.array([[[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]]], dtype=np.float32)
    det = {"scores": np.array([0.9]), "mc_probs": mc, "probs": mc.mean(axis=1)}
    plain = score_images([det], strategy="mc_dropout", params={"passes": 2})
    weighted = score_images([det], strategy="mc_dropout", params={"passes": 2}, class_weights=np.array([1, .5, .25]))
    np.testing.assert_allclose(weighted, 0.5 * plain)


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("sets, message", [
    (["score.batch=diverse"], "score.batch: unknown batch rule 'diverse'"),
    (["score.batch_pool=0"], "score.batch_pool must be >= 1"),
    (["score.class_weights=inverse"], "score.class_weights must be none or difficulty"),
    (["score.class_weights=difficulty", "score.strategy=random"], "strategy 'random' has none"),
    (["schedule.budget=labels"], "schedule.budget must be images or boxes"),
    (["schedule.budget=boxes"], "needs schedule.box_budget"),
    (["schedule.box_budget=0"], "schedule.box_budget must be null or > 0"),
    (["schedule.box_threshold=1.5"], r"schedule.box_threshold must be in \[0, 1\]"),
    (["schedule.box_estimate=guess"], "schedule.box_estimate must be count or calibrated"),
    (["schedule.budget=boxes", "schedule.box_budget=9", "schedule.box_estimate=calibrated"],
     "box_estimate: calibrated needs cycles.selector: adaptive, not 'precomputed'"),
    (["compare.variants={a+b: {score.batch: kmeanspp}}"], "a variant name is letters"),
    (["compare.variants={div: {}}"], "non-empty mapping"),
    (["compare.variants={div: {schedule.seed: 3}}"], "schedule.seed is fixed by the comparison"),
    (["compare.variants={div: {score: {strategy: margin}}}"], "score.strategy is fixed"),
    (["compare.variants={div: {score.batch: best}}"], "compare.variants.div: config: score.batch: unknown"),
    (["compare.variants={div: {score.bach: kmeanspp}}"], "unknown key"),
])
def test_each_new_key_is_checked_at_load(sets, message):
    with pytest.raises(AlodError, match=message):
        load_checked_config(None, sets)


def test_a_variant_is_checked_under_the_selector_of_each_compare_mode():
    """A calibrated box budget needs the adaptive selector: fine as a variant of an adaptive-only
    comparison (the base config's precomputed selector is not what its runs use), refused as soon as
    the comparison also runs it precomputed; its equal-box random run drops the budget rule."""
    variant = "compare.variants={boxes: {schedule.budget: boxes, schedule.box_budget: 50, schedule.box_estimate: calibrated}}"
    cfg = load_checked_config(None, [variant, "compare.modes=[adaptive]"])
    assert cfg.cycles.selector == "precomputed"
    check_variants(cfg)
    run = variant_config(cfg, "entropy+boxes", seed=0, name="x", mode="adaptive")
    assert (run.cycles.selector, run.schedule.budget, run.schedule.box_estimate) == ("adaptive", "boxes", "calibrated")
    eq = variant_config(cfg, "entropy+boxes", seed=0, name="x", mode="adaptive", baseline=True)
    assert (eq.score.strategy, eq.schedule.budget, eq.schedule.box_budget) == ("random", "images", None)
    with pytest.raises(AlodError, match="compare.variants.boxes: .*needs cycles.selector: adaptive, not 'precomputed'"):
        load_checked_config(None, [variant, "compare.modes=[adaptive, precomputed]"])


def test_the_new_keys_default_to_the_original_selection():
    cfg = load_config(None)
    assert (cfg.score.batch, cfg.score.batch_pool, cfg.score.class_weights) == ("topk", 3, "none")
    assert (cfg.schedule.budget, cfg.schedule.box_budget, cfg.compare.variants) == ("images", None, {})
    assert SelectOptions.from_config(cfg).identity() == {}
    ok = load_config(None, ["score.batch=coreset", "schedule.budget=boxes", "schedule.box_budget=30",
                            "score.class_weights=difficulty", "compare.variants={div: {score.batch: kmeanspp}}"])
    assert SelectOptions.from_config(ok).identity() == {
        "batch": "coreset", "batch_pool": 3, "class_weights": "difficulty", "budget": "boxes", "box_budget": 30,
        "box_threshold": 0.5}


# -------------------------------------------------------------------------------- the schedule
NAMES = [f"img_{i:04d}.jpg" for i in range(50)]
SCORES = np.array([int(hashlib.sha256(n.encode()).hexdigest()[:6], 16) / 2**24 for n in NAMES])
EMB = np.random.default_rng(3).normal(size=(50, 6)).astype(np.float16)
PREDICTED = np.arange(50) % 5


def _schedule(**options):
    return build_schedule(names=NAMES, scores=SCORES, batch_size=12, query_size=4, seed=7,
                          dataset={"num_images": 50, "names_sha256": "x"}, checkpoint=None,
                          strategy={"name": "injected", "params": {}}, **options)


def test_without_options_the_schedule_bytes_are_unchanged():
    plain = dumps_schedule(_schedule())
    assert dumps_schedule(_schedule(selection=None)) == plain
    assert dumps_schedule(_schedule(selection={}, embeddings=EMB, predicted_boxes=PREDICTED)) == plain


@pytest.mark.parametrize("batch", ["kmeanspp", "coreset"])
def test_a_batch_rule_picks_within_the_top_of_each_batch(batch):
    selection = {"batch": batch, "batch_pool": 2}
    s = _schedule(selection=selection, embeddings=EMB, predicted_boxes=PREDICTED)
    assert s["selection"] == selection and dumps_schedule(s) == dumps_schedule(
        _schedule(selection=selection, embeddings=EMB, predicted_boxes=PREDICTED))  # byte-reproducible
    pos = {n: i for i, n in enumerate(NAMES)}
    for n, (batch_names, cycle) in enumerate(zip(s["batches"][1:], s["cycles"][1:]), start=2):
        assert cycle["rule"] == batch and len(cycle["images"]) == 4
        assert set(cycle["images"]) <= set(batch_names[:8])  # batch_pool 2 x query_size 4
        idx = [pos[x] for x in batch_names]
        picked, _ = choose(SelectOptions(batch=batch, batch_pool=2), names=batch_names, scores=np.array(
            [float(f"{SCORES[i]:.6e}") for i in idx]), k=4, emb=EMB[idx], rng=np.random.default_rng((7, 4, n)))
        assert cycle["images"] == [batch_names[k] for k in picked]
        assert cycle["predicted_boxes"] == int(sum(PREDICTED[pos[x]] for x in cycle["images"]))
    assert s["cycles"][0] == _schedule()["cycles"][0]  # cycle 1 is the shared random draw


def test_a_box_budget_takes_each_batch_in_rank_order_until_the_predicted_boxes_reach_it():
    selection = {"budget": "boxes", "box_budget": 7, "box_threshold": 0.5}
    s = _schedule(selection=selection, predicted_boxes=PREDICTED)
    pos = {n: i for i, n in enumerate(NAMES)}
    for batch_names, cycle in zip(s["batches"][1:], s["cycles"][1:]):
        counts = np.cumsum([PREDICTED[pos[x]] for x in batch_names])
        stop = int(np.argmax(counts >= 7)) + 1 if (counts >= 7).any() else len(batch_names)
        assert cycle["rule"] == "top to boxes" and cycle["images"] == batch_names[:stop]
        assert cycle["predicted_boxes"] == int(counts[stop - 1])


# ------------------------------------------------------------------------------------- variants
def test_variants_plan_name_and_pair_with_random():
    labels = run_labels(["entropy", "random"], {"div": {}, "box": {}})
    assert labels == ["entropy", "random", "entropy+div", "entropy+box"]
    assert plan(labels, ["adaptive"], [0]) == [(0, "adaptive", x) for x in labels]
    assert run_name("demo", mode="adaptive", strategy="entropy+div", seed=2) == "demo-adaptive-entropy+div-s2"
    assert equal_boxes_name("demo", mode="adaptive", strategy="entropy+div", seed=2) == \
        "demo-adaptive-random_boxes_entropy+div-s2"
    assert split_label("entropy+div") == ("entropy", "div") and split_label("random") == ("random", None)


def test_variant_configs_apply_the_overrides_on_the_seeded_run():
    cfg = resolve(load_config(None), strategies=["entropy", "random"], modes=["adaptive", "precomputed"], seeds=[0, 1],
                  variants=["div=score.batch=kmeanspp;score.batch_pool=4", "hard=score.class_weights=difficulty"])
    assert cfg.compare.variants == {"div": {"score": {"batch": "kmeanspp", "batch_pool": 4}},
                                    "hard": {"score": {"class_weights": "difficulty"}}}
    plain = variant_config(cfg, "entropy", seed=1, name="x", mode="adaptive")
    div = variant_config(cfg, "entropy+div", seed=1, name="x", mode="adaptive")
    assert (div.score.batch, div.score.batch_pool, div.score.strategy) == ("kmeanspp", 4, "entropy")
    assert (div.run, div.schedule, div.pretrain) == (plain.run, plain.schedule, plain.pretrain)  # same pairing
    assert div.compare.variants == {}
    # No run carries the comparison's variants: the random run's config would fail their checks
    # (class_weights: difficulty has no meaning for random) when its stage checks its config.
    rand = variant_config(cfg, "random", seed=1, name="r", mode="adaptive")
    assert plain.compare.variants == rand.compare.variants == {}
    check_config(rand)
    # The equal-boxes random run of a variant: random, the variant's settings, no class weights.
    base = variant_config(cfg, "entropy+hard", seed=1, name="y", mode="adaptive", baseline=True)
    assert base.score.strategy == "random" and base.score.class_weights == "none"
    assert variant_config(cfg, "entropy+hard", seed=1, name="y", mode="adaptive").score.class_weights == "difficulty"


def test_bad_variants_fail_before_any_run():
    cfg = load_config(None)
    with pytest.raises(AlodError, match="expected NAME=KEY=VALUE"):
        resolve(cfg, variants=["div"])
    with pytest.raises(AlodError, match="repeated --variant"):
        resolve(cfg, variants=["a=score.batch=coreset", "a=score.batch=kmeanspp"])
    with pytest.raises(AlodError, match="schedule.query_size is fixed"):
        resolve(cfg, variants=["small=schedule.query_size=10"])
    with pytest.raises(AlodError, match="unknown batch rule"):
        resolve(cfg, variants=["div=score.batch=nope"])
    with pytest.raises(AlodError, match="unknown variant 'x'"):
        variant_config(cfg, "entropy+x", seed=0, name="n", mode="adaptive")
    check_variants(cfg)  # none: nothing to check


def test_the_compare_command_takes_repeated_variants():
    import argparse

    from alod.commands.pipeline import _compare_parser

    p = argparse.ArgumentParser()
    _compare_parser(p)
    args = p.parse_args(["--variant", "div=score.batch=kmeanspp", "--variant", "box=schedule.budget=boxes;"
                         "schedule.box_budget=30"])
    assert args.variant == ["div=score.batch=kmeanspp", "box=schedule.budget=boxes;schedule.box_budget=30"]
    assert p.parse_args([]).variant is None


def test_run_compare_runs_each_variant_with_its_config_and_equal_boxes_runs(tmp_path, monkeypatch):
    """The orchestration only: every stage is replaced by a recorder of the config it was given."""
    import alod.compare.protocol as compare

    ran: list = []

    def fake_cycles(cfg, **_):
        ran.append(cfg)
        return {"pool": {"names": ["a"], "cycles": [1]}, "cycles": []}

    def fake_record(cfg, state, *, seed, mode, strategy, scoring_seconds):
        return {"strategy": strategy, "mode": mode, "seed": seed, "equal_boxes_to": None,
                "cycles": [{"cycle": 1, "boxes": 3}, {"cycle": 2, "boxes": 9}]}

    monkeypatch.setattr(compare, "run_cycles", fake_cycles)
    monkeypatch.setattr(compare, "_record", fake_record)
    monkeypatch.setattr(compare, "_add_label_work", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(compare, "_protocol", lambda cfg, cycle1, records: {"records": records,
                                                                                    "cycle1_shared": True})
    monkeypatch.setattr(compare, "_write_run_info", lambda *a, **k: None)
    monkeypatch.setattr(compare, "write_report", lambda records, fulls, out_dir, protocol: protocol)
    cfg = resolve(load_config(None, [f"run.out_dir={tmp_path}", "run.name=cmp"]), strategies=["entropy", "random"],
                  modes=["adaptive"], seeds=[0], full_seeds=[], variants=["div=score.batch=coreset"])
    report = compare.run_compare(cfg, progress=False, log=lambda *_: None)
    names = [c.run.name for c in ran]
    assert names == ["cmp-adaptive-entropy-s0", "cmp-adaptive-random_boxes_entropy-s0", "cmp-adaptive-random-s0",
                     "cmp-adaptive-entropy+div-s0", "cmp-adaptive-random_boxes_entropy+div-s0"]
    by_name = dict(zip(names, ran))
    assert by_name["cmp-adaptive-entropy+div-s0"].score.batch == "coreset"
    assert by_name["cmp-adaptive-entropy-s0"].score.batch == "topk"
    eq = by_name["cmp-adaptive-random_boxes_entropy+div-s0"]
    assert eq.cycles.selector == "random_boxes" and eq.cycles.box_targets == (9,) and eq.score.strategy == "random"
    records = report["records"]
    assert [(r["strategy"], r.get("equal_boxes_to")) for r in records] == [
        ("entropy", None), ("random", "entropy"), ("random", None), ("entropy+div", None), ("random", "entropy+div")]
    assert len({c.schedule.seed for c in ran}) == 1  # one seed: every run shares the arrival batches
