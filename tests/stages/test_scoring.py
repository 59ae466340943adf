"""Score shards: written as they finish, resumed after a kill, merged in pool order."""
from __future__ import annotations

from dataclasses import asdict
import numpy as np
import pytest

from alod.config import load_config
from alod.data.dataset import DetectionDataset
from alod.data.sources import ensure_dataset, load_split
from alod.models import build_detector
from alod.stages.scoring import load_shards, score_pool
from alod.utils import AlodError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from alod_testing import write_tiny_config

    tmp = tmp_path_factory.mktemp("scoring")
    cfg = load_config(write_tiny_config(tmp))
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", log=lambda *_: None)
    import torch

    torch.manual_seed(0)
    model = build_detector(num_classes=train.num_classes, **asdict(cfg.model))
    return tmp, DetectionDataset(train), model


def test_resume_from_complete_shards(setup, monkeypatch):
    tmp, ds, model = setup
    kw = dict(strategy="entropy", params={"aggregate": "sum"}, shard_size=10, batch_size=4, progress=False)
    full = score_pool(model, ds, shard_dir=tmp / "full", **kw)
    assert full.shape == (36,) and sorted(p.name for p in (tmp / "full").iterdir())[0] == "shard_00000.npz"

    # Simulate a kill after two shards: the process dies while writing the third.
    import alod.stages.scoring as scoring

    real_write, calls = scoring._write_shard, []

    def dying_write(path, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(path.name)
        real_write(path, **k)

    monkeypatch.setattr(scoring, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        score_pool(model, ds, shard_dir=tmp / "resumed", **kw)
    assert sorted(p.name for p in (tmp / "resumed").glob("*.npz")) == ["shard_00000.npz", "shard_00001.npz"]
    assert not list((tmp / "resumed").glob(".*tmp"))  # no torn files left behind
    monkeypatch.setattr(scoring, "_write_shard", real_write)

    # Rerun: only shards 2 and 3 are computed, and the merged scores equal the uninterrupted run.
    done = []
    monkeypatch.setattr(scoring, "_write_shard", lambda path, **k: (done.append(path.name), real_write(path, **k)))
    resumed = score_pool(model, ds, shard_dir=tmp / "resumed", **kw)
    assert done == ["shard_00002.npz", "shard_00003.npz"]
    np.testing.assert_array_equal(resumed, full)


def test_shards_hold_compact_box_stats(setup):
    tmp, ds, model = setup
    score_pool(model, ds, shard_dir=tmp / "stats", strategy="box_count", params={"score_threshold": 0.0},
               shard_size=10, batch_size=4, progress=False)
    with np.load(tmp / "stats" / "shard_00000.npz") as z:
        counts = np.diff(z["box_offsets"])
        # box_count with threshold 0 counts every kept box: the per-box stats agree with the score.
        np.testing.assert_array_equal(counts, z["scores"])
        assert z["box_scores"].dtype == np.float16 and z["box_labels"].dtype == np.uint8


def test_missing_shard_is_reported(tmp_path):
    with pytest.raises(AlodError, match="shard_00000.npz is missing"):
        load_shards(tmp_path, 1)


def test_unseen_pool_ranks_only_images_the_scorer_did_not_train_on(tmp_path):
    import json

    from alod.stages.pretrain import run_pretrain
    from alod.stages.scoring import run_scoring
    from alod_testing import run_layout, write_tiny_config

    path = write_tiny_config(tmp_path, pretrain={"epochs": 1}, schedule={"batch_size": 8, "query_size": 2})
    cfg = load_config(path, ["score.pool=unseen"])
    with pytest.raises(AlodError, match="needs the pretraining partition"):  # random reads no checkpoint
        run_scoring(load_config(path, ["score.pool=unseen", "score.strategy=random"]), progress=False,
                    log=lambda *_: None)
    ckpt = run_pretrain(cfg, progress=False, log=lambda *_: None)
    sched = json.loads(run_scoring(cfg, ckpt=ckpt, progress=False, log=lambda *_: None).read_text())
    seen = set(json.loads(run_layout(cfg).partition.read_text())["images"])
    ranked = {r["name"] for r in sched["images"]}
    assert len(seen) == 25 and len(ranked) == 11 and not ranked & seen
    assert sched["pool"] == "unseen" and sched["dataset"]["num_images"] == 36  # the cycles check the whole split
    assert "pool" not in json.loads(run_scoring(load_config(path), ckpt=ckpt, progress=False,
                                                log=lambda *_: None).read_text())
