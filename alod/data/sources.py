"""From the ``data:`` config section to the train / val indexes.

``kind`` chooses where images and labels come from (a registry, as the YAML names it):

* ``synthetic``: generate the built-in street scenes into ``root`` on first use, then read them
  with the BDD100K reader (they are written in det_20 layout).
* ``bdd100k``: the standard layout under ``root`` (``images/100k/{split}``,
  ``labels/det_20/det_{split}.json``), or explicit ``{split}_labels`` / ``{split}_images``.
* ``coco``: explicit ``{split}_labels`` (instances JSON) and ``{split}_images``.

Parsed indexes are cached under ``<run_dir>/cache`` keyed by the label file's hash, and bad records
found in non-strict mode are listed in ``<run_dir>/problems_<split>.jsonl``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from alod.config import DataConfig
from alod.data.index import DetectionIndex
from alod.data.loading import load_index
from alod.utils import AlodError

SPLITS = ("train", "val")


def _split_paths(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    labels = getattr(cfg, f"{split}_labels")
    images = getattr(cfg, f"{split}_images")
    root = Path(cfg.root)
    if cfg.kind in ("synthetic", "bdd100k"):
        labels = labels or root / "labels" / "det_20" / f"det_{split}.json"
        images = images or root / "images" / "100k" / split
    elif not (labels and images):
        raise AlodError(f"data.kind=coco needs data.{split}_labels and data.{split}_images")
    return Path(labels), Path(images)


def ensure_synthetic(cfg: DataConfig, *, progress: bool = True) -> None:
    """Generate the built-in dataset if ``cfg.kind == 'synthetic'`` and it is not there yet."""
    if cfg.kind != "synthetic":
        return
    from alod.data.synthetic import generate_dataset

    generate_dataset(cfg.root, cfg.synthetic, progress=progress)


def load_split(
    cfg: DataConfig, split: str, *, run_dir: str | Path | None = None, log: Callable[[str], object] = print
) -> DetectionIndex:
    """The index of ``split`` ("train" or "val"). Call :func:`ensure_synthetic` first (main process)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    labels, images = _split_paths(cfg, split)
    if not labels.is_file():
        hint = (
            "see the README section on laying out BDD100K"
            if cfg.kind == "bdd100k"
            else "check data.root / data.*_labels in the config"
        )
        raise AlodError(f"{split} labels {labels} not found; {hint}")
    image_size = (cfg.synthetic.width, cfg.synthetic.height) if cfg.kind == "synthetic" else tuple(cfg.image_size)
    fmt = "bdd100k" if cfg.kind == "synthetic" else cfg.format
    run_dir = Path(run_dir) if run_dir is not None else None
    return load_index(
        labels=labels,
        image_root=images,
        fmt=fmt,
        strict=cfg.strict,
        problems_path=(run_dir / f"problems_{split}.jsonl") if (run_dir and not cfg.strict) else None,
        cache_dir=(run_dir / "cache") if run_dir else None,
        image_size=image_size,
        verify_images=cfg.verify_images,
        log=log,
    )
