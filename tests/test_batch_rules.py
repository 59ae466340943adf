"""Batch rules and the box budget (:mod:`alod.cycle.batch_rules`): exact picks on small synthetic arrays."""
from __future__ import annotations

import numpy as np
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from alod.cycle.batch_rules import (BATCH_RULES, SelectOptions, calibrated_counts, choose, predicted_counts,
                                    select_coreset, select_kmeanspp, select_topk, take_to_box_budget)
from alod.utils import AlodError


class FixedRng:
    """Stands in for a Generator: ``random()`` returns the given values in turn (draws by hand)."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


# Four candidates in rank order: 1 is a near-duplicate of 0, 2 and 3 lie apart.
EMB = np.array([[0.0, 0.0], [0.1, 0.0], [3.0, 0.0], [0.0, 4.0]])
SCORES = np.array([4.0, 3.0, 2.0, 1.0])


def test_the_registry_names_the_three_rules():
    assert sorted(BATCH_RULES) == ["coreset", "kmeanspp", "topk"]
    assert not BATCH_RULES["topk"].embeddings and BATCH_RULES["kmeanspp"].embeddings


def test_kmeanspp_draws_by_score_then_by_score_times_squared_distance():
    # Pick 1: p = w = [4, 3, 2, 1], cumsum [4, 7, 9, 10]; u = 0.1 -> 1.0 -> position 0.
    # Pick 2: d2 = [0, .01, 9, 16], p = w * d2 = [0, .03, 18, 16]; u = 0.5 -> 17.015 -> position 2.
    # Pick 3: d2 = [0, .01, 0, 16], p = [0, .03, 0, 16]; u = 0.5 -> 8.015 -> position 3 (not the duplicate 1).
    assert select_kmeanspp(EMB, SCORES, 3, FixedRng(0.1, 0.5, 0.5)).tolist() == [0, 2, 3]
    assert select_topk(EMB, SCORES, 3).tolist() == [0, 1, 2]


def test_kmeanspp_falls_back_to_weights_then_uniform_and_never_repeats():
    same = np.zeros((3, 2))
    # Identical embeddings and zero scores: every w * d2 and every w is 0, so the draw is uniform over
    # the images left; u = 0 takes the first of them each time.
    assert select_kmeanspp(same, np.zeros(3), 3, FixedRng(0.0, 0.0, 0.0)).tolist() == [0, 1, 2]
    # Duplicates only: after pick 0, w * d2 is 0 everywhere; the fallback p = w over [1, 2] = [0, 1, 1].
    assert select_kmeanspp(same, np.array([5.0, 1.0, 1.0]), 2, FixedRng(0.0, 0.6)).tolist() == [0, 2]


def test_kmeanspp_with_a_seeded_generator_is_reproducible():
    rng = lambda: np.random.default_rng((7, 4, 2))  # noqa: E731  (schedule.seed, STREAM_BATCH_RULE, cycle)
    emb = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float16)
    scores = np.linspace(1.0, 0.1, 20)
    first = select_kmeanspp(emb, scores, 6, rng())
    assert first.tolist() == select_kmeanspp(emb, scores, 6, rng()).tolist()
    assert len(set(first.tolist())) == 6 and first.dtype == np.int64


def test_coreset_starts_at_the_best_score_and_takes_the_farthest_image():
    x = np.array([[0.0], [0.1], [1.0], [5.0], [5.2]])
    scores = np.array([0.5, 0.9, 0.2, 0.1, 0.3])
    # Start at 1 (best score); d2 to 0.1 = [.01, 0, .81, 24.01, 26.01] -> 4; then min d2 =
    # [.01, 0, .81, .04, 0] -> 2.
    assert select_coreset(x, scores, 3).tolist() == [1, 4, 2]
    # Ties: equal scores start at the lower position, equal distances go to the lower position.
    assert select_coreset(np.array([[0.0], [1.0], [-1.0]]), np.array([1.0, 1.0, 0.5]), 3).tolist() == [0, 1, 2]
    assert select_coreset(x, scores, 0).tolist() == []


def test_rules_refuse_mismatched_or_non_finite_input():
    with pytest.raises(AlodError, match="shape"):
        select_coreset(np.zeros((3, 2)), np.zeros(4), 2)
    with pytest.raises(AlodError, match="cannot pick 5 of 4"):
        select_kmeanspp(EMB, SCORES, 5, FixedRng())
    with pytest.raises(AlodError, match="non-finite"):
        select_coreset(np.array([[np.nan, 0.0]]), np.ones(1), 1)


def test_box_budget_stops_at_the_image_that_reaches_it():
    order, predicted = [2, 0, 1, 3], np.array([5, 1, 3, 0])
    assert take_to_box_budget(order, predicted, 4).tolist() == [2, 0]  # 3, then 3 + 5 = 8 >= 4
    assert take_to_box_budget(order, predicted, 3).tolist() == [2]
    assert take_to_box_budget(order, predicted, 9).tolist() == [2, 0, 1]  # 3 + 5 + 1 = 9
    assert take_to_box_budget(order, predicted, 100).tolist() == [2, 0, 1, 3]  # never reached: all
    assert take_to_box_budget(order, np.zeros(4, int), 0).tolist() == [2]  # at least one image


def test_box_budget_takes_fractional_estimates():
    order, predicted = [2, 0, 1], np.array([2.5, 0.4, 1.25])
    assert take_to_box_budget(order, predicted, 3.7).tolist() == [2, 0]  # 1.25 + 2.5 = 3.75 >= 3.7
    assert take_to_box_budget(order, predicted, 3.8).tolist() == [2, 0, 1]  # 3.75 < 3.8: one more
    picked, info = choose(SelectOptions(budget="boxes", box_budget=3), names=["a", "b", "c"],
                          scores=np.array([0.1, 0.2, 0.3]), k=1, predicted=np.array([2.5, 0.4, 1.25]))
    assert picked.tolist() == [2, 1, 0] and info == {"predicted_boxes": 4.15}  # 1.25 + 0.4 < 3, + 2.5


def test_calibrated_counts_scale_score_sums_to_the_labeled_mean():
    est = calibrated_counts([0.5, 1.5, 0.0, 2.0], labeled_mean=6.0)
    assert est.tolist() == [3.0, 9.0, 0.0, 12.0]  # mean of the sums 1.0 -> mean of the estimates 6.0
    assert calibrated_counts([0.0, 0.0], labeled_mean=4.5).tolist() == [4.5, 4.5]  # nothing predicted
    assert calibrated_counts([], labeled_mean=3.0).tolist() == []
    with pytest.raises(AlodError, match="boxes per image"):
        calibrated_counts([1.0], labeled_mean=float("nan"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=30), st.floats(0, 40, allow_nan=False))
def test_calibrated_counts_keep_the_order_and_hit_the_labeled_mean(sums, mean):
    est = calibrated_counts(sums, mean)
    assert est.min() >= 0 and np.isclose(est.mean(), mean, rtol=1e-9, atol=1e-9)
    order = np.argsort(np.asarray(sums), kind="stable")
    assert np.all(np.diff(est[order]) >= -1e-9)  # more score mass never means fewer boxes


def test_choose_ranks_ties_by_name_and_applies_the_pool_and_the_budget():
    names = ["b", "a", "c", "d"]
    scores = np.array([1.0, 1.0, 0.5, 0.2])
    picked, info = choose(SelectOptions(), names=names, scores=scores, k=2)
    assert picked.tolist() == [1, 0] and info == {}  # a before b: equal scores, by name
    # coreset over the top batch_pool x k = 2 x 1 = 2 (a, b): starts at a (position 1).
    emb = np.array([[0.0], [0.0], [9.0], [1.0]])
    picked, _ = choose(SelectOptions(batch="coreset", batch_pool=2), names=names, scores=scores, k=1, emb=emb)
    assert picked.tolist() == [1]
    # Box budget: rank order a, b, c, d with predicted [2, 3, 4, 1] per position -> a (3), b (2) reach 5.
    opts = SelectOptions(budget="boxes", box_budget=5)
    picked, info = choose(opts, names=names, scores=scores, k=1, predicted=np.array([2, 3, 4, 1]))
    assert picked.tolist() == [1, 0] and info == {"predicted_boxes": 5}
    # coreset + boxes: the pool (a, b, c for batch_pool 3 x k 1) ordered a, c, b; then d; 3 + 4 >= 6.
    opts = SelectOptions(batch="coreset", batch_pool=3, budget="boxes", box_budget=6)
    picked, info = choose(opts, names=names, scores=scores, k=1, emb=emb, predicted=np.array([2, 3, 4, 1]))
    assert picked.tolist() == [1, 2] and info == {"predicted_boxes": 7}
    with pytest.raises(AlodError, match="embeddings"):
        choose(SelectOptions(batch="kmeanspp"), names=names, scores=scores, k=1)
    with pytest.raises(AlodError, match="predicted box count"):
        choose(SelectOptions(budget="boxes", box_budget=3), names=names, scores=scores, k=1)


def test_options_record_only_what_is_in_effect():
    assert SelectOptions().identity() == {} and not SelectOptions().active
    assert SelectOptions(batch_pool=9).identity() == {}  # the pool means nothing under topk
    assert SelectOptions(batch="kmeanspp").identity() == {"batch": "kmeanspp", "batch_pool": 3}
    opts = SelectOptions(budget="boxes", box_budget=40, class_weights="difficulty")
    assert opts.identity() == {"class_weights": "difficulty", "budget": "boxes", "box_budget": 40,
                               "box_threshold": 0.5}
    assert opts.rule() == "top to boxes" and SelectOptions(batch="coreset").rule() == "coreset"
    # box_estimate is recorded only when it is not the default, so earlier states keep resuming
    assert "box_estimate" not in opts.identity()
    calibrated = SelectOptions(budget="boxes", box_budget=40, box_estimate="calibrated")
    assert calibrated.identity()["box_estimate"] == "calibrated"
    assert "box_estimate" not in SelectOptions(box_estimate="calibrated").identity()  # no box budget: inert


def test_predicted_counts_from_the_shard_layout():
    box_scores = np.array([0.9, 0.2, 0.5, 0.7, 0.1], dtype=np.float16)
    assert predicted_counts(box_scores, [0, 2, 2, 5], 0.5).tolist() == [1, 0, 2]
