"""Faster R-CNN builders chosen by name, and the RoI head that keeps class distributions.

Presets (``model.name`` in YAML):

* ``fasterrcnn_resnet50_fpn``: torchvision's R50-FPN, the full-scale default (as in the original
  project).
* ``fasterrcnn_mobilenet_v3_large_fpn``: torchvision's MobileNetV3-FPN.
* ``resnet18_fpn_light``: the CPU-light preset for the demo and tests. Why it looks the way it
  does: on a 2-core CPU from random init the detector has to learn in minutes, so the feature
  strides and anchors are matched to the objects (FPN on ResNet-18 layers 1-3: strides 4, 8, 16 and
  a max-pooled 32; one anchor size per level), few proposals and RoIs (``roi_align``'s backward is
  single-threaded on CPU and dominates a stock step), a narrow box head, and trainable BatchNorm
  (torchvision's default FrozenBatchNorm is an identity at random init, i.e. no normalisation).

Weights: random initialisation by default. ``weights: DEFAULT`` asks torchvision for its pretrained
COCO weights (needs internet the first time; the box predictor is replaced for our classes), and
``weights_path`` loads a local state dict (a torchvision file or an alod checkpoint).
"""
from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from alod.config import ModelConfig
from alod.utils import AlodError, load_torch_file


MODEL_PRESETS: dict[str, Callable[..., FasterRCNN]] = {}


def register_model(name: str):
    def deco(fn):
        MODEL_PRESETS[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------------------------------- RoI head
class ProbRoIHeads(RoIHeads):
    """``RoIHeads`` whose inference output keeps each detection's full class distribution.

    torchvision's ``postprocess_detections`` softmaxes the class logits and keeps only the score of
    each (box, class) pair. Here inference returns per image ``boxes [N, 4]``, ``labels [N]``,
    ``scores [N]`` and ``probs [N, C + 1]``: the softmax over all classes *including background*
    (column 0) of the RoI the detection came from, aligned with ``boxes``. Training is unchanged.
    """

    @classmethod
    def from_roi_heads(cls, rh: RoIHeads) -> "ProbRoIHeads":
        return cls(
            box_roi_pool=rh.box_roi_pool,
            box_head=rh.box_head,
            box_predictor=rh.box_predictor,
            fg_iou_thresh=rh.proposal_matcher.high_threshold,
            bg_iou_thresh=rh.proposal_matcher.low_threshold,
            batch_size_per_image=rh.fg_bg_sampler.batch_size_per_image,
            positive_fraction=rh.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=rh.box_coder.weights,
            score_thresh=rh.score_thresh,
            nms_thresh=rh.nms_thresh,
            detections_per_img=rh.detections_per_img,
        )

    def forward(self, features, proposals, image_shapes, targets=None):  # type: ignore[override]
        if self.training:
            return super().forward(features, proposals, image_shapes, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        boxes, scores, labels, probs = self.postprocess_with_probs(
            class_logits, box_regression, proposals, image_shapes
        )
        result = [
            {"boxes": b, "labels": lab, "scores": s, "probs": p} for b, s, lab, p in zip(boxes, scores, labels, probs)
        ]
        return result, {}

    def postprocess_with_probs(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ):
        """torchvision's ``postprocess_detections``, also returning ``probs [N, C + 1]`` per image."""
        device = class_logits.device
        num_classes = class_logits.shape[-1]
        boxes_per_image = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)
        pred_probs = torch.softmax(class_logits, -1)
        out_boxes, out_scores, out_labels, out_probs = [], [], [], []
        for boxes, probs, image_shape in zip(
            pred_boxes.split(boxes_per_image, 0), pred_probs.split(boxes_per_image, 0), image_shapes
        ):
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
            n_rois = boxes.shape[0]
            roi_index = torch.arange(n_rois, device=device).view(-1, 1).expand(n_rois, num_classes)
            labels = torch.arange(num_classes, device=device).view(1, -1).expand_as(probs)
            # Drop the background column, flatten (RoI, class) pairs into candidates.
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = probs[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            roi_index = roi_index[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            keep = keep[box_ops.batched_nms(boxes[keep], scores[keep], labels[keep], self.nms_thresh)]
            keep = keep[: self.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_labels.append(labels[keep])
            out_probs.append(probs[roi_index[keep]])
        return out_boxes, out_scores, out_labels, out_probs


# ---------------------------------------------------------------------------------------- builders
def _common_kwargs(cfg: ModelConfig) -> dict:
    return dict(
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.box_score_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
    )


def _torchvision_detector(builder, cfg: ModelConfig, num_classes: int) -> FasterRCNN:
    kwargs = {**_common_kwargs(cfg), **cfg.extra}
    if cfg.weights:
        # Pretrained COCO heads have 91 classes: build with them, then replace the predictor.
        model = builder(weights=cfg.weights, trainable_backbone_layers=cfg.trainable_backbone_layers, **kwargs)
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes + 1)
        return model
    return builder(
        weights=None,
        weights_backbone=cfg.weights_backbone,
        num_classes=num_classes + 1,
        trainable_backbone_layers=cfg.trainable_backbone_layers if cfg.weights_backbone else None,
        **kwargs,
    )


@register_model("fasterrcnn_resnet50_fpn")
def _r50_fpn(cfg: ModelConfig, num_classes: int) -> FasterRCNN:
    return _torchvision_detector(torchvision.models.detection.fasterrcnn_resnet50_fpn, cfg, num_classes)


@register_model("fasterrcnn_mobilenet_v3_large_fpn")
def _mnv3_fpn(cfg: ModelConfig, num_classes: int) -> FasterRCNN:
    return _torchvision_detector(torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn, cfg, num_classes)


@register_model("resnet18_fpn_light")
def _r18_fpn_light(cfg: ModelConfig, num_classes: int) -> FasterRCNN:
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if cfg.weights:
        raise AlodError("resnet18_fpn_light has no pretrained detector weights; use weights_backbone or weights_path")
    trunk = torchvision.models.resnet18(weights=cfg.weights_backbone, norm_layer=nn.BatchNorm2d)
    # Layers 1-3 give strides 4, 8, 16; FPN's max-pool adds 32. Layer 4 (stride 32, 512 channels)
    # costs more than it helps for objects of 5-100 px. The FPN width matters most for CPU time:
    # its 3x3 convolutions (and the RPN's) at stride 4 cost more than the whole ResNet-18 trunk at 256.
    backbone = BackboneWithFPN(
        trunk,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2"},
        in_channels_list=[64, 128, 256],
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    n_levels = 4
    if len(cfg.anchor_sizes) != n_levels:
        raise AlodError(f"model.anchor_sizes needs {n_levels} sizes (one per FPN level), got {list(cfg.anchor_sizes)}")
    anchor_generator = AnchorGenerator(
        sizes=tuple((int(s),) for s in cfg.anchor_sizes),
        aspect_ratios=(tuple(float(a) for a in cfg.aspect_ratios),) * n_levels,
    )
    box_roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, cfg.box_head_width)
    box_predictor = FastRCNNPredictor(cfg.box_head_width, num_classes + 1)
    return FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchor_generator,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        **_common_kwargs(cfg),
        **cfg.extra,
    )


def build_detector(cfg: ModelConfig, *, num_classes: int) -> FasterRCNN:
    """Build the preset ``cfg.name`` for ``num_classes`` foreground classes.

    The returned model's inference output has ``probs [N, num_classes + 1]`` per image
    (see :class:`ProbRoIHeads`). ``cfg.weights_path`` is loaded last, strictly.
    """
    if cfg.name not in MODEL_PRESETS:
        raise AlodError(f"unknown model.name {cfg.name!r}; choose one of {sorted(MODEL_PRESETS)}")
    try:
        model = MODEL_PRESETS[cfg.name](cfg, num_classes)
    except (OSError, RuntimeError) as e:
        if cfg.weights or cfg.weights_backbone:
            raise AlodError(
                f"could not load torchvision weights for {cfg.name} ({e}). Pretrained weights need "
                "internet the first time; offline, set model.weights_path to a local file instead."
            ) from e
        raise
    model.roi_heads = ProbRoIHeads.from_roi_heads(model.roi_heads)
    if cfg.weights_path:
        load_weights(model, cfg.weights_path)
    return model


def load_weights(model: nn.Module, path: str) -> None:
    """Load a plain state dict or an alod checkpoint (``{"model": state_dict, ...}``).

    Only tensors and plain values are read (:func:`alod.utils.load_torch_file`): nothing in the file
    is executed.
    """
    state = load_torch_file(path, what="model.weights_path")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise AlodError(f"model.weights_path {path}: expected a state dict, got {type(state).__name__}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        first = str(e).strip().splitlines()
        raise AlodError(
            f"model.weights_path {path}: weights do not fit this model ({first[-1].strip() if first else e}). "
            "Was it saved for another model.name or class count?"
        ) from None
    if missing or unexpected:
        raise AlodError(
            f"{path}: weights do not fit model; missing {len(missing)} keys (e.g. {missing[:3]}), "
            f"unexpected {len(unexpected)} (e.g. {unexpected[:3]}). Was it saved for another model.name or class count?"
        )
