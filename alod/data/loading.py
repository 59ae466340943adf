"""One entry point from a label file to a :class:`DetectionIndex`: format choice (through the
registry :mod:`alod.data.readers`), image checks, problem reporting and the on-disk index cache.

Cache layout (``cache_dir``)::

    index-<key[:16]>.npz    the index (DetectionIndex.save, atomic)
    index-<key[:16]>.json   the full key, the layout, which frames the parse skipped and every
                            problem the parse recorded (so a cached load reports exactly what the
                            fresh parse did)
    images-<hash[:16]>.json with verify_images: the decode result of every image under one image
                            folder (hash of its absolute path), keyed by image name with the
                            file's size and mtime; a file whose size or mtime changed is decoded
                            again, the others are not

``key`` is the sha256 of: the label file's bytes (its sha256; for a format whose ``path`` stands
for several files, such as a VOC folder or list, the format's ``fingerprint`` of all of them; for
YOLO, which reads image sizes from the image headers, also every image's name, size and mtime),
``fmt``, the absolute ``image_root``, ``image_size``, ``strict``, ``classes`` (when given) and
:data:`READER_VERSION`. Edit the label file or
change any of these and the key changes. The sidecar is written before the ``.npz``, so a present
``.npz`` always has its sidecar; a cache entry that cannot be read is reported and re-parsed.

Image files are checked on every load (one ``stat`` per image, well under a second for 70k local
files), because images can go missing without the label file changing. Before any image is
touched its name is confined to the image folder (:func:`alod.data.problems.confine_image_name`).

``verify_images`` decodes every image (:func:`alod.data.problems.decode_check`: a full decode, JPEGs
at 1/8 scale, which still reads every compressed byte and so catches truncation; about 2 ms per
1280x720 frame and core, i.e. 1.5 to 2.5 minutes for BDD100K's 70k training frames on two cores),
in threads (PIL decodes without the GIL), with a progress bar, and keeps the results in the cache
folder so that a rerun decodes only new or changed files.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from alod.data.common import LabelFormat, ParsedLabels
from alod.data.index import DetectionIndex
from alod.data.problems import (
    IMAGE_OUTSIDE_ROOT,
    UNREADABLE_IMAGE,
    VERIFY_METHOD,
    Problem,
    ProblemLog,
    confine_image_name,
    decode_check,
    stat_image_file,
)
from alod.data.readers import check_format_choice, label_format_for
from alod.utils import AlodError, atomic_write_json, sha256_file

#: Bump when a reader's output changes for the same input, so that old caches are not reused.
#: 2: float64 boxes, boxes checked against the image size, image names confined to the root.
READER_VERSION = "alod.readers/2"
CACHE_FORMAT = "alod.index-cache/1"
IMAGE_CHECKS_FORMAT = "alod.image-checks/1"
#: Threads that decode images for ``verify_images`` (PIL releases the GIL while decoding).
VERIFY_THREADS = min(8, os.cpu_count() or 1)
#: Seconds between saves of the decode results during a long verification (a killed run keeps them).
VERIFY_SAVE_EVERY_S = 60.0


def index_cache_key(
    *,
    labels: str | os.PathLike,
    fmt: str,
    image_root: str | os.PathLike | None,
    image_size: tuple[int, int],
    strict: bool,
    classes: tuple[str, ...] | None = None,
    fingerprint: Callable[[str | os.PathLike], str] | None = None,
) -> str:
    """sha256 hex of the label file's bytes (``fingerprint(labels)`` where the format gives one)
    and every parameter that changes the parsed index."""
    params = {
        "reader": READER_VERSION,
        "labels_sha256": (fingerprint or sha256_file)(labels),
        "fmt": fmt,
        "image_root": None if image_root is None else os.path.abspath(image_root),
        "image_size": [int(v) for v in image_size],
        "strict": bool(strict),
    }
    if classes is not None:  # only then: the keys of existing caches stay what they were
        params["classes"] = list(classes)
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
    follow_symlinks: bool = True,
    progress: bool | None = None,
    log: Callable[[str], object] = print,
    classes: tuple[str, ...] | None = None,
) -> DetectionIndex:
    """Read a label file into a :class:`DetectionIndex`, checking and reporting bad records.

    Args:
        labels: the label file (BDD100K det_20 / 2018 JSON, or COCO instances JSON), or for a
            format with ``reads_folders`` (VOC, YOLO) a folder of label files or a list of ids.
        image_root: folder the image names are relative to. When given, every image must be a
            non-empty file inside it (frames whose image is not are bad records); ``None``: no
            image checks and ``index.image_root == ""``. Image names are confined to it either
            way (``image_outside_root``).
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
        image_size: ``(width, height)`` of every BDD100K frame (its labels carry no sizes); boxes
            are checked against it. Ignored for COCO, whose image records carry sizes.
        verify_images: also decode every image (needs ``image_root``); results are cached in
            ``cache_dir`` by file size and mtime, so a rerun decodes only changed files.
        follow_symlinks: ``True``: symbolic links inside ``image_root`` are followed wherever
            they point (the folder is the user's; see
            :func:`alod.data.problems.confine_image_name`); ``False``: an image whose resolved
            path leaves ``image_root`` is an ``image_outside_root`` problem.
        progress: show a progress bar while decoding images; ``None``: when stderr is a terminal.
        log: receives one-line messages (summary, problem counts, cache warnings).
        classes: the class names in label order, for a format with ``accepts_classes`` (VOC, YOLO);
            names outside it are ``unknown_category`` problems. ``None``: the format's own rule.

    Returns:
        The index: ``boxes float64[M, 4]`` x1, y1, x2, y2 pixels, ``labels int64[M]`` in
        ``1..C``, ``ignore bool[M]``; only images and boxes that passed the checks.

    Raises:
        AlodError: missing label file or image folder, unknown ``fmt``; LabelFileError (a
            subclass) for malformed JSON, a file of the wrong shape, or a bad record when
            ``strict``.
    """
    labels_path = Path(labels)
    _check_inputs(labels_path, fmt=fmt, image_root=image_root, verify_images=verify_images)
    entry = _format_entry(labels_path, fmt, classes, image_root)
    image_size = (int(image_size[0]), int(image_size[1]))
    problems = ProblemLog(strict=strict)
    parsed = _cached_or_parsed(labels, entry, fmt=fmt, image_root=image_root, image_size=image_size, strict=strict,
                               classes=classes, cache_dir=cache_dir, problems=problems, log=log)
    index = parsed.index
    if image_root is not None:
        index = _check_images(parsed, verify=verify_images, problems=problems, file=os.fspath(labels),
                              follow_symlinks=follow_symlinks, cache_dir=cache_dir, progress=progress, log=log)
    log(
        f"{labels}: {len(index)} images, {index.num_boxes} boxes "
        f"({int(index.ignore.sum())} ignored regions), layout {parsed.layout}"
    )
    problems.report(source=os.fspath(labels), log=log, problems_path=problems_path)
    if problems_path is not None:
        problems.write_jsonl(problems_path)
    return index


def _check_inputs(labels_path: Path, *, fmt: str, image_root, verify_images: bool) -> None:
    """Refuse an unknown format, a missing label file or image folder, and verification without images."""
    check_format_choice(fmt)
    if not labels_path.exists():
        raise AlodError(f"label file {labels_path} does not exist; check the labels path in the config")
    if image_root is not None and not Path(image_root).is_dir():
        raise AlodError(
            f"image folder {image_root} does not exist; check image_root (or pass None to skip image checks)"
        )
    if verify_images and image_root is None:
        raise AlodError("verify_images=True needs an image_root to find the images")


def _cached_or_parsed(labels, entry, *, fmt: str, image_root, image_size: tuple[int, int], strict: bool,
                      classes, cache_dir, problems: ProblemLog, log) -> ParsedLabels:
    """The parse of ``labels`` from the index cache when it holds it (its problems replayed into
    ``problems``), else parsed now and cached."""
    labels_path = Path(labels)
    cache_npz = key = None
    if cache_dir is not None:
        key = index_cache_key(labels=labels_path, fmt=fmt, image_root=image_root, image_size=image_size, strict=strict,
                              classes=classes, fingerprint=_fingerprint(entry, image_root))
        cache_npz = Path(cache_dir) / f"index-{key[:16]}.npz"
        cached = _read_cache(cache_npz, key=key, log=log)
        if cached is not None:
            parsed, parse_problems = cached
            # The cache stores what the parse found; replay it so reporting is identical.
            for p in parse_problems:
                problems.add(dataclasses.replace(p, file=os.fspath(labels)))
            log(f"{labels}: loaded cached index {cache_npz}")
            return dataclasses.replace(
                parsed,
                index=dataclasses.replace(parsed.index, source=os.fspath(labels), image_root=_root_str(image_root)),
            )
    # The path as the caller spelled it becomes index.source, on fresh and cached loads alike.
    parsed = _parse(labels, entry, fmt=fmt, image_root=image_root, image_size=image_size, classes=classes,
                    problems=problems)
    if cache_npz is not None:
        _write_cache(cache_npz, key=key, parsed=parsed, problems=problems.problems, log=log)
    return parsed


# ----------------------------------------------------------------------------- internals
def _root_str(image_root) -> str:
    return "" if image_root is None else os.fspath(image_root)


def _format_entry(labels: Path, fmt: str, classes, image_root) -> LabelFormat:
    """The format entry for ``labels`` (detected for ``"auto"``), refusing a folder or ``classes``
    that the format cannot take, and no ``image_root`` for a format that needs the images."""
    entry = label_format_for(labels, fmt)
    if entry.needs_images and image_root is None:
        raise AlodError(f"label format {entry.name} needs the image folder (image_root): its frames are the "
                        "images, and their sizes come from the image headers")
    if labels.is_dir() and not entry.reads_folders:
        raise AlodError(f"{labels} is a folder; label format {entry.name} reads one label file: give its path")
    if classes is not None and not entry.accepts_classes:
        raise AlodError(f"label format {entry.name} takes its classes from the label file; "
                        f"a class list ({list(classes)}) cannot be given for it")
    return entry


def _fingerprint(entry: LabelFormat, image_root):
    """The format's ``fingerprint`` for the cache key; a format that reads image headers
    (``needs_images``) keys its cache on the image files too (a replaced image changes sizes)."""
    if entry.needs_images:
        return functools.partial(entry.fingerprint, image_root=image_root)
    return entry.fingerprint


def _parse(path: str | os.PathLike, entry: LabelFormat, *, fmt: str, image_root, image_size, classes,
           problems: ProblemLog) -> ParsedLabels:
    # A detected format may read more leniently than a named one: "auto" on a JSON list accepts
    # both BDD100K layouts, "bdd100k" only det_20.
    read = entry.read_detected if (fmt == "auto" and entry.read_detected is not None) else entry.read
    extra = {} if classes is None else {"classes": tuple(classes)}
    return read(path, image_root=_root_str(image_root), image_size=image_size, problems=problems, **extra)


def _check_images(parsed: ParsedLabels, *, verify: bool, problems: ProblemLog, file: str,
                  follow_symlinks: bool = True, cache_dir=None, progress: bool | None = None,
                  log: Callable[[str], object] = print) -> DetectionIndex:
    """Drop (and report) frames whose image name leaves the image folder, whose image is missing,
    empty or not a file, or, with ``verify``, does not decode."""
    index = parsed.index
    root = index.image_root
    keep = np.ones(len(index), dtype=bool)

    def bad(i: int, name: str, kind: str, detail: str) -> None:
        keep[i] = False
        problems.add(Problem(kind, file, int(parsed.frame_index[i]), name, None, None, detail, "frame"))

    # First every name and stat (cheap; in strict mode a missing image stops the load before
    # any decoding), then the decodes.
    to_decode: list[tuple[int, str, str, list]] = []  # (i, name, path, [size, mtime_ns])
    for i, name in enumerate(index.names.tolist()):
        path, why = confine_image_name(root, name, follow_symlinks=follow_symlinks)
        if why is not None:
            bad(i, name, IMAGE_OUTSIDE_ROOT, why)
            continue
        st, problem = stat_image_file(path)
        if problem is not None:
            bad(i, name, *problem)
            continue
        if verify:
            to_decode.append((i, name, os.fspath(path), [st.st_size, st.st_mtime_ns]))
    if to_decode:
        failures = _verify_images(to_decode, root=root, cache_dir=cache_dir, strict=problems.strict,
                                  progress=progress, log=log)
        for i, name, _path, _key in to_decode:
            if i in failures:
                bad(i, name, UNREADABLE_IMAGE, failures[i])
    return index if keep.all() else index.subset(np.flatnonzero(keep))


def _verify_images(to_decode, *, root: str, cache_dir, strict: bool, progress, log) -> dict[int, str]:
    """Decode the images of ``to_decode`` (``(i, name, path, [size, mtime_ns])``) that were not
    already checked at their current size and mtime, in threads; ``{i: what is wrong}`` for those
    that do not decode. With ``strict``, stop at the first failure (the caller raises on it)."""
    cache_path = None
    known: dict[str, list] = {}
    abs_root = os.path.abspath(root)
    if cache_dir is not None:
        digest = hashlib.sha256(abs_root.encode("utf-8", "surrogatepass")).hexdigest()
        cache_path = Path(cache_dir) / f"images-{digest[:16]}.json"
        known = _read_image_checks(cache_path, root=abs_root, log=log)
    results: dict[str, list] = {}  # name -> [size, mtime_ns, None | what is wrong], this run's
    failures: dict[int, str] = {}
    todo = []
    for i, name, path, key in to_decode:
        entry = known.get(name)
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == key:
            if entry[2] is not None:
                failures[i] = str(entry[2])
        else:
            todo.append((i, name, path, key))
    n_cached = len(to_decode) - len(todo)
    if strict and failures:
        return failures  # known bad already: no need to decode anything before stopping

    def save() -> None:
        if cache_path is None or not results:
            return
        try:
            atomic_write_json(cache_path, {"format": IMAGE_CHECKS_FORMAT, "method": VERIFY_METHOD,
                                           "root": abs_root, "images": {**known, **results}}, indent=None)
        except OSError as e:  # a read-only or full cache folder must not stop the run
            log(f"warning: could not write the image check cache {cache_path} ({e})")

    if todo:
        last_save = time.monotonic()
        bar = tqdm(total=len(todo), desc=f"verifying images in {root}", unit="img", leave=False,
                   disable=None if progress is None else not progress)
        ex = ThreadPoolExecutor(max_workers=VERIFY_THREADS)
        try:
            # map yields in frame order, so in strict mode the error is the first bad frame's.
            for (i, name, _path, key), why in zip(todo, ex.map(decode_check, [t[2] for t in todo])):
                results[name] = [*key, why]
                bar.update(1)
                if why is not None:
                    failures[i] = why
                    if strict:
                        break
                if time.monotonic() - last_save > VERIFY_SAVE_EVERY_S:
                    save()
                    last_save = time.monotonic()
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            bar.close()
            save()  # also on Ctrl-C or a strict stop: a rerun decodes only what is left
        log(f"{root}: decoded {len(results)} image(s) ({n_cached} unchanged since the last check)")
    else:
        log(f"{root}: all {n_cached} image(s) unchanged since the last check ({cache_path})")
    return failures


def _read_image_checks(path: Path, *, root: str, log) -> dict[str, list]:
    """The cached decode results for ``root`` (``{}`` if none, or unreadable: then say so)."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != IMAGE_CHECKS_FORMAT or meta.get("root") != root:
            raise ValueError("not an image check file for this folder")
        if meta.get("method") != VERIFY_METHOD:
            return {}  # checked another way: check again
        images = meta["images"]
        if not isinstance(images, dict):
            raise ValueError("'images' is not an object")
        return images
    except Exception as e:  # noqa: BLE001 - any damage means: check again
        log(f"warning: image check cache {path} is unreadable ({type(e).__name__}: {e}); decoding every image")
        return {}


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
