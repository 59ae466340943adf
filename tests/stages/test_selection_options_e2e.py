"""The selection options with a real detector on the tiny dataset (36 images, batches of 12, cycles of 4).

The scorer is a random-init detector saved as a checkpoint (``box_score_thresh: 0`` so that it
returns boxes): what is tested is where the embeddings, weights and counts come from and where they
go (shards, schedule, state, ``selection.json``), not how good the picks are.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest

from alod.config import load_config
from alod.cycle.batch_rules import SelectOptions, choose
from alod.layout import RunLayout
from alod_testing import run_layout, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = lambda *_: None  # noqa: E731
OPTIONS = {"batch": "coreset", "batch_pool": 2, "class_weights": "difficulty"}
BUDGET = {"budget": "boxes", "box_budget": 40, "box_threshold": 0.05}


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """``(data_root, checkpoint, train index)``; the checkpoint has a validation metrics.json beside it."""
    import torch

    from alod.data.sources import ensure_dataset, load_split
    from alod.models import build_detector

    tmp = tmp_path_factory.mktemp("options")
    cfg = load_config(write_tiny_config(tmp, data_root=tmp / "data", model={"box_score_thresh": 0.0}))
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", log=QUIET)
    torch.manual_seed(0)
    ckpt = tmp / "pretrain" / "scorer.pt"
    ckpt.parent.mkdir()
    torch.save({"model": build_detector(num_classes=train.num_classes, **asdict(cfg.model)).state_dict()}, ckpt)
    metrics = {f"AP50/{c}": ap for c, ap in zip(train.classes, [0.9, 0.2, float("nan"), 0.5, 0.7, 0.1])}
    RunLayout.metrics_beside(ckpt).write_text(json.dumps(metrics))
    return tmp / "data", ckpt, train


def _config(tmp_path, scorer, *, name: str, score=None, schedule=None, sets=()):
    run_dir = tmp_path / name
    run_dir.mkdir()
    path = write_tiny_config(run_dir, data_root=scorer[0], model={"box_score_thresh": 0.0}, score=score or {},
                             schedule=schedule or {})
    return load_config(path, list(sets))


def test_precomputed_schedule_with_options_stores_embeddings_and_resumes_to_the_same_bytes(scorer, tmp_path):
    from alod.stages.scoring import run_scoring

    _, ckpt, train = scorer
    cfg = _config(tmp_path, scorer, name="opts", score=OPTIONS, schedule=BUDGET)
    out = run_scoring(cfg, ckpt=ckpt, progress=False, log=QUIET)
    first = out.read_bytes()
    s = json.loads(first)
    assert s["selection"]["batch"] == "coreset" and s["selection"]["box_budget"] == 40
    assert len(s["selection"]["class_weight_values"]) == train.num_classes + 1
    assert [c["rule"] for c in s["cycles"]] == ["random", "coreset to boxes", "coreset to boxes"]
    for c in s["cycles"][1:]:
        assert c["predicted_boxes"] >= 40 or len(c["images"]) == 12

    (shard_dir,) = [p.parent for p in run_layout(cfg).scores_dir.glob("*/manifest.json")]
    with np.load(shard_dir / "shard_00000.npz") as z:
        assert z["embeddings"].dtype == np.float16 and z["embeddings"].shape == (10, 32)  # fpn_channels 32
    assert json.loads((shard_dir / "manifest.json").read_text())["selection"]["batch"] == "coreset"

    # A rerun resumes from the shards (no shard rewritten) and writes the same bytes.
    stamps = {p: p.stat().st_mtime_ns for p in shard_dir.glob("shard_*.npz")}
    assert run_scoring(cfg, ckpt=ckpt, progress=False, log=QUIET).read_bytes() == first
    assert stamps == {p: p.stat().st_mtime_ns for p in shard_dir.glob("shard_*.npz")}

    # Without options: other shards (no embeddings, other key), and no selection in the schedule.
    plain = _config(tmp_path, scorer, name="plain")
    s0 = json.loads(run_scoring(plain, ckpt=ckpt, progress=False, log=QUIET).read_text())
    assert "selection" not in s0 and all("predicted_boxes" not in c for c in s0["cycles"])
    (plain_dir,) = [p.parent for p in run_layout(plain).scores_dir.glob("*/manifest.json")]
    assert plain_dir.name != shard_dir.name
    with np.load(plain_dir / "shard_00000.npz") as z:
        assert "embeddings" not in z.files
    # The weights changed the scores (class_weights), so the ranking's scores differ.
    assert [e["score"] for e in s["images"]] != [e["score"] for e in s0["images"]]


def test_a_budget_alone_reuses_the_default_shards(scorer, tmp_path):
    from alod.stages.scoring import run_scoring

    _, ckpt, _ = scorer
    plain = _config(tmp_path, scorer, name="plain")
    boxes = _config(tmp_path, scorer, name="boxes", schedule=BUDGET)
    a = json.loads(run_scoring(plain, ckpt=ckpt, progress=False, log=QUIET).read_text())
    b = json.loads(run_scoring(boxes, ckpt=ckpt, progress=False, log=QUIET).read_text())
    keys = [{p.name for p in run_layout(c).scores_dir.iterdir()} for c in (plain, boxes)]
    assert keys[0] == keys[1]  # the per-box scores the count needs are in every shard
    assert a["images"] == b["images"] and b["cycles"][1]["rule"] == "top to boxes"
    batch = b["batches"][1]
    assert b["cycles"][1]["images"] == batch[: len(b["cycles"][1]["images"])]  # a prefix in rank order


def test_precomputed_random_with_an_option_is_not_implemented(scorer, tmp_path):
    from alod.stages.scoring import run_scoring

    cfg = _config(tmp_path, scorer, name="rnd", score={"strategy": "random", "batch": "kmeanspp"})
    with pytest.raises(NotImplementedError, match="runs no model in the scoring stage"):
        run_scoring(cfg, progress=False, log=QUIET)


def test_embeddings_do_not_depend_on_the_batch(scorer):
    from alod.cycle.scorer import score_positions_details
    from alod.data.dataset import DetectionDataset
    from alod.engine import load_checkpoint
    from alod.models import build_detector
    from alod_testing import tiny_model_config

    _, ckpt, train = scorer
    model = build_detector(num_classes=train.num_classes, **asdict(tiny_model_config()))
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    dataset = DetectionDataset(train)
    kw = dict(strategy="entropy", params={}, embed=True, box_threshold=0.05, progress=False)
    four = score_positions_details(model, dataset, [0, 5, 9], batch_size=4, **kw)
    one = score_positions_details(model, dataset, [0, 5, 9], batch_size=1, **kw)
    assert four["embeddings"].shape == (3, 32) and four["embeddings"].dtype == np.float16
    np.testing.assert_allclose(four["embeddings"].astype(np.float32), one["embeddings"].astype(np.float32),
                               rtol=1e-2, atol=1e-3)
    assert four["predicted"].tolist() == one["predicted"].tolist()
    assert not np.array_equal(four["embeddings"][0], four["embeddings"][1])
    # box_estimate: calibrated reads the sum of each image's box scores instead of a count
    sums = score_positions_details(model, dataset, [0, 5, 9], batch_size=4, **{**kw, "score_sums": True})["predicted"]
    every = score_positions_details(model, dataset, [0, 5, 9], batch_size=4, **{**kw, "box_threshold": 0.0})
    assert sums.dtype == np.float64 and np.all(sums > 0)
    assert np.all(sums <= every["predicted"] + 1e-6)  # every score is at most 1
    assert np.all(sums >= 0.05 * four["predicted"] - 1e-6)  # the boxes >= 0.05 alone sum to that much


class _Pool:
    def __init__(self, names):
        self.names = list(names)


def _fake_adaptive(scorer, tmp_path, monkeypatch, **kw):
    """An adaptive selector whose scoring pass is replaced by fixed arrays per pool position."""
    import alod.cycle.scorer as scorer_module
    import alod.cycle.selection as selection

    _, _, train = scorer
    cfg = _config(tmp_path, scorer, name="adaptive", sets=["cycles.selector=adaptive"], **kw)
    calls: list[dict] = []

    def fake(ctx, index, positions, **kwargs):
        calls.append(kwargs)
        p = np.asarray(positions)
        return {"scores": ((p * 7919) % 101).astype(np.float64),
                "embeddings": np.stack([np.sin(p), np.cos(3 * p)], axis=1).astype(np.float16),
                "predicted": (p % 5) / 4.0 if kwargs.get("score_sums") else (p % 7).astype(np.int64)}

    # Patched where the adaptive selector imports it at call time (alod.cycle.scorer).
    monkeypatch.setattr(scorer_module, "score_details_with_checkpoint", fake)
    ctx = SimpleNamespace(cfg=cfg, layout=run_layout(cfg), log=QUIET, is_main=True)
    return selection.AdaptiveSelector(ctx=ctx, train=train), calls, ctx


def test_adaptive_box_budget_stops_at_the_right_image_and_records_both_counts(scorer, tmp_path, monkeypatch):
    from alod.cycle.selection import box_counts

    _, _, train = scorer
    selector, calls, ctx = _fake_adaptive(scorer, tmp_path, monkeypatch,
                                          schedule={"budget": "boxes", "box_budget": 20})
    assert selector.identity()["budget"] == "boxes" and selector.identity()["box_budget"] == 20
    first = selector.select(1, _Pool([]))
    second = selector.select(2, _Pool(first.images))
    names = [str(x) for x in train.names]
    cands = sorted(i for b in selector.batches[:2] for i in b.tolist() if names[i] not in first.images)
    ranked = sorted(cands, key=lambda p: (-((p * 7919) % 101), names[p]))
    total, expected = 0, []
    for p in ranked:
        expected.append(names[p])
        total += p % 7
        if total >= 20:
            break
    assert second.images == expected and second.rule == "adaptive top to boxes"
    boxes = box_counts(train)
    labeled = int(sum(boxes[names.index(x)] for x in expected))
    assert second.info["predicted_boxes"] == total and second.info["labeled_boxes"] == labeled
    record = json.loads(ctx.layout.cycle_selection(2).read_text())
    assert record["predicted_boxes"] == total and record["labeled_boxes"] == labeled
    assert record["images"] == len(expected)
    assert calls[0]["class_weights"] is None and calls[0]["embed"] is False


def test_adaptive_calibrated_box_budget_scales_score_sums_to_the_labeled_pool(scorer, tmp_path, monkeypatch):
    """``box_estimate: calibrated``: the score sums are rescaled so the candidates' mean equals the
    labeled pool's true boxes per image, and the budget is filled with those estimates."""
    from alod.cycle.selection import box_counts

    _, _, train = scorer
    selector, calls, ctx = _fake_adaptive(scorer, tmp_path, monkeypatch, schedule={
        "budget": "boxes", "box_budget": 20, "box_estimate": "calibrated"})
    assert selector.identity()["box_estimate"] == "calibrated"
    first = selector.select(1, _Pool([]))
    second = selector.select(2, _Pool(first.images))
    assert calls[0]["score_sums"] is True
    names, boxes = [str(x) for x in train.names], box_counts(train)
    mean = float(np.mean([boxes[names.index(x)] for x in first.images]))
    cands = sorted(i for b in selector.batches[:2] for i in b.tolist() if names[i] not in first.images)
    sums = {p: (p % 5) / 4.0 for p in cands}
    scale = mean / np.mean(list(sums.values()))
    ranked = sorted(cands, key=lambda p: (-((p * 7919) % 101), names[p]))
    total, expected = 0.0, []
    for p in ranked:
        expected.append(names[p])
        total += sums[p] * scale
        if total >= 20:
            break
    assert second.images == expected and second.rule == "adaptive top to boxes"
    assert second.info["labeled_boxes_per_image"] == pytest.approx(mean, abs=1e-4)
    assert second.info["predicted_boxes"] == pytest.approx(total, abs=0.01)
    assert second.info["labeled_boxes"] == int(sum(boxes[names.index(x)] for x in expected))


def test_adaptive_class_weights_come_from_the_previous_model_on_the_labeled_pool(scorer, tmp_path, monkeypatch):
    """Cycle n's weights are 1 - AP50 of cycle n - 1's model on the labeled pool, never on the
    validation split whose mAP is reported."""
    import alod.cycle.selection as selection
    from alod.strategies import difficulty_weights

    _, _, train = scorer
    selector, calls, ctx = _fake_adaptive(scorer, tmp_path, monkeypatch,
                                          score={"batch": "kmeanspp", "class_weights": "difficulty"})
    metrics = {f"AP50/{c}": 0.1 * k for k, c in enumerate(train.classes)}
    evaluated = []

    def fake_eval(ctx_, index, positions, *, ckpt, metrics_path, desc):
        evaluated.append((list(positions), ckpt, metrics_path))
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(selection, "labeled_pool_metrics", fake_eval)
    first = selector.select(1, _Pool([]))
    # A validation metrics.json that says otherwise is not read.
    ctx.layout.cycle_metrics(1).parent.mkdir(parents=True, exist_ok=True)
    ctx.layout.cycle_metrics(1).write_text(json.dumps({f"AP50/{c}": 1.0 for c in train.classes}))
    second = selector.select(2, _Pool(first.images))
    where = train.name_to_index()
    assert evaluated[0][0] == sorted(where[x] for x in first.images)
    assert evaluated[0][1] == ctx.layout.cycle_checkpoint(1)
    assert evaluated[0][2] == ctx.layout.cycle_labeled_metrics(2)
    np.testing.assert_allclose(calls[-1]["class_weights"], difficulty_weights(metrics, train.classes))
    assert calls[-1]["embed"] is True and second.rule == "adaptive kmeanspp"
    # The picks are choose()'s with the cycle's stream (schedule.seed, 4, cycle), and a restart repeats them.
    names = [str(x) for x in train.names]
    cands = sorted(i for b in selector.batches[:2] for i in b.tolist() if names[i] not in first.images)
    p = np.asarray(cands)
    picked, _ = choose(SelectOptions(batch="kmeanspp"), names=[names[i] for i in cands],
                       scores=((p * 7919) % 101).astype(np.float64),
                       emb=np.stack([np.sin(p), np.cos(3 * p)], axis=1).astype(np.float16), k=4,
                       predicted=p % 7, rng=np.random.default_rng((0, 4, 2)))
    assert second.images == [names[cands[k]] for k in picked]
    assert selector.select(2, _Pool(first.images)).images == second.images
    # Recorded as used: rounded to 6 decimals (so state, schedule and shard key hold the exact values).
    assert second.info["class_weights"] == pytest.approx(difficulty_weights(metrics, train.classes).tolist(), abs=1e-6)


def test_precomputed_selector_records_the_schedules_counts(scorer, tmp_path):
    from alod.cycle.selection import PrecomputedSelector, box_counts
    from alod.stages.scoring import run_scoring

    _, ckpt, train = scorer
    cfg = _config(tmp_path, scorer, name="pre", schedule=BUDGET)
    path = run_scoring(cfg, ckpt=ckpt, progress=False, log=QUIET)
    ctx = SimpleNamespace(cfg=cfg, layout=run_layout(cfg), log=QUIET, is_main=True)
    selector = PrecomputedSelector(ctx=ctx, train=train, schedule_file=path)
    first = selector.select(1, _Pool([]))
    assert first.info == {}
    second = selector.select(2, _Pool(first.images))
    entry = json.loads(path.read_text())["cycles"][1]
    boxes, pos = box_counts(train), train.name_to_index()
    assert second.info["predicted_boxes"] == entry["predicted_boxes"]
    assert second.info["labeled_boxes"] == int(sum(boxes[pos[x]] for x in second.images))
    assert json.loads(ctx.layout.cycle_selection(2).read_text()) == second.info


def test_adaptive_cycles_run_with_every_option(scorer, tmp_path):
    """Two real cycles: cycle 2 re-scores with cycle 1's model, its metrics, embeddings and counts."""
    from alod.stages.cycles import run_cycles

    cfg = _config(tmp_path, scorer, name="cycles", score={"batch": "kmeanspp", "class_weights": "difficulty"},
                  schedule={"budget": "boxes", "box_budget": 30, "box_threshold": 0.05},
                  sets=["cycles.selector=adaptive", "cycles.epochs=1", "cycles.num_cycles=2"])
    state = run_cycles(cfg, progress=False, log=QUIET)
    num_classes = scorer[2].num_classes
    assert [c["rule"] for c in state["cycles"]] == ["random", "adaptive kmeanspp to boxes"]
    assert state["selector"]["batch"] == "kmeanspp" and state["selector"]["budget"] == "boxes"
    record = json.loads(run_layout(cfg).cycle_selection(2).read_text())
    assert record["images"] == len(state["cycles"][1]["selected"]) >= 1
    assert record["predicted_boxes"] >= 30 or record["images"] == 32
    assert "labeled_boxes" in record and len(record["class_weights"]) == num_classes + 1
    # The weights are the first cycle's model on the first cycle's images (the labeled pool).
    from alod.strategies import difficulty_weights

    labeled = json.loads(run_layout(cfg).cycle_labeled_metrics(2).read_text())
    np.testing.assert_allclose(record["class_weights"], difficulty_weights(labeled, scorer[2].classes), atol=1e-6)
