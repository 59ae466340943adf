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

Monte Carlo dropout inference (:func:`predict_mc`, used by the ``mc_dropout`` strategy) runs the
backbone, the RPN and the RoI pooling once per image and only the box head ``T`` times with dropout;
see :meth:`ProbRoIHeads.forward_mc` for where the dropout goes and why.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.resnet import BasicBlock
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from alod.utils import AlodError, Registry, load_torch_file

#: ``model.name`` -> ``preset(s, num_classes) -> FasterRCNN``, ``s`` holding :func:`build_detector`'s
#: keyword arguments as attributes.
MODEL_PRESETS: Registry[Callable[..., FasterRCNN]] = Registry("model preset")


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

    def forward_mc(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        *,
        sampling: MCSampling,
        keys: Sequence[int],
    ) -> list[dict[str, Tensor]]:
        """Inference with ``T = sampling.passes`` Monte Carlo dropout passes of the box head.

        The RoIs are pooled once; the box head and the predictor then run ``T`` times over the same
        proposals with dropout (probability ``p = sampling.dropout``, kept units scaled by
        ``1 / (1 - p)`` as ``F.dropout`` does). Detections come from the *mean* over the passes of
        the class probabilities and of the box regression, through the same post-processing
        (score threshold, small boxes, per-class NMS, detection cap) as :meth:`forward`.

        Where the dropout goes: with torchvision's ``TwoMLPHead`` (every preset here), on the
        input of ``fc7`` and on the input of the predictor, i.e. after each hidden ReLU, where the
        original Fast R-CNN VGG-16 head had its dropout layers (fc6-relu-drop-fc7-relu-drop). Not on
        the pooled features: those are ``C x 7 x 7`` wide (3,136 for the demo preset, 12,544 for
        R50-FPN), spatially correlated, and would force ``T`` runs of ``fc6``, the largest layer,
        while ``fc6`` before any dropout is deterministic and computed once. Any other box head is
        run once and the dropout is applied to its output (the predictor's input).

        Masks are drawn per image from a generator seeded by ``(sampling.seed, keys[i])`` on the
        features' device, so an image's samples do not depend on the batch it is in (batch size,
        shards, processes, resume). CPU and CUDA generators draw different (each reproducible) masks.

        Args:
            features, proposals, image_shapes: as for :meth:`forward` (``proposals[i]: Tensor[R_i, 4]``).
            keys: one non-negative integer per image (e.g. its dataset position).

        Returns:
            Per image ``boxes [N, 4]``, ``labels [N]``, ``scores [N]``, ``probs [N, C + 1]`` (the mean
            of the passes' softmax for the detection's RoI) and ``mc_probs [N, T, C + 1]`` (each
            pass's softmax for that RoI; ``mc_probs.mean(1) == probs`` up to rounding).
        """
        if len(keys) != len(proposals):
            raise AlodError(f"forward_mc: {len(keys)} keys for {len(proposals)} images; give one key per image")
        passes, p = sampling.passes, sampling.dropout
        counts = [len(b) for b in proposals]
        pooled = self.box_roi_pool(features, proposals, image_shapes)
        gens = [sampling.generator(k, pooled.device) for k in keys]

        def drop(x: Tensor) -> Tensor:
            """``x [1 or T, R, W]`` -> ``[T, R, W]`` with per-image dropout masks."""
            if p == 0.0:
                return x.expand(passes, *x.shape[1:])
            width = x.shape[-1]
            keep = torch.cat(
                [torch.rand((passes, n, width), generator=g, device=x.device) >= p for g, n in zip(gens, counts)], 1
            )
            return x * keep.to(x.dtype) * (1.0 / (1.0 - p))

        head = self.box_head
        if isinstance(head, TwoMLPHead):
            hidden = F.relu(head.fc6(pooled.flatten(start_dim=1)))  # no dropout before it: computed once
            x = drop(F.relu(head.fc7(drop(hidden[None]))))
        else:
            x = drop(head(pooled).flatten(start_dim=1)[None])
        class_logits, box_regression = self.box_predictor(x.flatten(0, 1))
        n_rois = pooled.shape[0]
        pass_probs = torch.softmax(class_logits, -1).view(passes, n_rois, -1)  # [T, R, C + 1]
        mean_regression = box_regression.view(passes, n_rois, -1).mean(0)
        boxes, scores, labels, probs, rois = self._postprocess(pass_probs.mean(0), mean_regression, proposals,
                                                               image_shapes)
        result = []
        for i, image_probs in enumerate(pass_probs.split(counts, 1)):
            result.append({"boxes": boxes[i], "labels": labels[i], "scores": scores[i], "probs": probs[i],
                           "mc_probs": image_probs[:, rois[i]].transpose(0, 1).contiguous()})
        return result

    def postprocess_with_probs(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ):
        """torchvision's ``postprocess_detections``, also returning ``probs [N, C + 1]`` per image."""
        boxes, scores, labels, probs, _ = self._postprocess(
            torch.softmax(class_logits, -1), box_regression, proposals, image_shapes
        )
        return boxes, scores, labels, probs

    def _postprocess(
        self,
        pred_probs: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ):
        """Post-processing from class probabilities ``pred_probs [R, C + 1]`` (all images' RoIs).

        Returns per image boxes, scores, labels, probs and the index (within the image's RoIs) of
        the RoI each detection came from.
        """
        device = pred_probs.device
        num_classes = pred_probs.shape[-1]
        boxes_per_image = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)
        out_boxes, out_scores, out_labels, out_probs, out_rois = [], [], [], [], []
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
            out_rois.append(roi_index[keep])
        return out_boxes, out_scores, out_labels, out_probs, out_rois


# ------------------------------------------------------------------------- Monte Carlo dropout
@dataclass(frozen=True)
class MCSampling:
    """How :func:`predict_mc` samples: ``passes`` (T >= 1) box-head passes with dropout
    probability ``dropout`` in [0, 1), masks seeded by ``seed`` (>= 0) and each image's key."""

    passes: int = 10
    dropout: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise AlodError(f"MC dropout: passes must be an integer >= 1, got {self.passes!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise AlodError(f"MC dropout: dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise AlodError(f"MC dropout: seed must be an integer >= 0, got {self.seed!r}")

    def generator(self, key: int, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator on ``device`` seeded from ``(seed, key)`` alone."""
        state = int(np.random.SeedSequence([self.seed, int(key)]).generate_state(1)[0])
        return torch.Generator(device=device).manual_seed(state)


@torch.no_grad()
def predict_mc(
    model: FasterRCNN,
    images: list[Tensor],
    *,
    passes: int = 10,
    dropout: float = 0.5,
    seed: int = 0,
    keys: Sequence[int] | None = None,
) -> list[dict[str, Tensor]]:
    """Monte Carlo dropout inference: the backbone and the RPN once, the box head ``passes`` times.

    Args:
        model: a detector from :func:`build_detector`, in eval mode.
        images: ``Tensor[3, H, W]`` each, values in 0-1 (as for ``model(images)``).
        passes, dropout, seed: see :class:`MCSampling` and :meth:`ProbRoIHeads.forward_mc`.
        keys: one non-negative integer per image that, with ``seed``, fixes its dropout masks
            (default ``0..len(images) - 1``); pass dataset positions to make an image's result
            independent of the batch it is in.

    Returns:
        Per image the keys of ``model(images)`` (boxes in the original image's pixels, from the mean
        over passes of the class probabilities and box regression) plus ``mc_probs [N, T, C + 1]``.
    """
    sampling = MCSampling(passes=passes, dropout=float(dropout), seed=seed)
    if not isinstance(getattr(model, "roi_heads", None), ProbRoIHeads):
        raise AlodError("predict_mc needs a detector from alod.models.build_detector (ProbRoIHeads)")
    if model.training:
        raise AlodError("predict_mc runs inference: call model.eval() first")
    keys = list(range(len(images))) if keys is None else [int(k) for k in keys]
    original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features)
    detections = model.roi_heads.forward_mc(features, proposals, image_list.image_sizes, sampling=sampling, keys=keys)
    return model.transform.postprocess(detections, image_list.image_sizes, original_sizes)


# ---------------------------------------------------------------------------------------- builders
def _common_kwargs(cfg: SimpleNamespace) -> dict:
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


def _torchvision_detector(builder, cfg: SimpleNamespace, num_classes: int) -> FasterRCNN:
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


@MODEL_PRESETS.register("fasterrcnn_resnet50_fpn")
def _r50_fpn(cfg: SimpleNamespace, num_classes: int) -> FasterRCNN:
    return _torchvision_detector(torchvision.models.detection.fasterrcnn_resnet50_fpn, cfg, num_classes)


@MODEL_PRESETS.register("fasterrcnn_mobilenet_v3_large_fpn")
def _mnv3_fpn(cfg: SimpleNamespace, num_classes: int) -> FasterRCNN:
    return _torchvision_detector(torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn, cfg, num_classes)


def _narrow_resnet18_trunk(width: int) -> nn.Module:
    """ResNet-18's stem and layers 1-3 with ``width``, ``2 * width``, ``4 * width`` channels
    (64 is ResNet-18's own), initialised as torchvision initialises its ResNets. Children are in
    forward order, which is what ``BackboneWithFPN``'s layer getter runs."""
    def layer(inp: int, out: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or inp != out:
            down = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        return nn.Sequential(BasicBlock(inp, out, stride, down), BasicBlock(out, out))

    trunk = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, width, 7, 2, 3, bias=False)), ("bn1", nn.BatchNorm2d(width)),
        ("relu", nn.ReLU(inplace=True)), ("maxpool", nn.MaxPool2d(3, 2, 1)),
        ("layer1", layer(width, width, 1)), ("layer2", layer(width, 2 * width, 2)),
        ("layer3", layer(2 * width, 4 * width, 2)),
    ]))
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return trunk


@MODEL_PRESETS.register("resnet18_fpn_light")
def _r18_fpn_light(cfg: SimpleNamespace, num_classes: int) -> FasterRCNN:
    if cfg.weights:
        raise AlodError("resnet18_fpn_light has no pretrained detector weights; use weights_backbone or weights_path")
    w = cfg.trunk_width
    if w == 64:
        trunk = torchvision.models.resnet18(weights=cfg.weights_backbone, norm_layer=nn.BatchNorm2d)
    elif cfg.weights_backbone:
        raise AlodError(f"model.weights_backbone needs ResNet-18's own width, model.trunk_width: 64 (got {w})")
    else:
        trunk = _narrow_resnet18_trunk(w)
    # Layers 1-3 give strides 4, 8, 16; FPN's max-pool adds 32. Layer 4 (stride 32, 512 channels)
    # costs more than it helps for objects of 5-100 px. The FPN width matters most for CPU time:
    # its 3x3 convolutions (and the RPN's) at stride 4 cost more than the whole ResNet-18 trunk at 256.
    backbone = BackboneWithFPN(
        trunk,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2"},
        in_channels_list=[w, 2 * w, 4 * w],
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
    box_roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7,
                                      sampling_ratio=cfg.roi_sampling_ratio)
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


def build_detector(
    *,
    num_classes: int,
    name: str = "resnet18_fpn_light",
    weights: str | None = None,
    weights_backbone: str | None = None,
    weights_path: str | None = None,
    min_size: int = 192,
    max_size: int = 320,
    anchor_sizes: Sequence[int] = (12, 24, 48, 96),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    rpn_pre_nms_top_n_train: int = 600,
    rpn_post_nms_top_n_train: int = 300,
    rpn_pre_nms_top_n_test: int = 600,
    rpn_post_nms_top_n_test: int = 300,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 64,
    box_head_width: int = 256,
    fpn_channels: int = 256,
    trunk_width: int = 64,
    roi_sampling_ratio: int = 2,
    box_score_thresh: float = 0.05,
    box_detections_per_img: int = 100,
    trainable_backbone_layers: int = 5,
    channels_last: bool = False,
    extra: dict | None = None,
) -> FasterRCNN:
    """Build the preset ``name`` for ``num_classes`` foreground classes.

    Every keyword is a field of the ``model:`` YAML section (:class:`alod.config.ModelConfig`, whose
    defaults these equal; ``tests/test_models.py`` checks it), so a stage calls
    ``build_detector(num_classes=n, **dataclasses.asdict(cfg.model))``. ``extra`` goes to
    torchvision's builder as keyword arguments. The returned model's inference output has
    ``probs [N, num_classes + 1]`` per image (see :class:`ProbRoIHeads`). ``weights_path`` is loaded
    last, strictly.

    Raises:
        AlodError: an unknown ``name``, weights that cannot be fetched or do not fit.
    """
    s = SimpleNamespace(**{k: v for k, v in locals().items() if k != "num_classes"})
    s.extra = dict(extra or {})
    preset = MODEL_PRESETS.get(name, where="model.name")
    try:
        model = preset(s, num_classes)
    except (OSError, RuntimeError) as e:
        if weights or weights_backbone:
            raise AlodError(
                f"could not load torchvision weights for {name} ({e}). Pretrained weights need "
                "internet the first time; offline, set model.weights_path to a local file instead."
            ) from e
        raise
    # torchvision's presets build their RoIAlign with sampling ratio 2; it is read at every forward.
    model.roi_heads.box_roi_pool.sampling_ratio = roi_sampling_ratio
    model.roi_heads = ProbRoIHeads.from_roi_heads(model.roi_heads)
    if weights_path:
        load_weights(model, weights_path)
    if channels_last:
        # Weights in NHWC make every convolution run NHWC (the batched images follow the first one);
        # load_state_dict copies into these tensors, so checkpoints load either way.
        model = model.to(memory_format=torch.channels_last)
    return model


def load_checkpoint(path: str | Path) -> dict:
    """Read an alod checkpoint (tensors and plain values only: nothing in the file is executed).

    Returns:
        The checkpoint dict: ``model`` (a state dict) and, from training, ``optimizer``, ``scheduler``,
        ``epoch``, ``epochs``, ``total_steps``, ``config``, ``extra``.

    Raises:
        AlodError: missing, unreadable, or holding more than tensors and plain values; or not an
            alod checkpoint (no ``model`` state dict).
    """
    state = load_torch_file(path, what="checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise AlodError(f"checkpoint {path} is not an alod checkpoint (no 'model' state dict); "
                        "delete it to start this training over, or pass the right file")
    return state


#: The predictor's class-score weight ``[C + 1, W]``: its rows say how many classes a checkpoint has.
_CLASS_SCORE_KEY = "roi_heads.box_predictor.cls_score.weight"


def load_detector(path: str | Path, *, num_classes: int, **model_kwargs) -> FasterRCNN:
    """A detector built with ``model_kwargs`` (:func:`build_detector`'s keywords) holding the weights
    of the alod checkpoint ``path``; on the CPU, in training mode as built.

    The one way scoring, adaptive selection and pre-annotation load a trained detector.

    Raises:
        AlodError: the file is missing, is not an alod checkpoint, was trained for another number of
            classes, or does not fit the model otherwise (another ``model.name`` or width).
    """
    state = load_checkpoint(path)
    weight = state["model"].get(_CLASS_SCORE_KEY)
    if weight is not None and tuple(weight.shape)[:1] != (num_classes + 1,):
        raise AlodError(f"checkpoint {path} was trained for {weight.shape[0] - 1} classes, this dataset has "
                        f"{num_classes}; was it trained on another dataset? Pass the scorer trained for this one")
    model = build_detector(num_classes=num_classes, **model_kwargs)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()
        raise AlodError(f"checkpoint {path} does not fit model {model_kwargs.get('name', 'resnet18_fpn_light')!r} "
                        f"with {num_classes} classes ({first[0] if first else e}); was it trained with another "
                        "config?") from None
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
