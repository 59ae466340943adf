"""Schedule rules and byte-identical determinism."""
import json

import numpy as np
import pytest

from alod.schedule import (build_schedule, check_schedule_matches, dumps_schedule, load_schedule, rank_images,
                           save_schedule)
from alod.utils import AlodError

FP = {"num_images": 23, "names_sha256": "abc"}


def make(seed=0, scores=None, **kw):
    names = [f"img_{i:03d}.jpg" for i in range(23)]
    if scores is None:
        scores = np.random.default_rng(7).random(23)
    args = dict(names=names, scores=scores, batch_size=10, query_size=4, seed=seed, dataset=FP,
                checkpoint={"path": "ck.pt", "sha256": "00"}, strategy={"name": "entropy", "params": {"aggregate": "sum"}})
    args.update(kw)
    return build_schedule(**args), names, np.asarray(scores)


def test_rules():
    s, names, scores = make()
    # 23 images in batches of 10: 10, 10, 3 -> the last holds fewer than query_size=4 and is dropped.
    assert [len(b) for b in s["batches"]] == [10, 10]
    rank = {e["name"]: e["rank"] for e in s["images"]}
    for b in s["batches"]:
        assert [rank[n] for n in b] == sorted(rank[n] for n in b)  # listed by rank
    assert len({n for b in s["batches"] for n in b}) == 20
    c1, c2 = s["cycles"]
    assert c1["rule"] == "random" and set(c1["images"]) <= set(s["batches"][0]) and len(c1["images"]) == 4
    assert c2["rule"] == "top" and c2["images"] == s["batches"][1][:4]
    # cycle 2's images are the highest-scoring of batch 2
    b2 = s["batches"][1]
    top = sorted(b2, key=lambda n: -scores[names.index(n)])[:4]
    assert set(c2["images"]) == set(top)
    # every image has score and rank; rank 0 is the best score
    assert s["images"][0]["name"] == names[int(np.argmax(scores))]
    assert s["format"] == "alod.schedule/1" and s["dataset"] == FP


def test_last_partial_batch_kept_when_it_holds_a_query():
    s, _, _ = make(batch_size=10, query_size=3)
    assert [len(b) for b in s["batches"]] == [10, 10, 3]
    assert len(s["cycles"]) == 3


def test_num_batches_cap_and_error():
    s, _, _ = make(num_batches=1)
    assert len(s["batches"]) == 1
    with pytest.raises(AlodError, match="num_batches"):
        make(num_batches=5)


def test_byte_identical(tmp_path):
    a, _, _ = make(seed=5)
    b, _, _ = make(seed=5)
    save_schedule(a, tmp_path / "a.json")
    save_schedule(b, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    c, _, _ = make(seed=6)
    assert dumps_schedule(c) != dumps_schedule(a)


def test_last_bit_noise_does_not_change_bytes():
    scores = np.random.default_rng(1).random(23)
    a, _, _ = make(scores=scores)
    b, _, _ = make(scores=scores * (1 + 1e-12))
    assert dumps_schedule(a) == dumps_schedule(b)


def test_ties_broken_by_name():
    ranks = rank_images(["b", "a", "c"], np.array([1.0, 1.0, 2.0]))
    assert ranks.tolist() == [2, 1, 0]


def test_load_errors(tmp_path):
    with pytest.raises(AlodError, match="make_batches.py"):
        load_schedule(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AlodError, match="not valid JSON"):
        load_schedule(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "x"}))
    with pytest.raises(AlodError, match="alod.schedule/1"):
        load_schedule(other)


def test_fingerprint_mismatch_says_which():
    s, _, _ = make()
    with pytest.raises(AlodError, match="made for 23 training images but the dataset has 30"):
        check_schedule_matches(s, {"num_images": 30, "names_sha256": "abc"})
    with pytest.raises(AlodError, match="other training images"):
        check_schedule_matches(s, {"num_images": 23, "names_sha256": "zzz"})
    check_schedule_matches(s, FP)


# ------------------------------------------------------------------------------- score.subset
def test_subset_one_is_the_schedule_of_before():
    a, _, _ = make(seed=3)
    b, _, _ = make(seed=3, subset=1.0)
    assert dumps_schedule(a) == dumps_schedule(b) and "subset" not in b and "unscored" not in b


def test_subset_ranks_only_the_sample_and_never_takes_an_unscored_image():
    from alod.schedule import scoring_sample

    names = [f"img_{i:03d}.jpg" for i in range(23)]
    sample = scoring_sample(23, batch_size=10, query_size=4, num_batches=None, seed=0, subset=0.5)
    # batches of 10, 10 (the 3 left over make no batch): batch 1 unscored, 5 of batch 2 scored
    assert len(sample) == 5
    scores = np.full(23, np.nan)  # only the sample's scores are read
    scores[sample] = np.random.default_rng(7).random(5)
    s, _, _ = make(scores=scores, subset=0.5)
    scored = {names[i] for i in sample}
    assert s["subset"] == 0.5 and {e["name"] for e in s["images"]} == scored
    assert [e["rank"] for e in s["images"]] == list(range(5))
    assert s["unscored"] == sorted(set(names) - scored) and len(s["unscored"]) == 18
    b1, b2 = s["batches"]
    assert b1 == sorted(b1) and not set(b1) & scored
    rank = {e["name"]: e["rank"] for e in s["images"]}
    assert [rank[n] for n in b2[:5]] == sorted(rank.values()) and b2[5:] == sorted(b2[5:])
    c1, c2 = s["cycles"]
    assert set(c1["images"]) <= set(b1) and c2["images"] == b2[:4] and set(c2["images"]) <= scored
    # Deterministic, and another seed draws other batches and another sample.
    assert dumps_schedule(make(scores=scores, subset=0.5)[0]) == dumps_schedule(s)
    other = scoring_sample(23, batch_size=10, query_size=4, num_batches=None, seed=1, subset=0.5)
    assert other.tolist() != sample.tolist()


def test_subset_needs_finite_scores_for_the_sample_only():
    from alod.schedule import scoring_sample

    sample = scoring_sample(23, batch_size=10, query_size=4, num_batches=None, seed=0, subset=0.5)
    scores = np.zeros(23)
    scores[sample[0]] = np.nan
    with pytest.raises(AlodError, match="non-finite scores"):
        make(scores=scores, subset=0.5)
    with pytest.raises(AlodError, match=r"score.subset must be in \(0, 1\]"):
        make(subset=0.0)


def test_sample_sizes():
    from alod.schedule import draw_sample, sample_size, scoring_sample, subset_count

    assert subset_count(0.3, 10) == 3  # 0.3 * 10 is 3.0000000000000004 in floats
    assert subset_count(0.5, 5) == 3 and subset_count(1.0, 7) == 7
    assert sample_size(5, subset=0.5, query_size=4) == 4  # at least one cycle's images
    assert sample_size(3, subset=0.5, query_size=4) == 3  # never more than there are
    assert sample_size(100, subset=0.25, query_size=4) == 25
    assert scoring_sample(23, batch_size=10, query_size=4, num_batches=None, seed=0, subset=1.0) is None
    # The sample of a set does not depend on the order the candidates come in.
    a = draw_sample([5, 3, 9, 1, 7, 2], subset=0.5, query_size=2, seed=4, stream=2, n=3)
    b = draw_sample([1, 2, 3, 5, 7, 9], subset=0.5, query_size=2, seed=4, stream=2, n=3)
    assert a.tolist() == b.tolist() and len(a) == 3 and a.tolist() == sorted(a.tolist())
