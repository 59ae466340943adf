"""Monte Carlo dropout: ``predict_mc`` (the box head T times over the same proposals), its inference
through ``iter_predictions``, and scoring a schedule with ``score.strategy=mc_dropout``.

The BALD formula itself is checked on hand-made ``mc_probs`` in tests/test_strategies.py.
Random-init models with ``box_score_thresh=0`` return boxes, so no training is needed.
"""
from __future__ import annotations

from dataclasses import asdict
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from alod_testing import tiny_model_config

from alod.engine import iter_predictions
from alod.models import MCSampling, build_detector, predict_mc
from alod.utils import AlodError

NUM_CLASSES = 3
IMAGE_SIZES = [(96, 160), (72, 100)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """As in tests/test_models.py: tiny tensors, shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_detector(num_classes=NUM_CLASSES, **asdict(tiny_model_config())).eval()


def random_images(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in IMAGE_SIZES]


def test_one_pass_without_dropout_is_the_ordinary_inference_bit_for_bit(model):
    images = random_images()
    with torch.no_grad():
        ref = model(images)
    got = predict_mc(model, images, passes=1, dropout=0.0)
    for r, g in zip(ref, got):
        assert set(g) == {"boxes", "labels", "scores", "probs", "mc_probs"}
        for k in r:
            assert torch.equal(r[k], g[k]), k
        assert torch.equal(g["mc_probs"][:, 0], g["probs"])
    with torch.no_grad():  # predict_mc leaves no state behind: the ordinary path is unchanged
        again = model(images)
    for r, a in zip(ref, again):
        assert all(torch.equal(r[k], a[k]) for k in r)


def test_mc_output_contract(model):
    passes = 6
    outs = predict_mc(model, random_images(), passes=passes, dropout=0.5, seed=0)
    for out, (h, w) in zip(outs, IMAGE_SIZES):
        n = len(out["boxes"])
        assert n > 0
        mc, probs, labels = out["mc_probs"], out["probs"], out["labels"]
        assert mc.shape == (n, passes, NUM_CLASSES + 1) and mc.dtype == torch.float32
        torch.testing.assert_close(mc.sum(-1), torch.ones(n, passes), atol=1e-5, rtol=0)
        torch.testing.assert_close(mc.mean(1), probs, atol=1e-6, rtol=0)  # probs: the mean distribution
        assert torch.equal(out["scores"], probs[torch.arange(n), labels])  # scores from the mean
        assert torch.all(out["scores"][:-1] >= out["scores"][1:])
        assert torch.all((labels >= 1) & (labels <= NUM_CLASSES))
        assert torch.all(out["boxes"][:, 2] <= w + 1e-3) and torch.all(out["boxes"][:, 3] <= h + 1e-3)
        assert (mc.std(1) > 1e-3).any(), "dropout 0.5 must make the passes differ"


def test_passes_are_explicit_dropout_passes_of_the_box_head(model):
    """The batched computation equals T explicit passes of TwoMLPHead with dropout on the inputs of
    fc7 and of the predictor (masks from the same per-image generators), and the detections are the
    post-processing of the mean probabilities and mean box regression."""
    passes, p, seed = 4, 0.3, 7
    images = random_images()
    rh = model.roi_heads
    sampling = MCSampling(passes=passes, dropout=p, seed=seed)
    with torch.no_grad():
        il, _ = model.transform(images)
        features = model.backbone(il.tensors)
        proposals, _ = model.rpn(il, features)
        got = rh.forward_mc(features, proposals, il.image_sizes, sampling=sampling, keys=[0, 1])

        counts = [len(b) for b in proposals]
        hidden = F.relu(rh.box_head.fc6(rh.box_roi_pool(features, proposals, il.image_sizes).flatten(1)))
        width = hidden.shape[1]
        gens = [sampling.generator(k) for k in (0, 1)]
        masks = [torch.cat([torch.rand((passes, n, width), generator=g) >= p for g, n in zip(gens, counts)], 1)
                 for _ in range(2)]  # site 1 (fc7 input) for every image, then site 2 (predictor input)
        probs_t, reg_t = [], []
        for t in range(passes):
            x = hidden * masks[0][t] / (1 - p)
            x = F.relu(rh.box_head.fc7(x)) * masks[1][t] / (1 - p)
            logits, reg = rh.box_predictor(x)
            probs_t.append(torch.softmax(logits, -1))
            reg_t.append(reg)
        probs_t, reg_t = torch.stack(probs_t), torch.stack(reg_t)
        boxes, scores, labels, probs, rois = rh._postprocess(probs_t.mean(0), reg_t.mean(0), proposals, il.image_sizes)
    for i, part in enumerate(probs_t.split(counts, 1)):
        torch.testing.assert_close(got[i]["boxes"], boxes[i], atol=1e-4, rtol=0)
        assert torch.equal(got[i]["labels"], labels[i])
        torch.testing.assert_close(got[i]["scores"], scores[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(got[i]["probs"], probs[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(got[i]["mc_probs"], part[:, rois[i]].transpose(0, 1), atol=1e-6, rtol=0)


def test_seeded_and_independent_of_the_batch(model):
    images = random_images()
    a = predict_mc(model, images, passes=5, dropout=0.5, seed=3)
    b = predict_mc(model, images, passes=5, dropout=0.5, seed=3)
    c = predict_mc(model, images, passes=5, dropout=0.5, seed=4)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a[0]["mc_probs"], c[0]["mc_probs"])
    # Image 1 alone, keyed 1 as in the batch: the same masks. (Batching itself moves float32 results
    # by ~1e-7 in the ordinary path too, hence a tolerance.)
    alone = predict_mc(model, images[1:], passes=5, dropout=0.5, seed=3, keys=[1])[0]
    assert torch.equal(alone["labels"], a[1]["labels"])
    torch.testing.assert_close(alone["mc_probs"], a[1]["mc_probs"], atol=1e-5, rtol=0)


def test_iter_predictions_with_mc_does_not_depend_on_batch_size(model):
    class Images(torch.utils.data.Dataset):
        def __init__(self):
            self.images = random_images() + random_images(seed=2)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i], {"image_id": i}

    mc = MCSampling(passes=3, dropout=0.5, seed=0)
    by_2 = dict(iter_predictions(model, Images(), [3, 1, 2], batch_size=2, mc=mc))
    by_1 = dict(iter_predictions(model, Images(), [1, 2, 3], batch_size=1, mc=mc))
    assert sorted(by_2) == [1, 2, 3]
    for i in (1, 2, 3):
        assert by_2[i]["mc_probs"].shape == (len(by_2[i]["scores"]), 3, NUM_CLASSES + 1)
        assert by_2[i]["mc_probs"].dtype == np.float32
        np.testing.assert_array_equal(by_2[i]["labels"], by_1[i]["labels"])
        np.testing.assert_allclose(by_2[i]["mc_probs"], by_1[i]["mc_probs"], atol=1e-5)
    plain = dict(iter_predictions(model, Images(), [1], batch_size=1))
    assert "mc_probs" not in plain[1]


def test_errors_are_clear(model):
    images = random_images()
    with pytest.raises(AlodError, match=r"dropout must be in \[0, 1\)"):
        predict_mc(model, images, dropout=1.0)
    with pytest.raises(AlodError, match="passes must be an integer >= 1"):
        predict_mc(model, images, passes=0)
    with pytest.raises(AlodError, match="keys"):
        predict_mc(model, images, keys=[0])
    model.train()
    try:
        with pytest.raises(AlodError, match="model.eval"):
            predict_mc(model, images)
    finally:
        model.eval()


# ------------------------------------------------------------------------------------- scoring
def test_run_scoring_with_mc_dropout_writes_a_schedule(tmp_path):
    """make_batches' Python entry with score.strategy=mc_dropout on the tiny config (random-init
    scorer saved as a checkpoint); the shards hold the same scores whatever the batch size."""
    from alod_testing import write_tiny_config

    from alod.config import load_config
    from alod.data.dataset import DetectionDataset
    from alod.data.sources import ensure_dataset, load_split
    from alod.stages.scoring import run_scoring, score_pool
    from alod.strategies import score_images

    cfg = load_config(write_tiny_config(
        tmp_path, model={"box_score_thresh": 0.0},
        score={"strategy": "mc_dropout", "params": {"mc_dropout": {"passes": 4, "dropout": 0.5}}},
    ))
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", log=lambda *_: None)
    torch.manual_seed(0)
    model = build_detector(num_classes=train.num_classes, **asdict(cfg.model))
    ckpt = tmp_path / "scorer.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    out = run_scoring(cfg, ckpt=ckpt, progress=False, log=lambda *_: None)
    s = json.loads(out.read_text())
    assert s["strategy"] == {"name": "mc_dropout", "params": {"passes": 4, "dropout": 0.5}}
    assert len(s["images"]) == 36 and len(s["cycles"]) == 3
    scores = np.array([im["score"] for im in s["images"]])
    assert np.all(scores > 0)  # passes disagree on every image of a random-init model
    (shard_dir,) = [d for d in (tmp_path / "runs" / "tiny").rglob("manifest.json")]
    with np.load(shard_dir.parent / "shard_00000.npz") as z:
        first = z["scores"]

    # Another batch size: other batches, same per-image masks, same scores (to float rounding).
    rescored = score_pool(model.eval(), DetectionDataset(train), strategy="mc_dropout",
                          params={"passes": 4, "dropout": 0.5},
                          shard_dir=tmp_path / "b3", shard_size=10, batch_size=3, progress=False)
    np.testing.assert_allclose(rescored[:10], first, rtol=1e-4)
    # A strategy with inference 'single' on the same detections would not see mc_probs: the
    # mc_dropout function refuses detections without them instead of scoring 0.
    with pytest.raises(AlodError, match="mc_probs"):
        score_images([{"scores": np.ones(1, np.float32), "probs": np.ones((1, 11), np.float32)}],
                     strategy="mc_dropout")
