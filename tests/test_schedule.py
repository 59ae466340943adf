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
