"""Strategies on hand-made class distributions: exact rankings."""
import numpy as np
import pytest

from alod.strategies import (
    INFERENCE,
    STRATEGIES,
    box_entropy,
    box_mutual_information,
    check_params,
    get_strategy,
    score_images,
)
from alod.utils import AlodError


def det(probs, scores=None):
    probs = np.asarray(probs, dtype=np.float32).reshape(-1, 3)
    if scores is None:
        scores = probs[:, 1:].max(axis=1) if len(probs) else np.zeros(0)
    return {"boxes": np.zeros((len(probs), 4), np.float32), "labels": np.ones(len(probs), np.int64),
            "scores": np.asarray(scores, np.float32), "probs": probs}


# Per-box distributions over (background, class 1, class 2).
CERTAIN = [0.0, 1.0, 0.0]        # entropy 0
SPLIT = [0.0, 0.5, 0.5]          # ln 2 = 0.693
UNIFORM = [1 / 3, 1 / 3, 1 / 3]  # ln 3 = 1.099
SKEWED = [0.1, 0.8, 0.1]         # 0.639

DETS = [
    det([CERTAIN, CERTAIN, CERTAIN]),  # 0: many confident boxes, no uncertainty
    det([UNIFORM]),                    # 1: one maximally uncertain box
    det([SPLIT, SPLIT]),               # 2: two half-uncertain boxes
    det([]),                           # 3: nothing detected
    det([SKEWED, CERTAIN]),            # 4
]


def agreeing_passes(d, passes):
    """``d`` with ``mc_probs``: ``passes`` identical copies of each box's distribution."""
    return {**d, "mc_probs": np.repeat(d["probs"][:, None, :], passes, axis=1)}


def ranking(scores):
    return list(np.lexsort((np.arange(len(scores)), -np.asarray(scores))))


def test_box_entropy_values():
    np.testing.assert_allclose(box_entropy(np.array([CERTAIN, SPLIT, UNIFORM])), [0.0, np.log(2), np.log(3)], rtol=1e-6)


@pytest.mark.parametrize(
    "aggregate, expected",
    [
        ("sum", [2, 1, 4, 0, 3]),   # 2 ln2=1.386 > ln3=1.099 > 0.639 > 0 = 0 (ties by position)
        ("mean", [1, 2, 4, 0, 3]),  # 1.099 > 0.693 > 0.320 > 0 = 0
        ("max", [1, 2, 4, 0, 3]),   # 1.099 > 0.693 > 0.639 > 0 = 0
    ],
)
def test_entropy_rankings(aggregate, expected):
    scores = score_images(DETS, strategy="entropy", params={"aggregate": aggregate})
    assert ranking(scores) == expected


def test_entropy_exact_sum():
    scores = score_images(DETS, strategy="entropy", params={"aggregate": "sum"})
    np.testing.assert_allclose(scores[[0, 1, 2, 3]], [0.0, np.log(3), 2 * np.log(2), 0.0], rtol=1e-6)


def test_box_count_ranking():
    scores = score_images(DETS, strategy="box_count", params={"score_threshold": 0.5})
    # CERTAIN and SKEWED boxes have max class prob >= 0.5, SPLIT 0.5 too, UNIFORM 0.333 not.
    np.testing.assert_array_equal(scores, [3, 0, 2, 0, 2])
    assert ranking(scores) == [0, 2, 4, 1, 3]


def test_least_confidence_and_margin():
    lc = score_images(DETS, strategy="least_confidence", params={"aggregate": "max"})
    np.testing.assert_allclose(lc, [0.0, 2 / 3, 0.5, 0.0, 0.2], rtol=1e-5)
    mg = score_images(DETS, strategy="margin", params={"aggregate": "max"})
    np.testing.assert_allclose(mg, [0.0, 1.0, 1.0, 0.0, 0.3], rtol=1e-5)


def test_min_score_filters_boxes():
    d = [det([UNIFORM, CERTAIN], scores=[0.2, 0.99])]
    assert score_images(d, strategy="entropy", params={"min_score": 0.5})[0] == pytest.approx(0.0)
    assert score_images(d, strategy="entropy", params={"min_score": 0.0})[0] == pytest.approx(np.log(3), rel=1e-6)


def test_random_is_seeded():
    a = score_images(DETS, strategy="random", params={"seed": 3})
    b = score_images(DETS, strategy="random", params={"seed": 3})
    c = score_images(DETS, strategy="random", params={"seed": 4})
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_errors_are_clear():
    with pytest.raises(AlodError, match="unknown strategy"):
        score_images(DETS, strategy="nope")
    with pytest.raises(AlodError, match=r"score.params.aggregate: 'median' is not one of sum, mean, max"):
        score_images(DETS, strategy="entropy", params={"aggregate": "median"})
    with pytest.raises(AlodError, match=r"strategy 'box_count' has no parameter 'treshold'; its parameters: score_threshold"):
        score_images(DETS, strategy="box_count", params={"treshold": 1})
    with pytest.raises(AlodError, match="probs"):
        score_images([{"scores": np.ones(1)}], strategy="entropy")


def test_registry_has_required_strategies():
    assert {"box_count", "entropy"} <= set(STRATEGIES)


def test_every_strategy_declares_its_parameters_and_inference():
    for name, spec in STRATEGIES.items():
        assert spec.inference in INFERENCE, name
        assert spec.doc, f"{name} documents its formula"
        # Every strategy runs with its own defaults alone.
        assert check_params(name, None) == dict(spec.params)
        dets = DETS if spec.inference != "stochastic" else [agreeing_passes(d, spec.params["passes"]) for d in DETS]
        scores = spec.fn(dets, **spec.params)
        assert scores.shape == (len(DETS),) and scores.dtype == np.float64
    assert STRATEGIES["random"].inference == "none"
    assert STRATEGIES["entropy"].params == {"aggregate": "sum", "min_score": 0.0}
    assert STRATEGIES["box_count"].params == {"score_threshold": 0.5}


def test_check_params_types_and_defaults():
    assert check_params("entropy", {"aggregate": "max"}) == {"aggregate": "max", "min_score": 0.0}
    assert check_params("entropy", {"min_score": 0}) == {"aggregate": "sum", "min_score": 0}  # int for a float
    with pytest.raises(AlodError, match=r"score.params.min_score: expected float \(like the default 0.0\), got .high."):
        check_params("entropy", {"min_score": "high"})
    with pytest.raises(AlodError, match=r"expected int"):
        check_params("random", {"seed": 1.5})
    with pytest.raises(AlodError, match=r"expected int"):
        check_params("random", {"seed": True})
    with pytest.raises(AlodError, match="unknown strategy 'nope'; choose one of .*box_count.*entropy"):
        check_params("nope", {})


def test_register_strategy_reads_parameters_from_the_signature(monkeypatch):
    monkeypatch.setattr("alod.strategies.STRATEGIES", STRATEGIES.copy())
    from alod import strategies

    @strategies.register_strategy("toy", inference="none", choices={"mode": ("a", "b")})
    def toy(dets, *, k: int = 2, mode: str = "a"):
        """``k`` for every image."""
        return np.full(len(dets), float(k))

    spec = strategies.STRATEGIES["toy"]
    assert spec.params == {"k": 2, "mode": "a"} and spec.inference == "none"
    assert score_images(DETS, strategy="toy", params={"k": 5}).tolist() == [5.0] * len(DETS)
    with pytest.raises(AlodError, match="is not one of a, b"):
        check_params("toy", {"mode": "c"})
    with pytest.raises(TypeError, match="needs a default"):
        strategies.register_strategy("bad")(lambda dets, *, k: dets)
    with pytest.raises(ValueError, match="inference"):
        strategies.register_strategy("bad", inference="twice")


# ------------------------------------------------------------------------ mc_dropout (BALD)
# Fixed "dropout masks" = fixed arrays: each box's T = 4 passes over (background, class 1, class 2).
AGREE_SPLIT = [[0.0, 0.5, 0.5]] * 4                                # every pass split: BALD 0
DISAGREE = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] * 2                  # same mean, passes disagree: ln 2
ALL_CERTAIN = [[0.0, 1.0, 0.0]] * 4                                # 0
PARTIAL = [[0.0, 1.0, 0.0]] * 3 + [[0.0, 0.0, 1.0]]                # H([.75, .25]) = 0.562
BG_FLIP = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] * 2                   # background counts: ln 2
MIXED = [[0.0, 0.9, 0.1], [0.0, 0.1, 0.9]] * 2                     # ln 2 - H([.9, .1]) = 0.368
H_PARTIAL = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
BALD_MIXED = np.log(2) - -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))


def mc_det(boxes, scores=None):
    mc = np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 3)
    d = det(mc.mean(axis=1), scores)
    d["mc_probs"] = mc
    return d


MC_DETS = [
    mc_det([AGREE_SPLIT]),            # 0: 0
    mc_det([DISAGREE]),               # 1: ln 2 = 0.693 (same mean distribution as image 0)
    mc_det([PARTIAL, PARTIAL]),       # 2: 0.562 each
    mc_det([]),                       # 3: nothing detected
    mc_det([ALL_CERTAIN, BG_FLIP]),   # 4: 0 and ln 2
    mc_det([MIXED]),                  # 5: 0.368
]


def test_box_mutual_information_values():
    mc = np.array([AGREE_SPLIT, DISAGREE, ALL_CERTAIN, PARTIAL, BG_FLIP, MIXED])
    np.testing.assert_allclose(box_mutual_information(mc), [0.0, np.log(2), 0.0, H_PARTIAL, np.log(2), BALD_MIXED],
                               rtol=1e-6, atol=1e-12)
    assert box_mutual_information(np.zeros((0, 4, 3))).shape == (0,)


def test_passes_that_disagree_rank_above_passes_that_agree_with_the_same_mean():
    dets = [MC_DETS[0], MC_DETS[1]]
    np.testing.assert_array_equal(dets[0]["probs"], dets[1]["probs"])
    entropy = score_images(dets, strategy="entropy")
    assert entropy[0] == entropy[1]  # the mean distributions cannot tell them apart
    bald = score_images(dets, strategy="mc_dropout", params={"passes": 4})
    assert ranking(bald) == [1, 0]
    np.testing.assert_allclose(bald, [0.0, np.log(2)], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "aggregate, expected",
    [
        ("sum", [2, 1, 4, 5, 0, 3]),   # 1.125 > 0.693 = 0.693 > 0.368 > 0 = 0 (ties by position)
        ("mean", [1, 2, 5, 4, 0, 3]),  # 0.693 > 0.562 > 0.368 > 0.347 > 0 = 0
        ("max", [1, 4, 2, 5, 0, 3]),   # 0.693 = 0.693 > 0.562 > 0.368 > 0 = 0
    ],
)
def test_mc_dropout_rankings(aggregate, expected):
    scores = score_images(MC_DETS, strategy="mc_dropout", params={"passes": 4, "aggregate": aggregate})
    assert ranking(scores) == expected


def test_mc_dropout_exact_sum_and_min_score():
    scores = score_images(MC_DETS, strategy="mc_dropout", params={"passes": 4})
    np.testing.assert_allclose(scores, [0.0, np.log(2), 2 * H_PARTIAL, 0.0, np.log(2), BALD_MIXED],
                               rtol=1e-6, atol=1e-12)
    d = [mc_det([DISAGREE, ALL_CERTAIN], scores=[0.2, 0.99])]
    assert score_images(d, strategy="mc_dropout", params={"passes": 4, "min_score": 0.5})[0] == 0.0
    assert score_images(d, strategy="mc_dropout", params={"passes": 4})[0] == pytest.approx(np.log(2), rel=1e-6)


def test_mc_dropout_declares_its_sampling_and_refuses_bad_input():
    spec = get_strategy("mc_dropout")
    assert spec.inference == "stochastic"
    assert spec.params == {"passes": 10, "dropout": 0.5, "seed": 0, "aggregate": "sum", "min_score": 0.0}
    assert spec.sampling({"passes": 4}) == {"passes": 4, "dropout": 0.5, "seed": 0}
    assert get_strategy("entropy").sampling({}) is None
    with pytest.raises(AlodError, match="no 'mc_probs'"):
        score_images(DETS, strategy="mc_dropout")
    with pytest.raises(AlodError, match=r"image 0: mc_probs has shape \(1, 4, 3\).*passes=10"):
        score_images(MC_DETS, strategy="mc_dropout")  # 4 passes in the arrays, the default says 10
    with pytest.raises(AlodError, match=r"score.params.passes: must be an integer >= 1, got 0"):
        check_params("mc_dropout", {"passes": 0})
    with pytest.raises(AlodError, match=r"score.params.dropout: must be in \[0, 1\), got 1"):
        check_params("mc_dropout", {"dropout": 1})
    with pytest.raises(AlodError, match=r"score.params.seed: must be an integer >= 0"):
        check_params("mc_dropout", {"seed": -1})


def test_a_stochastic_strategy_must_declare_its_sampling(monkeypatch):
    monkeypatch.setattr("alod.strategies.STRATEGIES", STRATEGIES.copy())
    from alod import strategies

    with pytest.raises(TypeError, match="missing dropout, seed"):
        strategies.register_strategy("bad", inference="stochastic")(lambda dets, *, passes=3: dets)
