"""One entry point from a label file to a :class:`DetectionIndex`: format choice (through the
registry :mod:`alod.data.readers`), image checks, problem reporting and the on-disk index cache.

Cache layout (``cache_dir``)::

    index-<key[:16]>.npz    the index (DetectionIndex.save, atomic)
    index-<key[:16]>.json   the full key, the layout, which frames the parse skipped and every
                            problem the parse recorded (so a cached load reports exactly what the
                            fresh parse did)

``key`` is the sha256 of: the label file's bytes (its sha256), ``fmt``, the absolute
``image_root``, ``image_size``, ``strict`` and :data:`READER_VERSION`. Edit the label file or
change any of these and the key changes. The sidecar is written before the ``.npz``, so a present
``.npz`` always has its sidecar; a cache entry that cannot be read is reported and re-parsed.

What is cached is the label parse only. Image files are checked on every load (one ``stat`` per
image, well under a second for 70k local files), because images can go missing without the label
file changing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from alod.data.common import ParsedLabels
from alod.data.index import DetectionIndex
from alod.data.problems import Problem, ProblemLog, check_image_file
from alod.data.readers import check_format_choice, label_format_for
from alod.utils import AlodError, atomic_write_json, sha256_file

#: Bump when a reader's output changes for the same input, so that old caches are not reused.
READER_VERSION = "alod.readers/1"
CACHE_FORMAT = "alod.index-cache/1"


def index_cache_key(
    *,
    labels: str | os.PathLike,
    fmt: str,
    image_root: str | os.PathLike | None,
    image_size: tuple[int, int],
    strict: bool,
) -> str:
    """sha256 hex of the label file's bytes and every parameter that changes the parsed index."""
    params = {
        "reader": READER_VERSION,
        "labels_sha256": sha256_file(labels),
        "fmt": fmt,
        "image_root": None if image_root is None else os.path.abspath(image_root),
        "image_size": [int(v) for v in image_size],
        "strict": bool(strict),
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def load_index(
    *,
    labels: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    fmt: str = "auto",
    strict: bool = True,
    problems_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: tuple[int, int] = (1280, 720),
    verify_images: bool = False,
    log: Callable[[str], object] = print,
) -> DetectionIndex:
    """Read a label file into a :class:`DetectionIndex`, checking and reporting bad records.

    Args:
        labels: the label file (BDD100K det_20 / 2018 JSON, or COCO instances JSON).
        image_root: folder the image names are relative to. When given, every image must exist and
            be non-empty (frames whose image is not are bad records); ``None``: no image checks and
            ``index.image_root == ""``.
        fmt: a name in :data:`alod.data.readers.LABEL_FORMATS` (``"bdd100k"`` (det_20),
            ``"bdd100k_2018"``, ``"coco"``) or ``"auto"``: :func:`alod.data.readers.detect_format`
            (COCO if the top level is an object, else BDD100K with the layout detected from
            category names).
        strict: ``True``: the first bad record raises :class:`~alod.data.problems.LabelFileError`
            naming the file, frame, image name and problem. ``False``: bad boxes / frames are
            skipped, one line per kind of problem goes to ``log`` and every problem to
            ``problems_path``.
        problems_path: JSON-lines file that receives every problem (written whenever given, empty
            if there are none, also on cached loads).
        cache_dir: where to keep parsed indexes; ``None`` disables the cache.
        image_size: ``(width, height)`` of every BDD100K frame (its labels carry no sizes).
            Ignored for COCO, whose image records carry sizes.
        verify_images: also open each image's header with PIL (needs ``image_root``).
        log: receives one-line messages (summary, problem counts, cache warnings).

    Returns:
        The index: ``boxes float32[M, 4]`` x1, y1, x2, y2 pixels, ``labels int64[M]`` in
        ``1..C``, ``ignore bool[M]``; only images and boxes that passed the checks.

    Raises:
        AlodError: missing label file or image folder, unknown ``fmt``; LabelFileError (a
            subclass) for malformed JSON, a file of the wrong shape, or a bad record when
            ``strict``.
    """
    labels_path = Path(labels)
    check_format_choice(fmt)
    if not labels_path.is_file():
        raise AlodError(f"label file {labels_path} does not exist; check the labels path in the config")
    if image_root is not None and not Path(image_root).is_dir():
        raise AlodError(
            f"image folder {image_root} does not exist; check image_root (or pass None to skip image checks)"
        )
    if verify_images and image_root is None:
        raise AlodError("verify_images=True needs an image_root to find the images")
    image_size = (int(image_size[0]), int(image_size[1]))
    problems = ProblemLog(strict=strict)

    parsed: ParsedLabels | None = None
    cache_npz = None
    if cache_dir is not None:
        key = index_cache_key(labels=labels_path, fmt=fmt, image_root=image_root, image_size=image_size, strict=strict)
        cache_npz = Path(cache_dir) / f"index-{key[:16]}.npz"
        cached = _read_cache(cache_npz, key=key, log=log)
        if cached is not None:
            parsed, parse_problems = cached
            # The cache stores what the parse found; replay it so reporting is identical.
            for p in parse_problems:
                problems.add(dataclasses.replace(p, file=os.fspath(labels)))
            parsed = dataclasses.replace(
                parsed,
                index=dataclasses.replace(
                    parsed.index, source=os.fspath(labels), image_root=_root_str(image_root)
                ),
            )
            log(f"{labels}: loaded cached index {cache_npz}")
    if parsed is None:
        # The path as the caller spelled it becomes index.source, on fresh and cached loads alike.
        parsed = _parse(labels, fmt=fmt, image_root=image_root, image_size=image_size, problems=problems)
        if cache_npz is not None:
            _write_cache(cache_npz, key=key, parsed=parsed, problems=problems.problems, log=log)

    index = parsed.index
    if image_root is not None:
        index = _check_images(parsed, verify=verify_images, problems=problems, file=os.fspath(labels))

    log(
        f"{labels}: {len(index)} images, {index.num_boxes} boxes "
        f"({int(index.ignore.sum())} ignored regions), layout {parsed.layout}"
    )
    problems.report(source=os.fspath(labels), log=log, problems_path=problems_path)
    if problems_path is not None:
        problems.write_jsonl(problems_path)
    return index


# ----------------------------------------------------------------------------- internals
def _root_str(image_root) -> str:
    return "" if image_root is None else os.fspath(image_root)


def _parse(path: str | os.PathLike, *, fmt: str, image_root, image_size, problems: ProblemLog) -> ParsedLabels:
    entry = label_format_for(path, fmt)
    # A detected format may read more leniently than a named one: "auto" on a JSON list accepts
    # both BDD100K layouts, "bdd100k" only det_20.
    read = entry.read_detected if (fmt == "auto" and entry.read_detected is not None) else entry.read
    return read(path, image_root=_root_str(image_root), image_size=image_size, problems=problems)


def _check_images(parsed: ParsedLabels, *, verify: bool, problems: ProblemLog, file: str) -> DetectionIndex:
    """Drop (and report) frames whose image is missing, empty or, with ``verify``, unreadable."""
    index = parsed.index
    root = index.image_root
    keep = np.ones(len(index), dtype=bool)
    for i, name in enumerate(index.names.tolist()):
        bad = check_image_file(os.path.join(root, name), verify=verify)
        if bad is not None:
            kind, detail = bad
            problems.add(Problem(kind, file, int(parsed.frame_index[i]), name, None, None, detail, "frame"))
            keep[i] = False
    return index if keep.all() else index.subset(np.flatnonzero(keep))


def _sidecar(npz: Path) -> Path:
    return npz.with_suffix(".json")


def _read_cache(npz: Path, *, key: str, log) -> tuple[ParsedLabels, list[Problem]] | None:
    """The cached parse and its problems, or ``None`` (absent, or unreadable: then say so)."""
    if not npz.exists():
        return None
    try:
        meta = json.loads(_sidecar(npz).read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            raise ValueError("sidecar does not belong to this cache entry")
        index = DetectionIndex.load(npz)
        frame_index = (
            np.arange(len(index), dtype=np.int64)
            if meta["frame_index"] is None
            else np.asarray(meta["frame_index"], dtype=np.int64)
        )
        if frame_index.shape != (len(index),):
            raise ValueError("frame_index does not match the index")
        parse_problems = [Problem.from_json(d) for d in meta["problems"]]
        parsed = ParsedLabels(index=index, frame_index=frame_index, num_frames=int(meta["num_frames"]),
                              layout=str(meta["layout"]))
        return parsed, parse_problems
    except Exception as e:  # any damage (truncated zip, bad JSON, missing key) means: parse again
        log(f"warning: index cache {npz} is unreadable ({type(e).__name__}: {e}); re-parsing the labels")
        return None


def _write_cache(npz: Path, *, key: str, parsed: ParsedLabels, problems: list[Problem], log) -> None:
    fi = parsed.frame_index
    identity = bool(np.array_equal(fi, np.arange(len(fi))))
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "layout": parsed.layout,
        "num_frames": parsed.num_frames,
        "frame_index": None if identity else fi.tolist(),
        "problems": [p.to_json() for p in problems],
    }
    try:
        atomic_write_json(_sidecar(npz), meta, indent=None)  # first: a present .npz implies its sidecar
        parsed.index.save(npz)
    except OSError as e:  # a read-only or full cache folder must not stop the run
        log(f"warning: could not write the index cache {npz} ({e}); continuing without it")
