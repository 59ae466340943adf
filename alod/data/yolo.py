"""YOLO text labels -> :class:`DetectionIndex`.

``path`` is the **labels folder**: one ``<image stem>.txt`` per image, with one line per box,
``class_id cx cy w h``, the centre and size normalised by the image's width and height (so in
``[0, 1]``), ``class_id`` 0-based. The folder may mirror subfolders of the image folder
(``labels/cam1/a.txt`` for ``images/cam1/a.jpg``), and it may be the image folder itself (the
darknet layout, each ``.txt`` beside its image). ``image_root`` (``data.{split}_images``) is
required: the frames are its images.

* **Frames** are the image files under ``image_root`` (every ``.jpg``, ``.jpeg``, ``.png``,
  ``.bmp`` and ``.webp``, recursively, sorted, hidden files left out; see
  :func:`alod.data.common.list_image_names`). Image ``cam1/a.jpg`` takes the label file
  ``cam1/a.txt`` (same stem, case-sensitive). **An image without a label file has no objects**:
  the YOLO convention (ultralytics reads a missing label file as a background image), so it stays
  in the index with no boxes, and no problem is recorded. ``frame`` in problems is the image's
  position in that sorted listing.
* **Image sizes** come from each image's header (PIL, which reads the header only: nothing is
  decoded). An image whose header cannot be read is an ``unreadable_image`` problem (frame
  skipped). Two images with the same stem (``a.jpg`` and ``a.png``) would share one label file:
  the later one is a ``duplicate_name`` problem (frame skipped).
* **A label file without an image** is a ``missing_image`` problem (``frame`` counts on after the
  images, ``name`` is empty; the detail names the file): its boxes cannot be placed.
* **Lines.** Blank lines are skipped. A line without exactly 5 fields (a segmentation polygon, a
  prediction with a confidence) is ``bad_record``; a ``class_id`` that is not an integer is
  ``bad_record``, one outside the class list ``unknown_category``; a coordinate that is not a
  number is ``bad_coordinates``. The box ``(cx - w/2) * W .. (cx + w/2) * W`` (and likewise in y)
  then goes through :func:`alod.data.common.check_box` like every reader's boxes: NaN or infinite
  is ``non_finite``, a negative size ``inverted_box``, farther outside the image than the
  tolerance (2 px or 1 % of the side) ``box_outside_image``, a little outside clipped
  (``box_clipped``, a note), zero size kept (``zero_area_box``, a note: training drops such
  targets, evaluation keeps them). ``label`` in problems is the 0-based line number.
* **Classes**, label ``k`` is ``classes[k - 1]`` and ``class_id`` ``k - 1``: ``classes`` given
  (``data.classes``): that list, and the class files are not read. Otherwise the first class
  file found, looking in the labels folder, then its parent, then the parent's parent (the
  ultralytics layout ``<root>/labels/train`` with ``<root>/data.yaml``), and in each folder for
  ``classes.txt`` (one name per line, as labelImg and Label Studio write it), ``obj.names``
  (darknet, CVAT), ``data.yaml`` / ``data.yml`` (ultralytics: ``names`` as a list, or a mapping
  ``{0: name, 1: name, ...}``; ``nc``, if present, must equal the number of names). No class
  file, an empty or repeated name, or a blank line between names is fatal
  (:class:`LabelFileError`): ids could not be named. The YAML file is read with
  ``yaml.safe_load`` (no Python objects), at most :data:`MAX_CLASS_FILE_BYTES`.
* Files in the labels folder: every ``*.txt`` under it (recursively; hidden files and folders
  left out), except the class file itself. A label file larger than :data:`MAX_LABEL_BYTES` or not
  UTF-8 text is a ``bad_record`` of its frame (skipped).

:data:`YOLO_FORMAT` is this format's entry in :data:`alod.data.readers.LABEL_FORMATS`; ``auto``
never picks it (a folder has no first bytes to sniff): name ``data.format: yolo``
(``data.kind: yolo`` implies it).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from alod.data.common import LabelFormat, ParsedLabels, check_box, image_header_size, list_image_names
from alod.data.index import DetectionIndex
from alod.data.problems import (
    BAD_COORDINATES,
    BAD_RECORD,
    DUPLICATE_NAME,
    IMAGE_OUTSIDE_ROOT,
    MISSING_IMAGE,
    NOTE_KINDS,
    UNKNOWN_CATEGORY,
    UNREADABLE_IMAGE,
    LabelFileError,
    Problem,
    ProblemLog,
    image_name_problem,
    note_zero_area_boxes,
)
from alod.utils import sha256_file

#: Class-name files, in the order they are looked for in each folder (see the module docstring).
CLASS_FILES = ("classes.txt", "obj.names", "data.yaml", "data.yml")
#: How many folders up from the labels folder class files are looked for (0: the folder itself).
CLASS_FILE_LEVELS = 2
#: The largest label file read (a label file holds a few hundred bytes per box).
MAX_LABEL_BYTES = 16 << 20
#: The largest class file read.
MAX_CLASS_FILE_BYTES = 1 << 20


# ----------------------------------------------------------------------------- class names
def find_class_file(labels: str | os.PathLike) -> Path | None:
    """The first of :data:`CLASS_FILES` found in ``labels``, its parent or grandparent (nearest
    folder first), or ``None``."""
    folder = Path(os.path.abspath(labels))
    for _ in range(CLASS_FILE_LEVELS + 1):
        for name in CLASS_FILES:
            if (folder / name).is_file():
                return folder / name
        folder = folder.parent
    return None


def parse_class_names(text: str, *, yaml_file: bool, where: str) -> tuple[str, ...]:
    """Class names in id order from a class file's text (``classes.txt`` / ``obj.names`` lines,
    or a ``data.yaml`` ``names`` list or ``{id: name}`` mapping).

    Raises:
        LabelFileError: naming ``where``, for anything that does not give unique, non-empty names
            for ids ``0..n-1``.
    """
    if yaml_file:
        names = _yaml_names(text, where)
    else:
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
        if "" in names:
            raise LabelFileError(f"{where}: line {names.index('') + 1} is blank; class ids are line numbers, "
                                 "so a blank line would shift every name after it: remove it")
    if not names:
        raise LabelFileError(f"{where}: names no class")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise LabelFileError(f"{where}: class names must be non-empty strings (got {bad[:3]!r})")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LabelFileError(f"{where}: class names must be unique; repeated: {dup}")
    return tuple(n.strip() for n in names)


def _yaml_names(text: str, where: str) -> list:
    """The ``names`` of an ultralytics ``data.yaml`` as a list in id order."""

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LabelFileError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: (not isinstance(k, int), k if isinstance(k, int) else 0))
        if keys != list(range(len(names))):
            raise LabelFileError(f"{where}: 'names' as a mapping needs the ids 0..{len(names) - 1} as keys "
                                 f"(got {list(names)[:5]})")
        names = [names[k] for k in keys]
    if not isinstance(names, list):
        raise LabelFileError(f"{where}: no 'names' list (or {{id: name}} mapping) of class names")
    nc = doc.get("nc")
    if nc is not None and nc != len(names):
        raise LabelFileError(f"{where}: nc is {nc!r} but 'names' holds {len(names)} names")
    return names


def read_class_file(path: str | os.PathLike) -> tuple[str, ...]:
    """The class names of a class file (see :func:`parse_class_names`).

    Raises:
        LabelFileError: larger than :data:`MAX_CLASS_FILE_BYTES`, not UTF-8, or not a class list.
    """
    p = Path(path)
    if p.stat().st_size > MAX_CLASS_FILE_BYTES:
        raise LabelFileError(f"{p}: larger than {MAX_CLASS_FILE_BYTES >> 20} MiB; not a class-name file")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelFileError(f"{p}: not UTF-8 text ({e.reason})") from None
    return parse_class_names(text, yaml_file=p.suffix.lower() in (".yaml", ".yml"), where=str(p))


# ----------------------------------------------------------------------------- the file set
def label_files(labels: str | os.PathLike) -> list[str]:
    """Relative ``/``-separated names of the ``*.txt`` label files under ``labels`` (recursive,
    sorted, hidden files and folders left out, ``classes.txt`` at the top left out).

    Raises:
        LabelFileError: ``labels`` is not a folder.
    """
    root = Path(labels)
    if not root.is_dir():
        raise LabelFileError(f"{root}: not a folder; data.format=yolo reads a folder of <image stem>.txt label "
                             "files (data.{split}_labels), beside an image folder (data.{split}_images)")
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.startswith(".") or not f.lower().endswith(".txt") or (rel == "." and f in CLASS_FILES):
                continue
            names.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
    return sorted(names)


def yolo_fingerprint(path: str | os.PathLike, *, image_root: str | os.PathLike | None = None) -> str:
    """sha256 hex of everything :func:`read_yolo` reads: the class file found (path and bytes),
    every label file's name and bytes, and with ``image_root`` every image's name, size and mtime
    (the sizes come from the image headers, so a replaced image must change the key)."""
    h = hashlib.sha256()
    cls = find_class_file(path)
    h.update((json.dumps([None if cls is None else str(cls), None if cls is None else sha256_file(cls)]) + "\n").encode())
    for name in label_files(path):
        h.update((json.dumps([name, sha256_file(Path(path) / name)]) + "\n").encode())
    if image_root is not None:
        for name in list_image_names(image_root):
            try:
                st = os.stat(Path(image_root) / name)
                stamp = [st.st_size, st.st_mtime_ns]
            except OSError:
                stamp = None
            h.update((json.dumps(["image", name, stamp]) + "\n").encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- one file
def _read_lines(path: Path) -> tuple[list[str] | None, str | None]:
    """``(lines, None)`` of a label file, or ``(None, why)``."""
    try:
        if path.stat().st_size > MAX_LABEL_BYTES:
            return None, f"larger than {MAX_LABEL_BYTES >> 20} MiB; not a YOLO label file"
        return path.read_bytes().decode("utf-8-sig").splitlines(), None
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text ({e.reason})"
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"


def parse_line(line: str, n_classes: int) -> tuple[str | None, str, tuple | None]:
    """One label line -> ``(None, "", (class_id, cx, cy, w, h))``, or ``(kind, detail, None)``.

    ``kind`` is ``bad_record`` (not 5 fields, a class id that is not an integer),
    ``unknown_category`` (class id outside ``0..n_classes-1``) or ``bad_coordinates``; the values
    are unchecked otherwise (NaN and ranges are :func:`check_box`'s).
    """
    fields = line.split()
    if len(fields) != 5:
        what = " (a segmentation polygon?)" if len(fields) > 5 and len(fields) % 2 == 1 else ""
        return (BAD_RECORD, f"{len(fields)} fields{what}; a YOLO box line is 'class_id cx cy w h' "
                f"(got {line.strip()[:60]!r})", None)
    try:
        k = int(fields[0])
    except ValueError:
        return BAD_RECORD, f"class id {fields[0][:20]!r} is not an integer", None
    if not 0 <= k < n_classes:
        return UNKNOWN_CATEGORY, f"class id {k} is not in 0..{n_classes - 1} (the class list)", None
    try:
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        return BAD_COORDINATES, f"cx cy w h must be numbers (got {' '.join(fields[1:])[:60]!r})", None
    return None, "", (k, cx, cy, w, h)


def to_pixels(cx: float, cy: float, w: float, h: float, width: int, height: int) -> tuple[float, ...]:
    """Normalised ``cx cy w h`` -> ``(x1, y1, x2, y2)`` px of a ``width`` x ``height`` image."""
    return ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)


def _boxes(lines: list[str], *, classes: Sequence[str], width: int, height: int, report) -> list[tuple]:
    """``[(line number, (x1, y1, x2, y2), label)]`` of the good lines; ``report(kind, line, detail)``
    receives every bad one (and the notes)."""
    kept = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        kind, detail, parsed = parse_line(line, len(classes))
        box = None
        if parsed is not None:
            # NaN and inf survive the conversion, so check_box names them as for every reader.
            kind, detail, box = check_box(*to_pixels(*parsed[1:], width, height), width, height)
            if kind is not None:
                detail = f"{detail}; the line is {line.strip()[:60]!r}"
        if kind is not None:
            report(kind, k, detail)
        if box is not None:
            kept.append((k, box, parsed[0] + 1))
    return kept


# ----------------------------------------------------------------------------- the reader
def read_yolo(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike,
    classes: Sequence[str] | None = None,
    problems: ProblemLog | None = None,
) -> ParsedLabels:
    """Parse a folder of YOLO label files against the images of ``image_root`` (module docstring).

    Args:
        path: the labels folder, e.g. ``dataset/labels/train``.
        image_root: the image folder, e.g. ``dataset/images/train``; its images are the frames.
        classes: the class names in id order (``data.classes``); ``None``: from the class file
            (:func:`find_class_file`).
        problems: where bad records go; default ``ProblemLog(strict=True)`` (raise on the first).

    Returns:
        :class:`ParsedLabels` (``layout="yolo"``) whose index has boxes ``float64[M, 4]`` x1, y1,
        x2, y2 px (normalised values times the header's width and height), labels ``class_id + 1``
        in ``1..C``, nothing ignored. ``frame_index`` holds positions in the image listing.

    Raises:
        LabelFileError: no ``image_root``, ``path`` not a folder or holding no ``.txt`` file, no
            class names (or a broken class file), or (strict) the first bad record.
    """
    problems = ProblemLog(strict=True) if problems is None else problems
    file = os.fspath(path)
    if not image_root or not Path(image_root).is_dir():
        raise LabelFileError(f"{file}: data.format=yolo needs the image folder (data.{{split}}_images; got "
                             f"{os.fspath(image_root)!r}): the frames are its images, their sizes its headers")
    labels = label_files(path)
    if not labels:
        raise LabelFileError(f"{file}: the folder holds no .txt label file; data.format=yolo reads one "
                             "<image stem>.txt per image")
    classes = _classes(path, classes)
    images = list_image_names(image_root)
    by_stem = {posixpath.splitext(n)[0]: n for n in labels}
    frames, used = _frames(images, by_stem, image_root=Path(image_root), file=file, problems=problems)
    orphans = [stem for stem in by_stem if stem not in used]
    parsed = _index(frames, Path(path), classes=classes, image_root=image_root, file=file, problems=problems,
                    num_frames=len(images) + len(orphans))
    for j, stem in enumerate(orphans):  # frame positions count on after the images
        problems.add(Problem(MISSING_IMAGE, file, len(images) + j, None, None, None,
                             f"label file {by_stem[stem]} has no image {stem}.<jpg|png|...> in {os.fspath(image_root)}",
                             "frame"))
    return parsed


def _classes(path, classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is not None:
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be unique (got {list(classes)})")
        return tuple(classes)
    found = find_class_file(path)
    if found is None:
        raise LabelFileError(f"{os.fspath(path)}: no class names: set data.classes, or put one of "
                             f"{', '.join(CLASS_FILES)} in the labels folder or up to {CLASS_FILE_LEVELS} folders "
                             "above it (class_id k is its line k + 1, or names[k] in data.yaml)")
    return read_class_file(found)


def _frames(images: list[str], by_stem: dict[str, str], *, image_root: Path, file: str,
            problems: ProblemLog) -> tuple[list[tuple], set[str]]:
    """``([(position, name, width, height, label file or None)], stems with an image)`` for the
    images that pass the frame checks (name, unique stem, readable header)."""
    frames, seen = [], {}
    for fi, name in enumerate(images):
        stem = posixpath.splitext(name)[0]
        why = image_name_problem(name)
        if why is not None:
            bad = (IMAGE_OUTSIDE_ROOT, why)
        elif stem in seen:
            bad = (DUPLICATE_NAME, f"image {name!r} has the stem of {seen[stem]!r}: both would take the "
                                   f"label file {stem}.txt; rename one")
        else:
            size, why = image_header_size(image_root / name)
            bad = None if size is not None else (UNREADABLE_IMAGE, why)
        seen.setdefault(stem, name)
        if bad is not None:
            problems.add(Problem(bad[0], file, fi, name, None, None, bad[1], "frame"))
            continue
        frames.append((fi, name, size[0], size[1], by_stem.get(stem)))
    return frames, {s for s in seen if s in by_stem}


def _index(frames: list[tuple], labels: Path, *, classes: tuple[str, ...], image_root, file: str,
           problems: ProblemLog, num_frames: int) -> ParsedLabels:
    """Read each frame's label file and build the index (module docstring for the problems)."""
    names, widths, heights, boxes, labs, positions, kept_frames = [], [], [], [], [], [], []
    for fi, name, w, h, label_file in frames:
        lines, why = ([], None) if label_file is None else _read_lines(labels / label_file)
        if why is not None:
            problems.add(Problem(BAD_RECORD, file, fi, name, None, None, f"{label_file}: {why}", "frame"))
            continue

        def report(kind, k, detail, fi=fi, name=name, label_file=label_file):
            severity, skipped = ("note", "nothing") if kind in NOTE_KINDS else ("error", "box")
            problems.add(Problem(kind, file, fi, name, k, None, f"{label_file} line {k + 1}: {detail}", skipped,
                                 severity=severity))

        kept = _boxes(lines, classes=classes, width=w, height=h, report=report)
        names.append(name)
        widths.append(w)
        heights.append(h)
        boxes.append(np.array([b for _, b, _ in kept], np.float64).reshape(-1, 4))
        labs.append(np.array([lab for _, _, lab in kept], np.int64))
        positions.extend(k for k, _, _ in kept)
        kept_frames.append(fi)
    index = DetectionIndex.from_lists(image_root=image_root, names=names, widths=widths, heights=heights,
                                      boxes_per_image=boxes, labels_per_image=labs, classes=classes, source=file)
    frame_index = np.array(kept_frames, np.int64)
    note_zero_area_boxes(index, frame_index=frame_index, label_pos=np.array(positions, np.int64),
                         problems=problems, file=file)
    return ParsedLabels(index=index, frame_index=frame_index, num_frames=num_frames, layout="yolo")


# ----------------------------------------------------------------------------- registry entry
def _read_yolo_entry(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike = "",
    image_size: tuple[int, int] | None = None,
    problems: ProblemLog | None = None,
    classes: Sequence[str] | None = None,
) -> ParsedLabels:
    """:func:`read_yolo` with the registry's reader signature (``image_size`` is ignored: every
    image's header gives its size)."""
    return read_yolo(path, image_root=image_root, classes=classes, problems=problems)


#: YOLO text labels: a folder of <image stem>.txt files beside an image folder. Never chosen by
#: ``auto`` (a folder has no head to sniff).
YOLO_FORMAT = LabelFormat(
    name="yolo",
    family="yolo",
    read=_read_yolo_entry,
    sniff=None,
    # No prediction reader: ``alod evaluate`` refuses YOLO. Normalised coordinates are continuous:
    # widths are x2 - x1.
    box_convention="coco",
    description="YOLO text labels (a folder of <image stem>.txt files, class_id cx cy w h normalised; "
                "classes from data.classes or classes.txt / data.yaml)",
    reads_folders=True,
    fingerprint=yolo_fingerprint,
    accepts_classes=True,
    needs_images=True,
)
