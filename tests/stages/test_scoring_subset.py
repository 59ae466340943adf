"""``score.subset``: scoring a seeded sample of each arrival batch (and of the adaptive selector's
candidates) instead of every image.

The tiny config (36 images, batches of 12, cycles of 4) with ``subset: 0.5`` scores 6 images of
batches 2 and 3 and none of batch 1. The scorer is a random-init detector saved as a checkpoint
(``box_score_thresh: 0`` so that it returns boxes and the scores differ): what is tested is which
images are scored and chosen, not how well.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest

from alod.config import load_config
from alod.schedule import load_schedule, scoring_sample
from alod.utils import AlodError
from alod_testing import run_layout, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """``(data_root, checkpoint, train index)``: the tiny data generated once and a random-init scorer."""
    import torch

    from alod.data.sources import ensure_dataset, load_split
    from alod.models import build_detector

    tmp = tmp_path_factory.mktemp("subset")
    cfg = load_config(write_tiny_config(tmp, data_root=tmp / "data", model={"box_score_thresh": 0.0}))
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", log=QUIET)
    torch.manual_seed(0)
    ckpt = tmp / "scorer.pt"
    torch.save({"model": build_detector(num_classes=train.num_classes, **asdict(cfg.model)).state_dict()}, ckpt)
    return tmp / "data", ckpt, train


def _config(tmp_path, scorer, *, name: str, subset: float = 0.5, **score):
    data_root, _, _ = scorer
    run_dir = tmp_path / name
    run_dir.mkdir()
    path = write_tiny_config(run_dir, data_root=data_root, model={"box_score_thresh": 0.0},
                             score={"subset": subset, **score})
    return load_config(path)


def _sample(cfg) -> np.ndarray:
    s = cfg.schedule
    return scoring_sample(36, batch_size=s.batch_size, query_size=s.query_size, num_batches=s.num_batches,
                          seed=s.seed, subset=cfg.score.subset)


@pytest.fixture
def inference_counter(monkeypatch):
    """The pool positions the detector runs on, in call order (wraps :func:`alod.cycle.scorer.iter_scored`,
    where the scorer and the scoring stage call it)."""
    import alod.cycle.scorer
    import alod.stages.scoring

    seen: list[int] = []
    real = alod.cycle.scorer.iter_scored

    def counting(model, dataset, positions, **kw):
        seen.extend(int(p) for p in positions)
        yield from real(model, dataset, positions, **kw)

    monkeypatch.setattr(alod.cycle.scorer, "iter_scored", counting)
    monkeypatch.setattr(alod.stages.scoring, "iter_scored", counting)
    return seen


@pytest.fixture(scope="module")
def reference(scorer, tmp_path_factory):
    """The ``subset: 0.5`` schedule of an uninterrupted single-process run: its bytes and its config."""
    from alod.stages.scoring import run_scoring

    cfg = _config(tmp_path_factory.mktemp("reference"), scorer, name="ref")
    out = run_scoring(cfg, ckpt=scorer[1], progress=False, log=QUIET)
    return out.read_bytes(), cfg


def test_subset_scores_only_the_sample_and_never_selects_an_unscored_image(scorer, reference, tmp_path,
                                                                          inference_counter):
    from alod.stages.scoring import run_scoring

    _, ckpt, train = scorer
    cfg = _config(tmp_path, scorer, name="a")
    lines: list[str] = []
    out = run_scoring(cfg, ckpt=ckpt, progress=False, log=lines.append)
    sample = _sample(cfg)
    names = [str(x) for x in train.names]
    sampled = {names[i] for i in sample}

    # Exactly the sample went through the detector: 6 of each of batches 2 and 3, nothing of batch 1.
    assert sorted(inference_counter) == sample.tolist() and len(sample) == 12
    s = json.loads(out.read_text())
    assert out.read_bytes() == reference[0]
    assert s["subset"] == 0.5
    assert {e["name"] for e in s["images"]} == sampled
    assert [e["rank"] for e in s["images"]] == list(range(12))
    assert s["unscored"] == sorted(set(names) - sampled)
    assert not set(s["batches"][0]) & sampled  # batch 1 is not scored
    score = {e["name"]: e["score"] for e in s["images"]}
    for n, (batch, cycle) in enumerate(zip(s["batches"], s["cycles"]), start=1):
        assert len(batch) == 12 and cycle["batch"] == n
        if n == 1:
            assert batch == sorted(batch) and cycle["rule"] == "random"
            assert len(cycle["images"]) == 4 and set(cycle["images"]) <= set(batch)
            continue
        scored = [x for x in batch if x in sampled]
        assert len(scored) == 6 and batch[:6] == scored and batch[6:] == sorted(batch[6:])
        top = sorted(scored, key=lambda x: (-score[x], x))[:4]
        assert cycle["rule"] == "top" and cycle["images"] == top and set(cycle["images"]) <= sampled

    # Images/s: logged and recorded in the shard set's manifest.
    (manifest,) = run_layout(cfg).scores_dir.glob("*/manifest.json")
    doc = json.loads(manifest.read_text())
    assert doc["subset"] == 0.5 and doc["num_scored"] == 12
    (timing,) = doc["timings"]
    assert timing["images"] == 12 and timing["shards"] == 2 and timing["processes"] == 1
    assert timing["seconds"] > 0 and timing["images_per_s"] == pytest.approx(12 / timing["seconds"], rel=1e-2)
    assert any("12 images scored in" in x and "images/s" in x for x in lines)
    assert any("score.subset=0.5: scoring a seeded sample of 12 of the 36 images" in x for x in lines)

    # A schedule edited to take an unscored image by score is refused by the cycles' selector.
    from alod.cycle.selection import PrecomputedSelector

    s["cycles"][1]["images"][0] = s["unscored"][0]
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(s))
    selector = PrecomputedSelector(ctx=SimpleNamespace(layout=run_layout(cfg)), train=train, schedule_file=bad)
    assert selector.select(1, None).rule == "random"
    with pytest.raises(AlodError, match="names images it lists as unscored"):
        selector.select(2, None)


def test_sampled_images_keep_the_scores_of_a_full_run(scorer, reference, tmp_path):
    from alod.stages.scoring import run_scoring

    full = json.loads(run_scoring(_config(tmp_path, scorer, name="full", subset=1.0), ckpt=scorer[1],
                                  progress=False, log=QUIET).read_text())
    assert "subset" not in full and "unscored" not in full and len(full["images"]) == 36
    part = json.loads(reference[0])
    full_score = {e["name"]: e["score"] for e in full["images"]}
    assert {e["name"]: e["score"] for e in part["images"]} == {e["name"]: full_score[e["name"]]
                                                                for e in part["images"]}
    assert [set(b) for b in part["batches"]] == [set(b) for b in full["batches"]]  # the same arrivals


def test_subset_schedule_is_the_same_for_reruns_shard_sizes_and_processes(scorer, reference, tmp_path,
                                                                        inference_counter):
    from alod.data.dataset import DetectionDataset
    from alod.models import load_checkpoint
    from alod.models import build_detector
    from alod.stages.scoring import run_scoring, score_pool

    _, ckpt, train = scorer
    cfg = _config(tmp_path, scorer, name="shards3", shard_size=3)
    out = run_scoring(cfg, ckpt=ckpt, progress=False, log=QUIET)
    assert out.read_bytes() == reference[0]
    assert len(inference_counter) == 12
    (manifest,) = run_layout(cfg).scores_dir.glob("*/manifest.json")
    assert json.loads(manifest.read_text())["timings"][0]["shards"] == 4

    # A rerun scores nothing and writes the same bytes; it records no empty timing.
    lines: list[str] = []
    assert run_scoring(cfg, ckpt=ckpt, progress=False, log=lines.append).read_bytes() == reference[0]
    assert len(inference_counter) == 12 and len(json.loads(manifest.read_text())["timings"]) == 1
    assert any("all 12 images were already scored" in x for x in lines)

    # Two processes (each scores the shards k % 2 == rank; rank 0 merges once both are done).
    model = build_detector(num_classes=train.num_classes, **asdict(cfg.model))
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    sample, ds = _sample(cfg), DetectionDataset(train)
    kw = dict(strategy="entropy", params={"aggregate": "sum"}, shard_dir=tmp_path / "two", shard_size=5,
              batch_size=4, progress=False, positions=sample)
    merged = {}

    def process(rank, barrier):
        acc = SimpleNamespace(num_processes=2, process_index=rank, device="cpu", wait_for_everyone=barrier)
        merged[rank] = score_pool(model, ds, accelerator=acc, **kw)

    # Rank 1 scores its shards; at the barrier rank 0 scores its own; then both merge all shards.
    process(1, lambda: process(0, lambda: None))
    assert sorted(p.name for p in (tmp_path / "two").glob("*.npz")) == [f"shard_0000{k}.npz" for k in range(3)]
    one = score_pool(model, ds, **{**kw, "shard_dir": tmp_path / "one", "shard_size": 4})
    # Other inference batches move the last bits only (the schedule rounds scores to 7 digits).
    np.testing.assert_array_equal(merged[0], merged[1])
    np.testing.assert_allclose(merged[0], one, rtol=1e-6)
    ref = {e["name"]: e["score"] for e in json.loads(reference[0])["images"]}
    np.testing.assert_allclose(merged[0], [ref[str(train.names[i])] for i in sample], rtol=1e-6)


def test_subset_scoring_resumes_after_a_kill_to_the_same_schedule(scorer, reference, tmp_path, monkeypatch,
                                                                  inference_counter):
    import alod.stages.scoring as scoring

    cfg = _config(tmp_path, scorer, name="killed", shard_size=5)
    real_write, written = scoring._write_shard, []

    def dying_write(path, **k):
        if written:
            raise KeyboardInterrupt("killed")
        written.append(path.name)
        real_write(path, **k)

    monkeypatch.setattr(scoring, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        scoring.run_scoring(cfg, ckpt=scorer[1], progress=False, log=QUIET)
    assert written == ["shard_00000.npz"] and not run_layout(cfg).schedule.exists()
    monkeypatch.setattr(scoring, "_write_shard", real_write)

    sample = _sample(cfg)
    inference_counter.clear()
    out = scoring.run_scoring(cfg, ckpt=scorer[1], progress=False, log=QUIET)
    assert inference_counter == sample[5:].tolist()  # only the shards the kill lost
    assert out.read_bytes() == reference[0]
    (manifest,) = run_layout(cfg).scores_dir.glob("*/manifest.json")
    assert [t["images"] for t in json.loads(manifest.read_text())["timings"]] == [7]


def test_random_strategy_with_a_subset_ranks_the_same_sample(scorer, reference, tmp_path):
    from alod.stages.scoring import run_scoring

    cfg = _config(tmp_path, scorer, name="random", strategy="random")
    s = load_schedule(run_scoring(cfg, progress=False, log=QUIET))
    ref = json.loads(reference[0])
    assert {e["name"] for e in s["images"]} == {e["name"] for e in ref["images"]}
    assert s["unscored"] == ref["unscored"] and s["checkpoint"] is None
    assert s["cycles"][0] == ref["cycles"][0]  # cycle 1 does not depend on scores under a subset


# ----------------------------------------------------------------------------------- adaptive
class _Pool:
    def __init__(self, names):
        self.names = list(names)


def _adaptive(scorer, tmp_path, monkeypatch, *, subset: float, name: str = "adaptive"):
    """An adaptive selector whose re-scoring is replaced by a fixed score per image (recorded)."""
    import alod.cycle.scorer as scorer_module
    import alod.cycle.selection as selection

    _, _, train = scorer
    cfg = _config(tmp_path, scorer, name=name, subset=subset)
    calls: list[list[int]] = []

    def fake_scores(ctx, index, positions, **kw):
        calls.append(list(positions))
        return np.array([(int(p) * 7919) % 101 for p in positions], dtype=np.float64)

    monkeypatch.setattr(scorer_module, "score_with_checkpoint", fake_scores)  # the selector imports it at call time
    ctx = SimpleNamespace(cfg=cfg, layout=run_layout(cfg), log=QUIET)
    return (lambda: selection.AdaptiveSelector(ctx=ctx, train=train)), calls


def test_adaptive_subset_scores_a_seeded_sample_and_resumes_to_the_same_choice(scorer, reference, tmp_path,
                                                                             monkeypatch):
    _, _, train = scorer
    make, calls = _adaptive(scorer, tmp_path, monkeypatch, subset=0.5)
    selector = make()
    assert selector.identity()["subset"] == 0.5
    first = selector.select(1, _Pool([]))
    # Cycle 1 is the precomputed schedule's cycle 1 under the same subset (both draw from batch 1 by name).
    assert first.images == json.loads(reference[0])["cycles"][0]["images"] and not calls

    pool = _Pool(first.images)
    second = selector.select(2, pool)
    (scored,) = calls
    arrived = sorted(int(i) for b in selector.batches[:2] for i in b if str(train.names[i]) not in first.images)
    assert len(arrived) == 20 and len(scored) == 10 and set(scored) <= set(arrived)  # ceil(0.5 * 20)
    fake = {p: (p * 7919) % 101 for p in scored}
    top = sorted(scored, key=lambda p: (-fake[p], str(train.names[p])))[:4]
    assert second.images == [str(train.names[p]) for p in top] and second.rule == "adaptive top"

    # After a restart (a new selector, the pool restored from state.json) cycle 2 scores the same sample.
    again = make().select(2, _Pool(first.images))
    assert calls[1] == scored and again == second
    # Cycle 3 draws its own sample from what is left: 36 - 8 = 28 candidates, 14 scored.
    third = selector.select(3, _Pool(first.images + second.images))
    assert len(calls[2]) == 14 and set(third.images).isdisjoint(first.images + second.images)


def test_adaptive_without_subset_scores_every_candidate_and_keeps_its_identity(scorer, tmp_path, monkeypatch):
    make, calls = _adaptive(scorer, tmp_path, monkeypatch, subset=1.0, name="full")
    selector = make()
    assert "subset" not in selector.identity()  # states written before score.subset resume unchanged
    first = selector.select(1, _Pool([]))
    selector.select(2, _Pool(first.images))
    assert len(calls[0]) == 20


def test_bf16_and_channels_last_score_into_their_own_shards(scorer, tmp_path):
    """``score.amp`` (where it turns autocast on) and ``model.channels_last`` change the scores' last
    bits, so they are part of the shard key: a rerun with other numerics scores afresh instead of
    resuming from shards of the other kind, and the fp32 key is the one it always was."""
    from alod.engine import make_accelerator
    from alod.stages.scoring import _shard_key, run_scoring

    data_root, ckpt, train = scorer
    path = write_tiny_config(tmp_path, data_root=data_root, model={"box_score_thresh": 0.0})
    acc = make_accelerator(amp=False)  # the autocast under test is torch's own, set by score.amp
    manifests = {}
    for name, overrides in {"fp32": [], "bf16": ["score.amp=all"],
                            "channels_last": ["model.channels_last=true"],
                            "roi_sampling_1": ["model.roi_sampling_ratio=1"]}.items():
        cfg = load_config(path, overrides)
        run_scoring(cfg, ckpt=ckpt, accelerator=acc, progress=False, log=QUIET)
        scores = run_layout(cfg).root / "scores"
        new = {d.name for d in scores.iterdir() if d.is_dir()} - {m["key"] for m in manifests.values()}
        assert len(new) == 1, (name, new)  # scored afresh into a shard folder of its own
        key = new.pop()
        manifests[name] = {"key": key, **json.loads((scores / key / "manifest.json").read_text())}
    assert "numerics" not in manifests["fp32"]
    assert manifests["bf16"]["numerics"] == {"autocast": "bf16"}
    assert manifests["channels_last"]["numerics"] == {"channels_last": True}
    # Inference settings of the model are in the key too (non-default ones only), numerics are not.
    assert manifests["fp32"]["model"]["box_score_thresh"] == 0.0
    assert "roi_sampling_ratio" not in manifests["fp32"]["model"]
    assert manifests["roi_sampling_1"]["model"] == {**manifests["fp32"]["model"], "roi_sampling_ratio": 1}
    assert "channels_last" not in manifests["channels_last"]["model"]
    m = manifests["fp32"]
    assert m["key"] == _shard_key(ckpt_sha=m["checkpoint_sha256"], strategy=m["strategy"], params=m["params"],
                                  fingerprint=m["dataset"], shard_size=m["shard_size"], model=m["model"])


def test_scoring_model_settings_are_the_non_default_inference_settings():
    """What the shard key takes from ``model:``: settings that change a checkpoint's predictions and
    differ from the defaults; not how the weights were initialised or how training samples."""
    from alod.stages.scoring import scoring_model_settings

    assert scoring_model_settings(load_config(None)) == {}
    cfg = load_config(None, ["model.box_score_thresh=0.3", "model.max_size=640", "model.weights_path=/x.pt",
                             "model.box_batch_size_per_image=32", "model.rpn_pre_nms_top_n_test=100",
                             "model.anchor_sizes=[8,16,32,64]"])
    assert scoring_model_settings(cfg) == {"anchor_sizes": [8, 16, 32, 64], "box_score_thresh": 0.3,
                                           "max_size": 640, "rpn_pre_nms_top_n_test": 100}
