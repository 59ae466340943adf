"""Annotator actions and model agreement on hand-made boxes, with exact expected counts."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alod.cycle.actions import (
    EDIT_KEYS,
    add_actions,
    add_edits,
    annotator_actions,
    edit_counts,
    iou_matrix,
    mean_agreement,
    prediction_agreement,
    stop_cycle,
)

GT = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 0, 70, 10]], dtype=float)
GL = np.array([1, 2, 1, 3])


def _act(pred_boxes, pred_labels, pred_scores, ignore=None, **kw):
    ignore = np.zeros(len(GT), dtype=bool) if ignore is None else np.asarray(ignore)
    return annotator_actions(GT, GL, ignore, np.asarray(pred_boxes, dtype=float).reshape(-1, 4),
                             pred_labels, pred_scores, **kw)


def test_no_preannotation_means_drawing_every_box():
    out = _act([], [], [])
    assert out == {"boxes": 4, "accepted": 0, "kept": 0, "fix": 0, "delete": 0, "draw": 4, "actions": 4}


def test_each_kind_of_action():
    preds = [[0, 0, 10, 10],      # exact, right class: kept
             [20, 20, 30, 30],    # exact, wrong class: fix
             [40, 40, 50, 47],    # IoU 0.7 right class: kept (tight_iou is inclusive)
             [80, 80, 90, 90],    # nothing there: delete
             [60, 0, 68, 10],     # IoU 0.8 ... but low score: not accepted, so GT 4 is drawn
             [0, 0, 10, 10]]      # duplicate of the first: its GT is taken, so delete
    out = _act(preds, [1, 1, 1, 2, 3, 1], [0.9, 0.8, 0.7, 0.6, 0.3, 0.55])
    assert out == {"boxes": 4, "accepted": 5, "kept": 2, "fix": 1, "delete": 2, "draw": 1, "actions": 4}


def test_loose_box_needs_a_fix_and_ignored_regions_cost_nothing():
    out = _act([[0, 0, 10, 6], [60, 0, 70, 10]], [1, 3], [0.9, 0.9], ignore=[False, False, False, True])
    # box 1: IoU 0.6 -> fix; box 2 lies on the ignored 4th region -> free; GT 2 and 3 drawn
    assert out == {"boxes": 3, "accepted": 1, "kept": 0, "fix": 1, "delete": 0, "draw": 2, "actions": 3}


def test_add_actions_sums():
    a = _act([], [], [])
    assert add_actions([a, a])["actions"] == 8 and add_actions([])["boxes"] == 0


def test_each_kind_of_edit():
    pre = [[0, 0, 10, 10],      # left as it was: kept
           [20, 20, 30, 30],    # relabeled 2 -> 1: changed
           [40, 40, 50, 50],    # moved to IoU 0.6 (>= 0.5, < 0.7): changed
           [60, 0, 70, 10],     # removed: deleted
           [80, 80, 90, 90]]    # moved far (IoU 0): deleted, and its new place is added
    final = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 44, 50, 50], [100, 100, 110, 110], [5, 60, 15, 70]]
    out = edit_counts(pre, [1, 2, 1, 3, 1], final, [1, 1, 1, 1, 2])
    assert out == {"added": 2, "deleted": 2, "changed": 2, "kept": 1}
    assert tuple(out) == EDIT_KEYS


def test_edits_with_nothing_on_either_side():
    assert edit_counts(np.zeros((0, 4)), [], [[0, 0, 5, 5]], [1]) == {"added": 1, "deleted": 0, "changed": 0, "kept": 0}
    assert edit_counts([[0, 0, 5, 5]], [1], np.zeros((0, 4)), []) == {"added": 0, "deleted": 1, "changed": 0, "kept": 0}
    assert edit_counts([], [], [], []) == dict.fromkeys(EDIT_KEYS, 0)
    assert add_edits([{"added": 1, "deleted": 2, "changed": 3, "kept": 4}] * 2) == {
        "added": 2, "deleted": 4, "changed": 6, "kept": 8}


def test_edits_match_by_score_when_scores_are_given():
    # Two pre-annotations compete for one final box; the higher-scored one takes it (kept), the
    # other is deleted. Without scores the first in order takes it.
    pre, final = [[0, 0, 10, 9], [0, 0, 10, 10]], [[0, 0, 10, 10]]
    in_order = edit_counts(pre, [1, 1], final, [1])
    by_score = edit_counts(pre, [1, 2], final, [1], pre_scores=[0.6, 0.9])
    assert in_order == {"added": 0, "deleted": 1, "changed": 0, "kept": 1}   # IoU 0.9: kept
    assert by_score == {"added": 0, "deleted": 1, "changed": 1, "kept": 0}   # class 2 took it: changed


def test_iou_matrix_known_values():
    m = iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    assert np.allclose(m, [[1.0, 1 / 3, 0.0, 0.0]])


def test_agreement_f1():
    a = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 2], "scores": [0.9, 0.9]}
    b = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], "labels": [1, 1, 1], "scores": [0.9, 0.9, 0.9]}
    assert prediction_agreement(a, b) == 2 * 1 / 5  # one match (class 2 vs 1 does not count)
    empty = {"boxes": np.zeros((0, 4)), "labels": [], "scores": []}
    assert prediction_agreement(empty, empty) == 1.0 and prediction_agreement(a, empty) == 0.0
    assert mean_agreement([a, empty], [a, empty]) == 1.0


def test_stop_cycle():
    assert stop_cycle([None, 0.5, 0.92, 0.95]) == 3
    assert stop_cycle([None, 0.5]) is None
    assert stop_cycle([None, 0.5, 0.8], threshold=0.8) == 3


boxes = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 30), st.integers(1, 30)),
                 max_size=6).map(lambda xs: np.array([[x, y, x + w, y + h] for x, y, w, h in xs], dtype=float).reshape(-1, 4))


@settings(max_examples=60, deadline=None)
@given(gt=boxes, pred=boxes, seed=st.integers(0, 10))
def test_action_accounting_holds(gt, pred, seed):
    rng = np.random.default_rng(seed)
    gl, pl = rng.integers(1, 3, len(gt)), rng.integers(1, 3, len(pred))
    ps = rng.random(len(pred))
    out = annotator_actions(gt, gl, np.zeros(len(gt), bool), pred, pl, ps)
    assert out["kept"] + out["fix"] + out["draw"] == out["boxes"]       # every GT box is kept, fixed or drawn
    assert out["kept"] + out["fix"] + out["delete"] == out["accepted"]  # every accepted box is kept, fixed or deleted
    # Perfect pre-annotations cost nothing; none cost one action per box.
    assert annotator_actions(gt, gl, np.zeros(len(gt), bool), gt, gl, np.ones(len(gt)))["actions"] == 0
    assert prediction_agreement({"boxes": pred, "labels": pl, "scores": ps},
                                {"boxes": pred, "labels": pl, "scores": ps}) == 1.0


@settings(max_examples=60, deadline=None)
@given(pre=boxes, final=boxes, seed=st.integers(0, 10))
def test_edit_accounting_holds(pre, final, seed):
    rng = np.random.default_rng(seed)
    pl, fl = rng.integers(1, 3, len(pre)), rng.integers(1, 3, len(final))
    out = edit_counts(pre, pl, final, fl)
    assert out["kept"] + out["changed"] + out["deleted"] == len(pre)   # every exported box kept, changed or deleted
    assert out["kept"] + out["changed"] + out["added"] == len(final)   # every imported box kept, changed or added
    assert edit_counts(pre, pl, pre, pl) == {"added": 0, "deleted": 0, "changed": 0, "kept": len(pre)}
