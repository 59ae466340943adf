"""Configuration: YAML files (with a ``_base_`` include) into frozen dataclasses.

Only this module reads YAML. Everything else takes explicit keyword arguments or one of these
dataclasses. A leaf: it imports nothing from alod but the error type. It checks what it can see
alone (types, ranges, settings that contradict each other); the names a registry owns (strategies,
selectors, oracles, data kinds and label formats) are checked by each registry's own function,
all called from :func:`alod.stages.setup.check_config` before any work. ``--set a.b=c`` overrides are parsed as YAML scalars (``--set train.lr=0.02``,
``--set model.anchor_sizes=[8,16,32,64]``). Unknown keys are errors that list the valid ones, so a
typo never silently falls back to a default. The resolved config is written next to every run.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alod.utils import AlodError


@dataclass(frozen=True)
class RunConfig:
    name: str = "demo"
    out_dir: str = "runs"  # runs/<name>/: config, checkpoints, schedule, state, metrics
    tb_dir: str = "tensor_logs"  # tensor_logs/<name>/: TensorBoard event files
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """``model:`` section of the YAML."""

    name: str = "resnet18_fpn_light"
    weights: str | None = None  # None (random init) or "DEFAULT" (torchvision, needs internet)
    weights_backbone: str | None = None  # e.g. "DEFAULT" for ImageNet backbone weights
    weights_path: str | None = None  # local state dict / alod checkpoint
    min_size: int = 192  # GeneralizedRCNNTransform resize (shorter side)
    max_size: int = 320
    anchor_sizes: tuple[int, ...] = (12, 24, 48, 96)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 600
    rpn_post_nms_top_n_test: int = 300
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 64
    box_head_width: int = 256
    fpn_channels: int = 256  # resnet18_fpn_light only: width of the FPN and RPN convolutions
    trunk_width: int = 64  # resnet18_fpn_light only: channels of layer1 (2x, 4x in layers 2, 3); 64 = ResNet-18
    # Bilinear samples per RoI bin side in the box head's RoIAlign (0: adaptive, ceil(RoI size / 7)).
    # 2 is torchvision's. 1 takes a quarter of the samples, and roi_align's backward is single-threaded
    # on a CPU: the demo's cycles ran 1.06x, its whole run 1.13x faster (README "Speed and cost")
    roi_sampling_ratio: int = 2
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 100
    trainable_backbone_layers: int = 5
    # channels_last weights (NHWC convolutions): 1.21x the bf16 training speed of R50-FPN on an H100,
    # 0.81x the fp32 speed of the demo preset on a CPU (README "Speed and cost"), so off by default
    channels_last: bool = False
    extra: dict = field(default_factory=dict)  # passed to torchvision's builder as keyword arguments


@dataclass(frozen=True)
class SyntheticConfig:
    """What the built-in street-scene generator draws (:func:`alod.data.synthetic.generate_dataset`).

    The one declaration of the built-in dataset's sizes; the defaults are the demo's. Image ``i`` of
    a split depends only on ``(seed, split, i)``, the size and ``max_objects``.
    """

    seed: int = 0
    num_train: int = 600
    num_val: int = 120
    width: int = 320
    height: int = 192
    max_objects: int = 14
    jpeg_quality: int = 90


@dataclass(frozen=True)
class DataConfig:
    """Where the images and labels are.

    ``kind: synthetic`` generates the built-in dataset into ``root`` on first use. ``kind: bdd100k``
    expects the standard layout under ``root`` (``images/100k/{train,val}``,
    ``labels/det_20/det_{train,val}.json``); explicit ``*_labels`` / ``*_images`` paths override it
    (e.g. the 2018 ``bdd100k_labels_images_train.json``). ``kind: coco`` needs explicit paths.
    ``kind: voc`` reads Pascal VOC XML: ``*_labels`` an ``ImageSets/Main/<split>.txt`` list (default
    under ``root``) or a folder of XML files, ``*_images`` default ``root/JPEGImages``; ``classes``
    is optional there (label order; default: the training split's sorted names).
    ``kind: yolo`` reads YOLO text labels: ``*_labels`` a folder of ``<image stem>.txt`` files
    (default ``root/labels/<split>``), ``*_images`` the images (default ``root/images/<split>``);
    ``classes`` optional (default: ``classes.txt`` / ``obj.names`` / ``data.yaml`` beside the labels).
    ``kind: folder`` (a new project: images, no labels) lists the training images under
    ``train_images`` (default ``root/images/train``), takes the class names from ``classes``
    (required there, and only there) and evaluates on ``val_labels`` / ``val_images``; checked by
    :func:`alod.data.sources.check_data_config`.
    """

    kind: str = "synthetic"
    root: str = "data/synthetic"
    train_labels: str | None = None
    val_labels: str | None = None
    train_images: str | None = None
    val_images: str | None = None
    format: str = "auto"  # label format: auto, bdd100k, bdd100k_2018, coco, voc, yolo (auto never picks voc or yolo)
    image_size: tuple[int, int] = (1280, 720)  # (width, height) for BDD100K label files
    strict: bool = True  # bad label records: fail (True) or skip and report (False)
    verify_images: bool = False
    classes: tuple[str, ...] | None = None  # kind folder (required), voc and yolo (optional): class names in label order
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by pretraining and every cycle's retraining."""

    batch_size: int = 8  # per process
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1  # one-cycle schedule: linear warm-up share of all steps
    grad_clip_norm: float | None = 5.0
    transforms: str = "hflip"  # named preset, see alod.data.transforms
    num_workers: int = 0
    eval_batch_size: int = 8
    # bf16 autocast: false; true or gpu (on GPUs only); all (on CPUs too: pays only with native bf16,
    # AVX-512 BF16 or AMX; README "Speed")
    amp: bool | str = False
    min_steps: int = 0  # lower bound on optimizer steps per run (small pools need more passes)


@dataclass(frozen=True)
class PretrainConfig:
    fraction: float = 0.7  # fixed partition of the training set used to train the scorer
    seed: int = 0  # partition seed (recorded in the run)
    epochs: int = 4
    # Which labeled images the scorer trains on: "partition" (a seeded `fraction` of the training set,
    # as the original project; those labels are extra to the cycles' budget) or "cycle1" (exactly the
    # schedule's cycle-1 draw, which every run of the seed also labels: no extra labels, as `alod
    # compare` uses it so that the scorer's labels are charged).
    images: str = "partition"


@dataclass(frozen=True)
class ScoreConfig:
    """``make_batches.py``: how every training image is scored."""

    strategy: str = "entropy"  # a name in alod.strategies.STRATEGIES
    # Parameters per strategy, e.g. {entropy: {aggregate: max}, box_count: {score_threshold: 0.3}}.
    # Keyed by strategy so that switching score.strategy from the command line picks the new
    # strategy's own parameters; a strategy without an entry runs with its defaults.
    params: dict = field(default_factory=dict)
    batch_size: int = 16  # images per forward pass, per process
    num_workers: int = 0
    shard_size: int = 256  # images per score shard (unit of resume)
    # Which images the precomputed schedule ranks: "all" training images (as the original project,
    # including the 70% the scorer trained on) or only those the scorer did not train on ("unseen").
    pool: str = "all"
    amp: bool | str = False  # as train.amp
    # Fraction in (0, 1] of each arrival batch that is scored: a seeded sample of batches 2.. (batch 1,
    # a random draw, is not scored); cycle n takes the top of batch n's sample. The adaptive selector
    # scores the same fraction of the unlabeled images each cycle. 1.0: every image (the original).
    subset: float = 1.0
    # Diversity within a cycle's batch (alod.cycle.batch_rules): topk (the original), kmeanspp (k-means++ seeding
    # weighted by score) or coreset (greedy k-center from the best score), over the top batch_pool x
    # query_size candidates, with the scorer's per-image embeddings.
    batch: str = "topk"
    batch_pool: int = 3
    # Per-class weights on the per-box uncertainty: none, or difficulty (1 - AP50 of the current model,
    # clipped to [0.05, 1]; alod.strategies.difficulty_weights). Adaptive selection measures that AP on
    # the labeled pool (the reported validation split must not steer selection); the precomputed
    # schedule reads the scorer's metrics.json beside its checkpoint (its validation split).
    class_weights: str = "none"

    def strategy_params(self) -> dict:
        """The configured parameters of ``strategy`` (without its defaults): what the schedule records."""
        return dict(self.params.get(self.strategy) or {})


@dataclass(frozen=True)
class ScheduleConfig:
    batch_size: int = 5000  # images per ranked batch
    query_size: int = 1000  # images labeled per cycle
    num_batches: int | None = None  # None: as many full batches as the pool allows
    seed: int = 0  # draws cycle 1's random images
    # What a cycle spends: images (query_size each) or boxes (images in rank order until the model's
    # predicted boxes, those with score >= box_threshold, reach box_budget; at least one image).
    budget: str = "images"
    box_budget: int | None = None
    box_threshold: float = 0.5  # as box_count's default score_threshold
    # How a box budget counts an image's boxes before it is labeled: count (its predicted boxes with
    # score >= box_threshold) or calibrated (its expected count, the sum of its predicted boxes'
    # scores, rescaled so the candidates' mean equals the labeled pool's true boxes per image;
    # cycles.selector: adaptive only). docs/compare.md#selection-options has the measured error.
    box_estimate: str = "count"


@dataclass(frozen=True)
class CyclesConfig:
    epochs: int = 50
    num_cycles: int | None = None  # None: every cycle in the schedule
    num_vis_images: int = 4  # validation images drawn with predictions into TensorBoard
    selector: str = "precomputed"  # step 1, which images: a name in alod.cycle.selection.SELECTORS
    oracle: str = "simulated"  # step 2, who labels them: a name in alod.cycle.oracles.ORACLES
    # step 3, from what: scratch (a fresh detector every cycle, as the original) or warm (cycle n
    # starts from cycle n - 1's final weights; cycle 1 from scratch)
    init: str = "scratch"
    # step 3, for how long: epochs (all cycles.epochs) or plateau (evaluate on the validation split
    # every eval_every epochs, stop after patience evaluations without a gain, keep the best weights)
    stop: str = "epochs"
    eval_every: int = 1
    patience: int = 2
    # selector random_boxes only: the labeled pool's box count to reach after each cycle (cumulative,
    # one per cycle from cycle 2 on; cycle 1 is the shared random draw). `alod compare` fills it from a
    # strategy's run to get the random baseline at equal boxes.
    box_targets: tuple[int, ...] | None = None
    # oracle simulated_boxes only: the lowest score at which the previous cycle's detections stand as
    # pre-annotations the simulated annotator works from (alod.cycle.actions.ACCEPT, 0.5)
    accept_score: float = 0.5


@dataclass(frozen=True)
class CompareConfig:
    """``alod compare``: what is compared, over which seeds (the protocol in :mod:`alod.compare`)."""

    strategies: tuple[str, ...] = ("entropy", "random")  # random (the baseline) must be among them
    modes: tuple[str, ...] = ("adaptive",)  # precomputed and/or adaptive; random runs in every mode
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    equal_boxes: bool = True  # per strategy run, a random run at the strategy's box count per cycle
    full_seeds: tuple[int, ...] = (0, 1, 2)  # the full-data line, trained with the cycles' recipe
    # Extra "strategies": {NAME: {dotted.key: value}} config overrides applied to every strategy but
    # random, run as "<strategy>+<NAME>" with the same seeds and pairing (alod.compare).
    variants: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cycles: CyclesConfig = field(default_factory=CyclesConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))


# ------------------------------------------------------------------------------------- conversion
def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise AlodError(f"config {where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except AlodError as e:
                errors.append(str(e))
        raise AlodError(errors[0] if errors else f"config {where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise AlodError(f"config {where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise AlodError(f"config {where}: expected {len(args)} values, got {list(value)}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise AlodError(f"config {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise AlodError(f"config {where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AlodError(f"config {where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AlodError(f"config {where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise AlodError(f"config {where}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls, data: dict, where: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AlodError(f"config {where or '<root>'}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise AlodError(f"config {path}: _base_ include cycle")
    if not path.is_file():
        raise AlodError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise AlodError(f"config {path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise AlodError(f"config {path}: the top level must be a mapping")
    base = data.pop("_base_", None)
    if base:
        data = _deep_merge(_read_yaml(path.parent / base, seen + (path,)), data)
    return data


def parse_overrides(items: list[str] | None) -> dict:
    """``["train.lr=0.02", "run.name=x"]`` → nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise AlodError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (default: built-in defaults), apply ``--set`` overrides, check types and ranges
    (:func:`validate`). The registries' names are checked by :func:`alod.stages.setup.check_config`
    (:func:`alod.stages.setup.load_checked_config` does both)."""
    data = _read_yaml(Path(path)) if path else {}
    data = _deep_merge(data, parse_overrides(overrides))
    cfg = _from_dict(Config, data)
    validate(cfg)
    return cfg


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _all_positive(v) -> bool:
    return len(v) > 0 and all(x > 0 for x in v)


# (dotted key, check, what is allowed): every numeric setting whose wrong value would otherwise fail
# late (a ZeroDivisionError in a scheduler, an empty DataLoader) or silently do something else.
_RANGES = (
    ("run.seed", _non_negative, ">= 0"),
    ("data.image_size", _all_positive, "two positive integers (width, height)"),
    ("data.synthetic.num_train", _positive, "> 0"),
    ("data.synthetic.num_val", _positive, "> 0"),
    ("data.synthetic.width", lambda v: v >= 32, ">= 32 pixels"),
    ("data.synthetic.height", lambda v: v >= 32, ">= 32 pixels"),
    ("data.synthetic.max_objects", _positive, "> 0"),
    ("data.synthetic.jpeg_quality", lambda v: 1 <= v <= 100, "in [1, 100]"),
    ("model.min_size", _positive, "> 0"),
    ("model.max_size", _positive, "> 0"),
    ("model.anchor_sizes", _all_positive, "a non-empty list of positive sizes"),
    ("model.aspect_ratios", _all_positive, "a non-empty list of positive ratios"),
    ("model.rpn_pre_nms_top_n_train", _positive, "> 0"),
    ("model.rpn_post_nms_top_n_train", _positive, "> 0"),
    ("model.rpn_pre_nms_top_n_test", _positive, "> 0"),
    ("model.rpn_post_nms_top_n_test", _positive, "> 0"),
    ("model.rpn_batch_size_per_image", _positive, "> 0"),
    ("model.box_batch_size_per_image", _positive, "> 0"),
    ("model.box_head_width", _positive, "> 0"),
    ("model.fpn_channels", _positive, "> 0"),
    ("model.trunk_width", _positive, "> 0"),
    ("model.roi_sampling_ratio", _non_negative, ">= 0"),
    ("model.box_score_thresh", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("model.box_detections_per_img", _positive, "> 0"),
    ("model.trainable_backbone_layers", lambda v: 0 <= v <= 5, "in [0, 5]"),
    ("train.batch_size", _positive, "> 0"),
    ("train.lr", _positive, "> 0"),
    ("train.momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("train.weight_decay", _non_negative, ">= 0"),
    ("train.warmup_fraction", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("train.grad_clip_norm", lambda v: v is None or v > 0, "null (no clipping) or > 0"),
    ("train.num_workers", _non_negative, ">= 0"),
    ("train.eval_batch_size", _positive, "> 0"),
    ("train.min_steps", _non_negative, ">= 0"),
    ("pretrain.fraction", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    ("pretrain.epochs", _positive, ">= 1"),
    ("pretrain.images", lambda v: v in ("partition", "cycle1"), "partition or cycle1"),
    ("cycles.box_targets", lambda v: v is None or (len(v) > 0 and all(x >= 0 for x in v)),
     "null or a non-empty list of box counts >= 0"),
    ("cycles.accept_score", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("compare.seeds", lambda v: len(v) > 0 and len(set(v)) == len(v) and all(x >= 0 for x in v),
     "a non-empty list of distinct seeds >= 0"),
    ("compare.full_seeds", lambda v: len(set(v)) == len(v) and all(x >= 0 for x in v),
     "a list of distinct seeds >= 0 (empty: no full-data line)"),
    ("score.batch_size", _positive, "> 0"),
    ("score.num_workers", _non_negative, ">= 0"),
    ("score.shard_size", _positive, "> 0"),
    ("score.pool", lambda v: v in ("all", "unseen"), "all or unseen"),
    ("score.subset", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    ("score.batch_pool", _positive, ">= 1"),
    ("score.class_weights", lambda v: v in ("none", "difficulty"), "none or difficulty"),
    ("schedule.budget", lambda v: v in ("images", "boxes"), "images or boxes"),
    ("schedule.box_budget", lambda v: v is None or v > 0, "null or > 0 boxes per cycle"),
    ("schedule.box_threshold", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("schedule.box_estimate", lambda v: v in ("count", "calibrated"), "count or calibrated"),
    ("schedule.batch_size", _positive, "> 0"),
    ("schedule.query_size", _positive, "> 0"),
    ("schedule.num_batches", lambda v: v is None or v > 0, "null (every batch) or > 0"),
    ("cycles.epochs", _positive, ">= 1"),
    ("cycles.num_cycles", lambda v: v is None or v > 0, "null (every cycle) or > 0"),
    ("cycles.num_vis_images", _non_negative, ">= 0"),
    ("cycles.init", lambda v: v in ("scratch", "warm"), "scratch or warm"),
    ("cycles.stop", lambda v: v in ("epochs", "plateau"), "epochs or plateau"),
    ("cycles.eval_every", _positive, ">= 1"),
    ("cycles.patience", _positive, ">= 1"),
    ("train.amp", lambda v: v in (False, True, "gpu", "all"), "false, true, gpu or all"),
    ("score.amp", lambda v: v in (False, True, "gpu", "all"), "false, true, gpu or all"),
)


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Config) -> None:
    """Settings that cannot work are refused when the config loads, not hours into a run.

    Only what this module can judge alone; the registries' checks follow in
    :func:`alod.stages.setup.check_config`.
    """
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise AlodError(f"config: {msg}")

    for key, ok, allowed in _RANGES:
        value = _get(cfg, key)
        need(ok(value), f"{key} must be {allowed}, got {value!r}")
    need(
        cfg.schedule.batch_size >= cfg.schedule.query_size,
        f"schedule.batch_size ({cfg.schedule.batch_size}) must be >= schedule.query_size ({cfg.schedule.query_size}): "
        "a cycle takes its images from one batch",
    )
    need(cfg.model.max_size >= cfg.model.min_size,
         f"model.max_size ({cfg.model.max_size}) must be >= model.min_size ({cfg.model.min_size})")
    need(cfg.run.name not in ("", ".", "..") and "/" not in cfg.run.name and "\\" not in cfg.run.name,
         f"run.name must be a plain folder name (no '/', not '..'), got {cfg.run.name!r}: it names runs/<name>/")
    _validate_variants(cfg, need)


#: What a comparison fixes for every run of a seed (names, seeds, pairing, the data): a variant may
#: not override these.
VARIANT_FIXED = ("run", "compare", "data", "score.strategy", "cycles.selector", "cycles.box_targets",
                 "schedule.seed", "schedule.batch_size", "schedule.query_size", "schedule.num_batches",
                 "pretrain.seed", "pretrain.images")


def nest_overrides(overrides: dict) -> dict:
    """``{"score.batch": "kmeanspp"}`` (dotted keys, nested mappings, or both) as a nested dict."""
    out: dict = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            value = nest_overrides(value)
        for part in reversed(str(key).split(".")[1:]):
            value = {part: value}
        out = _deep_merge(out, {str(key).split(".")[0]: value})
    return out


def dotted_keys(nested: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in nested.items():
        out += dotted_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [prefix + k]
    return out


def apply_overrides(cfg: Config, overrides: dict, *, where: str = "overrides") -> Config:
    """``cfg`` with ``overrides`` (dotted or nested keys, typed values) applied, converted and
    validated as :func:`load_config` does; errors are prefixed with ``where``."""
    data = _deep_merge(cfg.to_dict(), nest_overrides(overrides))
    try:
        out = _from_dict(Config, data)
        validate(out)
    except AlodError as e:
        raise AlodError(f"{where}: {e}") from None
    return out


def _validate_variants(cfg: Config, need) -> None:
    """``compare.variants``: ``{NAME: {key: value}}``, names usable in run names, keys not fixed by
    the comparison, values that load (each variant applied to this config is validated)."""

    for name, table in cfg.compare.variants.items():
        at = f"compare.variants.{name}"
        need(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None,
             f"{at}: a variant name is letters, digits, '_' or '-' (it goes into run names)")
        need(isinstance(table, dict) and len(table) > 0, f"{at}: expected a non-empty mapping of key: value")
        for key in dotted_keys(nest_overrides(table)):
            need(not any(key == f or key.startswith(f + ".") for f in VARIANT_FIXED),
                 f"{at}: {key} is fixed by the comparison (same for every run of a seed); a variant may not set it")
        base = dataclasses.replace(cfg, compare=dataclasses.replace(cfg.compare, variants={}))
        apply_overrides(base, table, where=at)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
