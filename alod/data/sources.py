"""From the ``data:`` config section to the train / val indexes.

``data.kind`` chooses where images and labels come from, through the registry :data:`DATA_KINDS`:

* ``synthetic``: generate the built-in street scenes into ``root`` on first use, then read them
  with the BDD100K reader (they are written in det_20 layout, at ``data.synthetic``'s size).
* ``bdd100k``: the standard layout under ``root`` (``images/100k/{split}``,
  ``labels/det_20/det_{split}.json``), or explicit ``{split}_labels`` / ``{split}_images``;
  ``data.format`` picks the label format, ``data.image_size`` the frame size.
* ``coco``: explicit ``{split}_labels`` (instances JSON) and ``{split}_images``.
* ``voc``: Pascal VOC XML (:mod:`alod.data.voc`): ``{split}_labels`` is an
  ``ImageSets/Main/{split}.txt`` list (the default under ``root``) or a folder of XML files,
  ``{split}_images`` the image folder (default ``root/JPEGImages``). VOC files carry no class
  list, so the label ids come from ``data.classes`` when given (other names are
  ``unknown_category`` problems), else from the sorted names of the *training* split, which the
  val split is mapped onto (a val class the training split lacks is an error): label ``k`` means
  the same class in both splits either way.
* ``yolo``: YOLO text labels (:mod:`alod.data.yolo`): ``{split}_labels`` is a folder of
  ``<image stem>.txt`` files (default ``root/labels/{split}``), ``{split}_images`` the image folder
  (default ``root/images/{split}``), whose images are the frames (an image without a label file
  has no objects). The class names come from ``data.classes`` when given, else from the
  ``classes.txt`` / ``obj.names`` / ``data.yaml`` found beside the labels; the val split is mapped
  onto the training split's names as for ``voc``.
* ``folder``: a new project's first day, images without labels. The training split is every image
  file under ``train_images`` (default ``root/images/train``), listed by
  :func:`list_image_folder`, with no boxes and the classes of ``data.classes``; the val split is a
  labeled file (``val_labels``, any format; ``val_images``, default ``root/images/val``) whose
  classes must equal ``data.classes``, because evaluation needs labels. Its :attr:`DataKind.labeled`
  is false: the stages that need training labels (pretraining, the simulated oracle) consult it and
  refuse.

The label format itself (``data.format``) comes from :mod:`alod.data.readers`. Where the index
cache and the problems file go is the caller's choice (the stages pass the run layout's
``cache_dir`` and ``problems_path(split)``); this module knows nothing about run folders.

Nothing here imports torch, so :func:`check_data_config` can run while a config is loaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alod.config import DataConfig
from alod.data.common import IMAGE_EXTENSIONS, image_header_size, list_image_names  # noqa: F401 (IMAGE_EXTENSIONS: re-exported)
from alod.data.index import DetectionIndex
from alod.data.loading import load_index
from alod.data.problems import (
    IMAGE_OUTSIDE_ROOT,
    UNREADABLE_IMAGE,
    Problem,
    ProblemLog,
    confine_image_name,
    stat_image_file,
)
from alod.data.readers import format_choices, get_label_format
from alod.data.synthetic import generate_dataset, is_generated
from alod.utils import AlodError, Registry, atomic_write_json


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
        generated: the data is generated into ``data.root`` by :func:`ensure_dataset`.
        missing_labels_hint: what to tell the user when a split's label file is not there.
        labeled: the training split has labels. ``False`` (``folder``): the training split is the
            image folder's listing (:func:`list_image_folder`, no boxes, classes from
            ``data.classes``), only ``val`` has a label file, and what needs training labels
            (pretraining, the simulated oracle) refuses.
        optional_classes: ``data.classes`` may be given and fixes the label order; without it the
            training split's sorted class names are used for both splits (``voc``, whose files
            carry no class list).
    """

    name: str
    labels: str | None
    images: str | None
    label_format: str | None
    image_size: Callable[[DataConfig], tuple[int, int]]
    generated: bool = False
    missing_labels_hint: str = "check data.root / data.*_labels in the config"
    labeled: bool = True
    optional_classes: bool = False


#: ``data.kind`` -> its description. One line per kind.
DATA_KINDS: Registry[DataKind] = Registry("data kind")
for _kind in (
    DataKind("synthetic", "labels/det_20/det_{split}.json", "images/100k/{split}", "bdd100k",
                          _synthetic_image_size, generated=True),
    DataKind("bdd100k", "labels/det_20/det_{split}.json", "images/100k/{split}", None,
                        _config_image_size, missing_labels_hint="see the README section on laying out BDD100K"),
    DataKind("coco", None, None, None, _config_image_size),
    DataKind("folder", None, "images/{split}", None, _config_image_size, labeled=False,
                       missing_labels_hint="data.kind=folder evaluates on a labeled val split: set "
                                           "data.val_labels to its label file"),
    DataKind("voc", "ImageSets/Main/{split}.txt", "JPEGImages", "voc", _config_image_size,
                    optional_classes=True,
                    missing_labels_hint="data.kind=voc reads data.train_labels / data.val_labels: an "
                                        "ImageSets/Main list (default under data.root) or a folder of VOC XML files"),
    DataKind("yolo", "labels/{split}", "images/{split}", "yolo", _config_image_size, optional_classes=True,
             missing_labels_hint="data.kind=yolo reads data.train_labels / data.val_labels: a folder of "
                                 "<image stem>.txt files (default <data.root>/labels/{train,val})"),
):
    DATA_KINDS.register(_kind.name, _kind)

#: Bump when the folder listing changes for the same files, so that old caches are not reused.
FOLDER_INDEX_VERSION = "alod.folder-index/1"


def get_data_kind(name: str) -> DataKind:
    """The :class:`DataKind` registered as ``name``; :class:`AlodError` listing the valid ones."""
    if name not in DATA_KINDS:  # the message lists the kinds in registration order (tests pin it)
        raise AlodError(f"data.kind must be one of {', '.join(DATA_KINDS)} (got {name!r})")
    return DATA_KINDS.get(name)


def check_data_config(cfg: DataConfig) -> None:
    """Check the ``data:`` section before anything runs (called by :func:`alod.stages.setup.check_config`).

    Raises:
        AlodError: one line for an unknown ``kind`` or ``format`` (listing the valid values), or a
            kind that needs explicit ``{split}_labels`` and ``{split}_images`` without them.
    """
    kind = get_data_kind(cfg.kind)
    choices = format_choices()
    if not (isinstance(cfg.format, str) and cfg.format in choices):
        raise AlodError(f"data.format must be one of {', '.join(choices)} (got {cfg.format!r})")
    _check_classes(cfg, kind)
    fmt = kind.label_format or cfg.format
    if fmt != "auto" and get_label_format(fmt).accepts_classes and kind.labeled and not kind.optional_classes:
        # Such files carry no class list: read per split, train and val could number classes differently.
        allowed = ", ".join(k.name for k in DATA_KINDS.values() if k.optional_classes)
        raise AlodError(f"data.format={fmt} has no class list in its files; use data.kind={allowed}, which gives "
                        f"train and val the same label ids (data.kind={kind.name} cannot)")
    for split in SPLITS:
        _split_paths(cfg, split, kind)


def _check_classes(cfg: DataConfig, kind: DataKind) -> None:
    classes = cfg.classes
    if kind.labeled and not kind.optional_classes:
        if classes is not None:
            allowed = " / ".join(k.name for k in DATA_KINDS.values() if not k.labeled or k.optional_classes)
            raise AlodError(f"data.classes is only for data.kind={allowed} (images without labels, or label "
                            f"files without a class list); data.kind={kind.name} takes its classes from the "
                            "label file: remove data.classes")
        return
    if classes is None:
        if kind.optional_classes:
            return
        raise AlodError(f"data.kind={kind.name} needs data.classes, the list of class names to label "
                        "(the images have no label file to take them from), e.g. "
                        "data.classes: [car, pedestrian]; they must equal the val label file's classes")
    if not isinstance(classes, (list, tuple)) or not classes:
        raise AlodError(f"data.classes must be a non-empty list of class names (got {classes!r})")
    bad = [c for c in classes if not isinstance(c, str) or not c.strip()]
    if bad:
        raise AlodError(f"data.classes must hold non-empty names (got {bad!r} in {list(classes)!r})")
    dup = sorted({c for c in classes if list(classes).count(c) > 1})
    if dup:
        raise AlodError(f"data.classes must be unique; repeated: {dup}")


def _split_paths(cfg: DataConfig, split: str, kind: DataKind) -> tuple[Path | None, Path]:
    labels = getattr(cfg, f"{split}_labels")
    images = getattr(cfg, f"{split}_images")
    if not kind.labeled:
        root = Path(cfg.root)
        images = Path(images) if images else root / kind.images.format(split=split)
        if split == "train":
            if labels:
                raise AlodError(f"data.train_labels is not used with data.kind={kind.name} (the training images "
                                "have no labels; they are listed from data.train_images): remove it, or use "
                                "data.kind=coco / bdd100k for a labeled training set")
            return None, images
        if not labels:
            raise AlodError(f"data.kind={kind.name} needs data.val_labels (and data.val_images, default "
                            f"{root / kind.images.format(split=split)}): evaluation needs a labeled val split. "
                            "Label a few hundred images with any annotation tool and point data.val_labels at "
                            "its file (COCO, BDD100K, ...); its classes must equal data.classes")
        return Path(labels), images
    if kind.labels is None:
        if not (labels and images):
            raise AlodError(f"data.kind={kind.name} needs data.{split}_labels and data.{split}_images")
    else:
        root = Path(cfg.root)
        labels = labels or root / kind.labels.format(split=split)
        images = images or root / kind.images.format(split=split)
    return Path(labels), Path(images)


def ensure_dataset(cfg: DataConfig, *, progress: bool = True, log: Callable[[str], object] = print) -> None:
    """Generate the built-in dataset when ``cfg.kind`` is a generated kind (``synthetic``) and
    ``cfg.root`` does not hold it yet (saying so through ``log``); otherwise do nothing.

    An explicit step: the stage entry points call it (main process) before loading a split with
    :func:`load_split`; nothing else generates data.
    """
    kind = DATA_KINDS[cfg.kind] if cfg.kind in DATA_KINDS else None
    if kind is None or not kind.generated:
        return
    spec = dataclasses.asdict(cfg.synthetic)
    if not is_generated(cfg.root, **spec):
        log(f"data: generating the built-in dataset into {cfg.root} ({spec['num_train']} training and "
            f"{spec['num_val']} validation scenes of {spec['width']}x{spec['height']} px)")
    generate_dataset(cfg.root, **spec, progress=progress)


def load_split(
    cfg: DataConfig,
    split: str,
    *,
    cache_dir: Path | None = None,
    problems_path: Path | None = None,
    log: Callable[[str], object] = print,
) -> DetectionIndex:
    """The index of ``split`` ("train" or "val"). Call :func:`ensure_dataset` first (main process).

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
            labels (see :func:`alod.data.loading.load_index`); for ``folder``: val classes other
            than ``data.classes``, an image folder that is not there, an unusable image in strict
            mode (see :func:`list_image_folder`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    kind = get_data_kind(cfg.kind)
    labels, images = _split_paths(cfg, split, kind)
    if labels is None:  # an unlabeled kind's training split
        return list_image_folder(images, classes=tuple(cfg.classes), strict=cfg.strict,
                                 problems_path=None if cfg.strict else problems_path, cache_dir=cache_dir, log=log)
    if not labels.exists():
        raise AlodError(f"{split} labels {labels} not found; {kind.missing_labels_hint}")
    fmt = kind.label_format or cfg.format
    index = load_index(
        labels=labels,
        image_root=images,
        fmt=fmt,
        strict=cfg.strict,
        problems_path=None if cfg.strict else problems_path,
        cache_dir=cache_dir,
        image_size=kind.image_size(cfg),
        verify_images=cfg.verify_images,
        log=log,
        classes=_reader_classes(cfg, fmt),
    )
    if kind.optional_classes and cfg.classes is None and split == "val":
        index = _on_training_classes(cfg, kind, index, labels, cache_dir=cache_dir)
    if not kind.labeled and tuple(index.classes) != tuple(cfg.classes):
        raise AlodError(f"the classes of the {split} labels {labels} ({list(index.classes)}) are not "
                        f"data.classes ({list(cfg.classes)}): data.classes must list the same names in the "
                        "same order (label k is data.classes[k - 1]), so that imported labels, training and "
                        "evaluation agree")
    return index


def _reader_classes(cfg: DataConfig, fmt: str) -> tuple[str, ...] | None:
    """``data.classes`` for a format whose reader takes a class list, else ``None``."""
    if cfg.classes is None or fmt == "auto" or not get_label_format(fmt).accepts_classes:
        return None
    return tuple(cfg.classes)


def _on_training_classes(cfg: DataConfig, kind: DataKind, val: DetectionIndex, val_labels: Path, *,
                         cache_dir: Path | None) -> DetectionIndex:
    """``val`` with its labels renumbered to the training split's classes (the sorted names of the
    training files, as its own load numbers them), so that label ``k`` means one class in both.

    Raises:
        AlodError: a val class that no training file names (the model could never predict it).
    """
    train_labels, train_images = _split_paths(cfg, "train", kind)
    fmt = kind.label_format or cfg.format
    # Parse only (nothing stops on a bad record): the training split's own load reports those. Its
    # class list does not depend on them. A format whose frames are the images (YOLO) needs them.
    image_root = train_images if get_label_format(fmt).needs_images else None
    train = load_index(labels=train_labels, image_root=image_root, fmt=fmt, strict=False,
                       cache_dir=cache_dir, image_size=kind.image_size(cfg), log=lambda _line: None)
    missing = [c for c in val.classes if c not in train.classes]
    if missing:
        raise AlodError(f"the val labels {val_labels} name classes that the training labels {train_labels} do not: "
                        f"{missing} (training classes: {list(train.classes)}). Fix the names, or set data.classes "
                        "to every class in label order")
    lut = np.array([0] + [train.classes.index(c) + 1 for c in val.classes], dtype=np.int64)
    return dataclasses.replace(val, labels=lut[val.labels], classes=tuple(train.classes))


def training_split_labeled(cfg: DataConfig) -> bool:
    """Whether ``cfg.kind``'s training split has labels (``False`` for ``folder``). The stages that
    need them (pretraining, the simulated oracle) consult this and refuse, each saying what to do."""
    return get_data_kind(cfg.kind).labeled


# ------------------------------------------------------------------------------ the image folder
def list_image_folder(
    root: str | os.PathLike,
    *,
    classes: tuple[str, ...],
    strict: bool = True,
    problems_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], object] = print,
) -> DetectionIndex:
    """The training split of an unlabeled image folder: every image, no boxes.

    Every file under ``root`` (recursively) whose name ends in one of :data:`IMAGE_EXTENSIONS`
    (any case) is an image, named by its path relative to ``root`` with ``/`` separators, in
    sorted order (the index does not depend on the order the file system lists files in); hidden
    files and folders (``.`` first) are left out. Each name goes through
    :func:`alod.data.problems.confine_image_name`, each file through
    :func:`alod.data.problems.stat_image_file`, and its size is read from its header with PIL
    (``Image.open(...).size``: no decode). A name that is not a plain relative path (a backslash
    in a file name, ...), an empty file or one whose header cannot be read is a bad record
    (``image_outside_root`` / ``unreadable_image``): ``strict`` raises
    :class:`~alod.data.problems.LabelFileError` naming the file; otherwise it is skipped, counted
    in ``log`` and written to ``problems_path``.

    Cache (``cache_dir``): ``folder-<key[:16]>.npz`` (the index) and ``.json`` (the key and the
    header problems), where ``key`` hashes :data:`FOLDER_INDEX_VERSION`, the absolute ``root``,
    ``classes``, ``strict`` and the listing (every name with its file size and mtime). Listing and
    ``stat`` run on every load; only the header reads are saved (a changed, added or removed file
    changes the key and the folder is read again).

    Args:
        root: the image folder.
        classes: the class names (``data.classes``), kept in the index for the labels to come.
        strict, problems_path, log: as :func:`alod.data.loading.load_index`.
        cache_dir: where to keep the index; ``None``: no cache.

    Raises:
        AlodError: ``root`` is not a folder, a subfolder cannot be listed, or (``strict``) a bad
            image.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise AlodError(f"image folder {root} does not exist; data.kind=folder lists the training images from "
                        "data.train_images (default <data.root>/images/train)")
    file = os.fspath(root)
    problems = ProblemLog(strict=strict)
    listing = _folder_listing(root_path, file=file, problems=problems)
    key = hashlib.sha256(json.dumps({
        "version": FOLDER_INDEX_VERSION, "root": os.path.abspath(root), "classes": list(classes),
        "strict": bool(strict), "files": [[name, *stamp] for _, name, _, stamp in listing],
    }, sort_keys=True).encode()).hexdigest()
    npz = Path(cache_dir) / f"folder-{key[:16]}.npz" if cache_dir is not None else None
    index = _read_folder_cache(npz, key, problems, log) if npz is not None else None
    if index is None:
        index = _folder_index(root, listing, classes=classes, file=file, problems=problems, npz=npz, key=key, log=log)
    else:
        index = dataclasses.replace(index, image_root=os.fspath(root), source=file)
    log(f"{file}: {len(index)} images without labels (data.kind=folder), classes {list(classes)}")
    problems.report(source=file, log=log, problems_path=problems_path)
    if problems_path is not None:
        problems.write_jsonl(problems_path)
    return index


def _folder_listing(root: Path, *, file: str, problems: ProblemLog) -> list[tuple[int, str, str, list[int]]]:
    """``(position, name, path, [size, mtime_ns])`` of every usable image file under ``root``; names
    that leave the folder and unusable files are reported to ``problems``."""
    listing = []
    for pos, name in enumerate(list_image_names(root)):
        path, why = confine_image_name(root, name)
        if why is not None:
            problems.add(Problem(IMAGE_OUTSIDE_ROOT, file, pos, name, None, None, why, "frame"))
            continue
        st, problem = stat_image_file(path)
        if problem is not None:
            problems.add(Problem(problem[0], file, pos, name, None, None, problem[1], "frame"))
            continue
        listing.append((pos, name, os.fspath(path), [int(st.st_size), int(st.st_mtime_ns)]))
    return listing


def _folder_index(root, listing: list, *, classes: tuple[str, ...], file: str, problems: ProblemLog,
                  npz: Path | None, key: str, log) -> DetectionIndex:
    """Read every listed image's size from its header (unreadable ones reported) into an index
    without boxes, and cache it in ``npz`` (with the header problems) when given."""
    header_problems: list[Problem] = []
    names, widths, heights = [], [], []
    for pos, name, path, _ in listing:
        size, why = image_header_size(path)
        if why is not None:
            p = Problem(UNREADABLE_IMAGE, file, pos, name, None, None, why, "frame")
            problems.add(p)  # raises when strict
            header_problems.append(p)
            continue
        names.append(name)
        widths.append(size[0])
        heights.append(size[1])
    n = len(names)
    index = DetectionIndex.from_lists(
        image_root=root, names=names, widths=widths, heights=heights,
        boxes_per_image=[np.zeros((0, 4))] * n, labels_per_image=[np.zeros(0, dtype=np.int64)] * n,
        classes=tuple(classes), source=file)
    if npz is not None:
        try:
            atomic_write_json(npz.with_suffix(".json"), {
                "format": FOLDER_INDEX_VERSION, "key": key,
                "problems": [p.to_json() for p in header_problems]}, indent=None)
            index.save(npz)
        except OSError as e:  # a read-only or full cache folder must not stop the run
            log(f"warning: could not write the index cache {npz} ({e}); continuing without it")
    return index


def _read_folder_cache(npz: Path, key: str, problems: ProblemLog, log) -> DetectionIndex | None:
    """The cached folder index (its header problems replayed into ``problems``), or ``None``."""
    if not npz.exists():
        return None
    try:
        meta = json.loads(npz.with_suffix(".json").read_text(encoding="utf-8"))
        if meta.get("format") != FOLDER_INDEX_VERSION or meta.get("key") != key:
            raise ValueError("sidecar does not belong to this cache entry")
        cached = [Problem.from_json(d) for d in meta["problems"]]
        index = DetectionIndex.load(npz)
    except Exception as e:  # noqa: BLE001 - any damage means: read the headers again
        log(f"warning: index cache {npz} is unreadable ({type(e).__name__}: {e}); reading the image folder again")
        return None
    for p in cached:
        problems.add(p)
    log(f"{npz.parent}: loaded cached folder index {npz.name}")
    return index
