"""alod.models: the class-distribution head's contract, the preset registry, weights loading.

The contract (GUIDE section 3): inference returns per image ``boxes [N, 4]``, ``labels [N]``,
``scores [N]`` and ``probs [N, C + 1]`` (softmax including background, aligned with the boxes).
Random-init models with ``box_score_thresh=0`` return boxes, so no training is needed to check it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict

import pytest
import torch
import torchvision
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from alod.config import ModelConfig
from alod.models import MODEL_PRESETS, ProbRoIHeads, build_detector, load_detector, load_weights
from alod.utils import AlodError
from alod_testing import tiny_model_config

NUM_CLASSES = 3
TINY_MODEL = tiny_model_config()
# (height, width): one image at the model's own size, one that GeneralizedRCNNTransform rescales.
IMAGE_SIZES = [(96, 160), (72, 100)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(TINY_MODEL, **changes)


def build(cfg: ModelConfig = TINY_MODEL, *, seed: int = 0, num_classes: int = NUM_CLASSES):
    torch.manual_seed(seed)
    return build_detector(num_classes=num_classes, **asdict(cfg))


def random_images(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in IMAGE_SIZES]


@pytest.fixture(scope="module")
def model():
    return build().eval()


@pytest.fixture(scope="module")
def outputs(model):
    with torch.no_grad():
        return model(random_images())


# ------------------------------------------------------------------------ the ProbRoIHeads contract
def test_build_installs_prob_roi_heads(model):
    assert type(model.roi_heads) is ProbRoIHeads
    assert model.roi_heads.box_predictor.cls_score.out_features == NUM_CLASSES + 1
    # Settings carried over from the torchvision head built from the config.
    assert model.roi_heads.score_thresh == 0.0
    assert model.roi_heads.detections_per_img == TINY_MODEL.box_detections_per_img


def test_inference_output_shapes_and_dtypes(outputs):
    assert len(outputs) == len(IMAGE_SIZES)
    for out in outputs:
        assert set(out) == {"boxes", "labels", "scores", "probs"}
        n = out["boxes"].shape[0]
        assert n > 0, "a random-init model with box_score_thresh=0 must return boxes"
        assert out["boxes"].shape == (n, 4) and out["boxes"].dtype == torch.float32
        assert out["labels"].shape == (n,) and out["labels"].dtype == torch.int64
        assert out["scores"].shape == (n,)
        assert out["probs"].shape == (n, NUM_CLASSES + 1)
        assert n <= TINY_MODEL.box_detections_per_img


def test_probs_are_distributions_consistent_with_scores_and_labels(outputs):
    for out in outputs:
        probs, labels, scores = out["probs"], out["labels"], out["scores"]
        assert torch.all(probs >= 0)
        torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)), atol=1e-5, rtol=0)
        assert torch.all((labels >= 1) & (labels <= NUM_CLASSES))  # 0 is background, never a detection
        # The score of a detection is its class's entry of the distribution it came with, exactly.
        assert torch.equal(scores, probs[torch.arange(len(labels)), labels])
        assert torch.all(scores[:-1] >= scores[1:])  # NMS output: descending scores


def test_boxes_inside_original_image(outputs):
    for out, (h, w) in zip(outputs, IMAGE_SIZES):
        b = out["boxes"]
        eps = 1e-3  # rescaling back to the original size may round a clipped edge
        assert torch.all(b[:, 0] >= -eps) and torch.all(b[:, 1] >= -eps)
        assert torch.all(b[:, 2] <= w + eps) and torch.all(b[:, 3] <= h + eps)
        assert torch.all(b[:, 2] >= b[:, 0]) and torch.all(b[:, 3] >= b[:, 1])


def test_postprocess_matches_torchvision_and_keeps_each_rois_distribution(model):
    """Same boxes, labels and scores as torchvision's postprocess_detections; each ``probs`` row is
    the softmax of the RoI whose decoded box (for that label) is the detection's box."""
    rh = model.roi_heads
    with torch.no_grad():
        images, _ = model.transform(random_images())
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        box_features = rh.box_head(rh.box_roi_pool(features, proposals, images.image_sizes))
        class_logits, box_regression = rh.box_predictor(box_features)
        ours = rh.postprocess_with_probs(class_logits, box_regression, proposals, images.image_sizes)
        ref = RoIHeads.postprocess_detections(rh, class_logits, box_regression, proposals, images.image_sizes)
    boxes, scores, labels, probs = ours
    for k, (got, want) in enumerate(zip((boxes, scores, labels), ref)):
        for g, w in zip(got, want):
            assert torch.equal(g, w), f"output {k} differs from torchvision"

    all_probs = torch.softmax(class_logits, -1).split([len(p) for p in proposals])
    all_boxes = rh.box_coder.decode(box_regression, proposals).split([len(p) for p in proposals])
    for img, shape in enumerate(images.image_sizes):
        decoded = box_ops.clip_boxes_to_image(all_boxes[img], shape)
        for i in range(len(labels[img])):
            rois = torch.where((all_probs[img] == probs[img][i]).all(1))[0]
            assert len(rois) >= 1, f"image {img} detection {i}: probs row is no RoI's softmax"
            lab = int(labels[img][i])
            assert any(torch.equal(decoded[r, lab], boxes[img][i]) for r in rois)


def test_score_threshold_and_detection_cap_are_honoured():
    thresh, cap = 0.2, 5
    model = build(tiny(box_score_thresh=thresh, box_detections_per_img=cap)).eval()
    assert model.roi_heads.score_thresh == thresh and model.roi_heads.detections_per_img == cap
    with torch.no_grad():
        outs = model(random_images())
    for out in outs:
        assert len(out["boxes"]) == cap  # far more than 5 (RoI, class) pairs pass 0.2 at random init
        assert torch.all(out["scores"] > thresh)
        assert out["probs"].shape == (cap, NUM_CLASSES + 1)


def test_train_mode_returns_four_finite_scalar_losses():
    model = build().train()
    images = random_images()
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [70.0, 5.0, 90.0, 40.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "labels": torch.tensor([2])},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    for name, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), name
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None


# ------------------------------------------------------------------------------- presets registry
@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_every_preset_builds_offline_with_prob_head(name, monkeypatch):
    """Random init must not touch the network (no weights, no backbone weights). The inference
    contract itself is checked above on the light preset; the head is the same class for all."""

    def no_download(*args, **kwargs):
        raise AssertionError(f"{name} tried to download weights")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    cfg = ModelConfig(name=name, min_size=96, max_size=160, box_score_thresh=0.25, box_detections_per_img=7)
    model = build(cfg, num_classes=2)
    assert type(model.roi_heads) is ProbRoIHeads
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 3 * 4
    assert model.roi_heads.score_thresh == 0.25 and model.roi_heads.detections_per_img == 7
    assert (model.transform.min_size, model.transform.max_size) == ((96,), 160)


def test_expected_presets_registered():
    assert {"fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "resnet18_fpn_light"} <= set(MODEL_PRESETS)


def test_build_detector_defaults_are_the_model_sections():
    # build_detector takes plain keywords; their defaults must not drift from the YAML's (ModelConfig).
    import inspect

    params = inspect.signature(build_detector).parameters
    defaults = {k: p.default for k, p in params.items() if k != "num_classes"}
    expected = asdict(ModelConfig())
    expected["extra"] = None  # a mutable default: None stands for {}
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()} == \
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in expected.items()}


def test_load_detector_errors_name_the_problem(tmp_path):
    with pytest.raises(AlodError, match="does not exist"):
        load_detector(tmp_path / "nope.pt", num_classes=NUM_CLASSES, **asdict(TINY_MODEL))
    torch.save({"weights": 1}, tmp_path / "plain.pt")
    with pytest.raises(AlodError, match="not an alod checkpoint"):
        load_detector(tmp_path / "plain.pt", num_classes=NUM_CLASSES, **asdict(TINY_MODEL))
    torch.save({"model": build(num_classes=NUM_CLASSES).state_dict()}, tmp_path / "ckpt.pt")
    with pytest.raises(AlodError, match=f"trained for {NUM_CLASSES} classes, this dataset has 5"):
        load_detector(tmp_path / "ckpt.pt", num_classes=5, **asdict(TINY_MODEL))
    with pytest.raises(AlodError, match="does not fit model"):
        load_detector(tmp_path / "ckpt.pt", num_classes=NUM_CLASSES, **asdict(tiny(fpn_channels=2 * TINY_MODEL.fpn_channels)))
    model = load_detector(tmp_path / "ckpt.pt", num_classes=NUM_CLASSES, **asdict(TINY_MODEL))
    _assert_same_state(model, build(num_classes=NUM_CLASSES))


def test_unknown_preset_lists_valid_names():
    with pytest.raises(AlodError) as e:
        build_detector(num_classes=3, **asdict(ModelConfig(name="yolo_v99")))
    msg = str(e.value)
    assert "yolo_v99" in msg
    for name in MODEL_PRESETS:
        assert name in msg


def test_light_preset_rejects_detector_weights_and_wrong_anchor_count():
    with pytest.raises(AlodError, match="no pretrained detector weights"):
        build_detector(num_classes=3, **asdict(tiny(weights="DEFAULT")))
    with pytest.raises(AlodError, match="anchor_sizes"):
        build_detector(num_classes=3, **asdict(tiny(anchor_sizes=(8, 16, 32))))


# ----------------------------------------------------------------------------------- weights_path
def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _assert_differs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if sa[k].is_floating_point())


@pytest.mark.parametrize("wrap", ["state_dict", "alod_checkpoint"])
def test_weights_path_loads_state_dict_or_checkpoint(tmp_path, wrap):
    source = build(seed=0)
    other = build(seed=1)
    _assert_differs(source, other)  # otherwise loading proves nothing
    state = source.state_dict()
    if wrap == "alod_checkpoint":
        state = {"model": state, "epoch": 3, "config": {"model": {"name": "resnet18_fpn_light"}}, "extra": {}}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    loaded = build(tiny(weights_path=str(path)), seed=1)
    _assert_same_state(loaded, source)


def test_weights_path_missing_file(tmp_path):
    with pytest.raises(AlodError, match="does not exist"):
        build(tiny(weights_path=str(tmp_path / "nope.pt")))


def test_weights_path_with_missing_keys_is_alod_error(tmp_path):
    state = build().state_dict()
    del state["roi_heads.box_predictor.cls_score.bias"]
    state["not.a.parameter"] = torch.zeros(1)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(AlodError, match="missing 1 keys.*unexpected 1"):
        load_weights(build(seed=1), str(path))


def test_weights_path_for_other_class_count_is_alod_error(tmp_path):
    path = tmp_path / "three_classes.pt"
    torch.save(build(num_classes=3).state_dict(), path)
    with pytest.raises(AlodError):
        build(tiny(weights_path=str(path)), num_classes=5)


def test_weights_path_garbage_file_is_alod_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(AlodError):
        build(tiny(weights_path=str(path)))


# ------------------------------------------------------------------------------ model.channels_last
def test_channels_last_weights_compute_the_same_features_and_checkpoints_load_either_way():
    """``model.channels_last`` changes only the memory layout: every 4-D weight is NHWC, the features
    equal the NCHW model's to float rounding, and a state dict moves between the two layouts."""
    nchw = build()
    nhwc = build(tiny(channels_last=True))
    convs = [p for p in nhwc.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in nchw.parameters() if p.dim() == 4)
    nhwc.load_state_dict(nchw.state_dict())  # same seed builds the same weights; this makes sure
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in nhwc.parameters() if p.dim() == 4)
    x = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = nchw.eval().backbone(x), nhwc.eval().backbone(x)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    back = build()
    back.load_state_dict(nhwc.state_dict())
    for k, v in nchw.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def training_loss(model) -> torch.Tensor:
    """One forward and backward pass of ``model`` (in train mode) on the random images, one box each."""
    images = random_images()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])} for _ in images]
    loss = sum(model.train()(images, targets).values())
    loss.backward()
    return loss


def test_channels_last_model_trains():
    model = build(tiny(channels_last=True))
    loss = training_loss(model)
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.dim() == 4 and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# -------------------------------------------------------------------------------- model.trunk_width
def test_trunk_width_narrows_layers_1_to_3_and_64_is_resnet18():
    """``trunk_width`` w gives layers 1-3 w, 2w, 4w channels; 64 builds torchvision's ResNet-18 itself
    (the same weights for the same seed as before the option existed)."""
    default = build()
    same = build(tiny(trunk_width=64))
    for (k, a), b in zip(default.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k
    narrow = build(tiny(trunk_width=16)).eval()
    body = narrow.backbone.body
    assert [body[f"layer{i}"][-1].conv2.out_channels for i in (1, 2, 3)] == [16, 32, 64]
    assert sum(p.numel() for p in body.parameters()) < sum(p.numel() for p in default.backbone.body.parameters()) / 10
    with torch.no_grad():
        out = narrow(random_images())
    assert len(out) == len(IMAGE_SIZES) and all(o["probs"].shape[1] == NUM_CLASSES + 1 for o in out)


def test_trunk_width_other_than_64_refuses_pretrained_backbone_weights():
    with pytest.raises(AlodError, match="trunk_width"):
        build_detector(num_classes=3, **asdict(tiny(trunk_width=32, weights_backbone="DEFAULT")))


# -------------------------------------------------------------------------- model.roi_sampling_ratio
@pytest.mark.parametrize("name", ["resnet18_fpn_light", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_roi_sampling_ratio_reaches_the_box_heads_roi_align(name):
    assert build_detector(num_classes=3, **asdict(tiny(name=name))).roi_heads.box_roi_pool.sampling_ratio == 2
    assert build_detector(num_classes=3, **asdict(tiny(name=name, roi_sampling_ratio=1))).roi_heads.box_roi_pool.sampling_ratio == 1


def test_roi_sampling_ratio_changes_the_pooled_features_and_the_model_still_trains():
    """The ratio is read at every forward: the same weights pool other features with 1 sample per bin
    than with 2, and a model built with 1 (or 0, adaptive) trains to a finite loss."""
    two, one = build(), build(tiny(roi_sampling_ratio=1))
    one.load_state_dict(two.state_dict())
    x = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(5))
    rois = [torch.tensor([[4.0, 6.0, 70.0, 60.0], [20.0, 10.0, 150.0, 90.0]])]
    with torch.no_grad():
        feats = two.eval().backbone(x)
        a = two.roi_heads.box_roi_pool(feats, rois, [(96, 160)])
        b = one.roi_heads.box_roi_pool(feats, rois, [(96, 160)])
    assert a.shape == b.shape and not torch.allclose(a, b)
    for ratio in (1, 0):
        assert torch.isfinite(training_loss(build(tiny(roi_sampling_ratio=ratio))))


def test_negative_roi_sampling_ratio_is_refused_at_load():
    from alod.config import load_config

    with pytest.raises(AlodError, match="roi_sampling_ratio"):
        load_config(None, ["model.roi_sampling_ratio=-1"])
