"""From the ``data:`` config section to the train / val indexes.

``data.kind`` chooses where images and labels come from, through the registry :data:`DATA_KINDS`:

* ``synthetic``: generate the built-in street scenes into ``root`` on first use, then read them
  with the BDD100K reader (they are written in det_20 layout, at ``data.synthetic``'s size).
* ``bdd100k``: the standard layout under ``root`` (``images/100k/{split}``,
  ``labels/det_20/det_{split}.json``), or explicit ``{split}_labels`` / ``{split}_images``;
  ``data.format`` picks the label format, ``data.image_size`` the frame size.
* ``coco``: explicit ``{split}_labels`` (instances JSON) and ``{split}_images``.

The label format itself (``data.format``) comes from :mod:`alod.data.readers`. Where the index
cache and the problems file go is the caller's choice (the stages pass the run layout's
``cache_dir`` and ``problems_path(split)``); this module knows nothing about run folders.

Nothing here imports torch, so :func:`check_data_config` can run while a config is loaded.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alod.data.index import DetectionIndex
from alod.data.loading import load_index
from alod.data.readers import format_choices
from alod.utils import AlodError

if TYPE_CHECKING:
    # Annotations only: alod.config calls check_data_config, so importing it here at run time
    # would make the two modules import each other.
    from alod.config import DataConfig

SPLITS = ("train", "val")


def _config_image_size(cfg: DataConfig) -> tuple[int, int]:
    return (int(cfg.image_size[0]), int(cfg.image_size[1]))


def _synthetic_image_size(cfg: DataConfig) -> tuple[int, int]:
    # The generator draws every scene at this size; data.image_size is for real BDD100K files.
    return (int(cfg.synthetic.width), int(cfg.synthetic.height))


@dataclass(frozen=True)
class DataKind:
    """One value of ``data.kind``.

    Attributes:
        name: the ``data.kind`` value.
        labels: default label file of a split under ``data.root``, with ``{split}`` for
            ``train`` / ``val``; ``None``: ``data.{split}_labels`` and ``data.{split}_images``
            must both be given.
        images: default image folder of a split under ``data.root`` (as ``labels``).
        label_format: the label format this kind always uses (``data.format`` is then ignored);
            ``None``: ``data.format`` decides.
        image_size: ``(width, height)`` px given to frames whose label file carries no sizes,
            from the config section.
        generated: the data is generated into ``data.root`` by :func:`ensure_synthetic`.
        missing_labels_hint: what to tell the user when a split's label file is not there.
    """

    name: str
    labels: str | None
    images: str | None
    label_format: str | None
    image_size: Callable[[DataConfig], tuple[int, int]]
    generated: bool = False
    missing_labels_hint: str = "check data.root / data.*_labels in the config"


#: ``data.kind`` -> its description. One line per kind.
DATA_KINDS: dict[str, DataKind] = {
    "synthetic": DataKind("synthetic", "labels/det_20/det_{split}.json", "images/100k/{split}", "bdd100k",
                          _synthetic_image_size, generated=True),
    "bdd100k": DataKind("bdd100k", "labels/det_20/det_{split}.json", "images/100k/{split}", None,
                        _config_image_size, missing_labels_hint="see the README section on laying out BDD100K"),
    "coco": DataKind("coco", None, None, None, _config_image_size),
}


def get_data_kind(name: str) -> DataKind:
    """The :class:`DataKind` registered as ``name``; :class:`AlodError` listing the valid ones."""
    kind = DATA_KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise AlodError(f"data.kind must be one of {', '.join(DATA_KINDS)} (got {name!r})")
    return kind


def check_data_config(cfg: DataConfig) -> None:
    """Check the ``data:`` section before anything runs (called by config validation).

    Raises:
        AlodError: one line for an unknown ``kind`` or ``format`` (listing the valid values), or a
            kind that needs explicit ``{split}_labels`` and ``{split}_images`` without them.
    """
    kind = get_data_kind(cfg.kind)
    choices = format_choices()
    if not (isinstance(cfg.format, str) and cfg.format in choices):
        raise AlodError(f"data.format must be one of {', '.join(choices)} (got {cfg.format!r})")
    for split in SPLITS:
        _split_paths(cfg, split, kind)


def _split_paths(cfg: DataConfig, split: str, kind: DataKind) -> tuple[Path, Path]:
    labels = getattr(cfg, f"{split}_labels")
    images = getattr(cfg, f"{split}_images")
    if kind.labels is None:
        if not (labels and images):
            raise AlodError(f"data.kind={kind.name} needs data.{split}_labels and data.{split}_images")
    else:
        root = Path(cfg.root)
        labels = labels or root / kind.labels.format(split=split)
        images = images or root / kind.images.format(split=split)
    return Path(labels), Path(images)


def ensure_synthetic(cfg: DataConfig, *, progress: bool = True) -> None:
    """Generate the built-in dataset if ``cfg.kind`` is a generated kind (``synthetic``) and it is
    not there yet; otherwise do nothing. Call it in the main process before :func:`load_split`."""
    kind = DATA_KINDS.get(cfg.kind) if isinstance(cfg.kind, str) else None
    if kind is None or not kind.generated:
        return
    from alod.data.synthetic import generate_dataset

    generate_dataset(cfg.root, cfg.synthetic, progress=progress)


def load_split(
    cfg: DataConfig,
    split: str,
    *,
    cache_dir: Path | None = None,
    problems_path: Path | None = None,
    log: Callable[[str], object] = print,
) -> DetectionIndex:
    """The index of ``split`` ("train" or "val"). Call :func:`ensure_synthetic` first (main process).

    Args:
        cfg: the ``data:`` section.
        split: ``"train"`` or ``"val"``.
        cache_dir: where parsed indexes are cached (see :mod:`alod.data.loading`); ``None``: no
            cache.
        problems_path: JSON-lines file for every bad record found. Only written when
            ``cfg.strict`` is false (strict loading stops at the first bad record instead).
        log: receives one-line messages.

    Returns:
        The split's :class:`DetectionIndex` (boxes ``float64[M, 4]`` x1, y1, x2, y2 px).

    Raises:
        AlodError: unknown kind, missing explicit paths, a label file that is not there, or bad
            labels (see :func:`alod.data.loading.load_index`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    kind = get_data_kind(cfg.kind)
    labels, images = _split_paths(cfg, split, kind)
    if not labels.is_file():
        raise AlodError(f"{split} labels {labels} not found; {kind.missing_labels_hint}")
    return load_index(
        labels=labels,
        image_root=images,
        fmt=kind.label_format or cfg.format,
        strict=cfg.strict,
        problems_path=None if cfg.strict else problems_path,
        cache_dir=cache_dir,
        image_size=kind.image_size(cfg),
        verify_images=cfg.verify_images,
        log=log,
    )
