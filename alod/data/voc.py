"""Pascal VOC XML -> :class:`DetectionIndex`.

``path`` is a set of VOC XML files, given as either

* a folder: every ``*.xml`` directly in it (any case; hidden files such as macOS ``._x.xml`` left
  out), in sorted name order; or
* an image-set list (``<voc_root>/ImageSets/Main/train.txt``): one image id per line (the first
  word of a line, so per-class lists ``cat_train.txt`` with their ``1`` / ``-1`` column work too;
  blank lines are skipped), read as ``<voc_root>/Annotations/<id>.xml`` with ``voc_root`` two
  folders above the list's own, as in the standard layout.

Each file is parsed with :mod:`defusedxml` (never the standard-library parser: a label file may
come from a stranger), with DTDs refused: VOC files have none, and a DTD is what entity bombs and
external entities need. A file that does not parse is a ``bad_record`` of its frame.

* Frame: ``<filename>`` is the image name (relative to ``image_root``, checked with
  :func:`alod.data.problems.image_name_problem`), ``<size><width>/<height>`` the image size.
  ``frame`` in problems is the file's position in the set (0-based); details name the XML file.
* Boxes: ``<object>`` s with ``<name>``, ``<bndbox><xmin>, <ymin>, <xmax>, <ymax>`` and an optional
  ``<difficult>`` (``0`` / ``1``). ``difficult=1`` becomes ``ignore = True``: a crowd region in
  evaluation, never a training target. pycocotools then neither rewards nor punishes a detection on
  it, as the VOC devkit does, but it measures overlap with it as intersection over the detection's
  area where the devkit uses IoU, so a few borderline detections can count differently.
* Coordinates are kept as the file writes them, see :data:`COORDINATES`.
* Classes: ``classes`` given (``data.classes``): label ``k`` is ``classes[k - 1]`` and any other
  name is an ``unknown_category`` problem. Not given: the sorted names of every object in the
  frames that passed the frame checks, so the same files always give the same labels;
  :func:`alod.data.sources.load_split` maps a val split onto the training split's classes.

:data:`VOC_FORMAT` is this format's entry in the registry :data:`alod.data.readers.LABEL_FORMATS`.
``auto`` never picks it: detection sees a file's first bytes, and an image-set list (plain ids) has
no signature and a folder no bytes at all; name ``data.format: voc`` (``data.kind: voc`` implies it).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from defusedxml.ElementTree import ParseError, parse

from alod.data.common import LabelFormat, ParsedLabels, check_box
from alod.data.index import DetectionIndex
from alod.data.problems import (
    BAD_COORDINATES,
    BAD_RECORD,
    DUPLICATE_NAME,
    IMAGE_OUTSIDE_ROOT,
    MISSING_NAME,
    NOTE_KINDS,
    UNKNOWN_CATEGORY,
    LabelFileError,
    Problem,
    ProblemLog,
    image_name_problem,
    note_zero_area_boxes,
)
from alod.utils import sha256_file

#: VOC writes 1-based pixel indices, inclusive at both ends (a box on pixels 1..W of a W-wide image
#: has ``xmin = 1, xmax = W``). They are kept as written, not shifted to 0-based, because:
#: (1) the per-cycle evaluation measures widths as ``x2 - x1 + 1`` (``box_convention="bdd100k"``),
#: which on unshifted values is exactly the VOC devkit's ``xmax - xmin + 1`` (IoU does not change
#: when every box moves by the same pixel); detectron2's ``xmin - 1`` would make widths one pixel
#: wider than the devkit's under that evaluation; (2) a box drawn as a single click
#: (``xmin == xmax``) stays a zero-area box, noted (``zero_area_box``) and dropped from training
#: targets as in the other formats; (3) :func:`alod.data.common.check_box` accepts ``xmax = W``.
#: Training sees each box one pixel narrower (left and top edges one pixel in): irrelevant for cells.
COORDINATES = "voc-1-based-inclusive-as-written"

_COORD_TAGS = ("xmin", "ymin", "xmax", "ymax")
#: Largest image side accepted from ``<size>`` (the index stores sizes as int32).
MAX_SIDE = 2**31 - 1


# ----------------------------------------------------------------------------- the file set
def voc_files(path: str | os.PathLike) -> tuple[Path, list[tuple[str, Path | None, str | None]]]:
    """The XML files that ``path`` (a folder or an image-set list) stands for, in reading order.

    Returns:
        ``(base, entries)``: ``base`` is the folder XML names in messages are relative to (the
        folder itself, or ``voc_root`` for a list); each entry is ``(key, xml, why)`` with ``key``
        the file name (folder) or image id (list), ``xml`` its path, or ``None`` and ``why`` in
        words when the id cannot name a file inside ``Annotations``.

    Raises:
        LabelFileError: the folder holds no XML file, the list is not UTF-8 text or names no id,
            or ``<voc_root>/Annotations`` does not exist.
    """
    p = Path(path)
    if p.is_dir():
        names = sorted(n for n in os.listdir(p) if n.lower().endswith(".xml") and not n.startswith("."))
        if not names:
            raise LabelFileError(f"{p}: the folder holds no .xml file; data.format=voc reads a folder of VOC "
                                 "XML files or an ImageSets/Main/<split>.txt list")
        return p, [(n, p / n, None) for n in names]
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise LabelFileError(f"{p}: not UTF-8 text ({e.reason}); a VOC image-set list has one image id per "
                             "line") from None
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise LabelFileError(f"{p}: the image-set list names no image id (one per line)")
    # Lexical (no symlink resolution): voc_root is where the user's layout puts it.
    parents = Path(os.path.abspath(p)).parents
    root = parents[2] if len(parents) > 2 else parents[-1]
    if not (root / "Annotations").is_dir():
        raise LabelFileError(f"{p}: a VOC image-set list is read as <voc_root>/ImageSets/Main/{p.name} with the "
                             f"XML files in <voc_root>/Annotations, but {root / 'Annotations'} is not a folder")
    entries = []
    for i in ids:
        why = image_name_problem(i + ".xml")
        entries.append((i, None, f"image id {i!r}: {why}") if why else (i, root / "Annotations" / f"{i}.xml", None))
    return root, entries


def voc_fingerprint(path: str | os.PathLike) -> str:
    """sha256 hex of everything :func:`read_voc` reads for ``path``: the list file's bytes (if a
    list) and every XML file's name and bytes (``null`` for one that is missing or unreadable), so
    that editing, adding or removing any of them changes the index cache key."""
    h = hashlib.sha256()
    if Path(path).is_file():
        h.update(sha256_file(path).encode())
    _, entries = voc_files(path)
    for key, xml, _ in entries:
        try:
            digest = None if xml is None else sha256_file(xml)
        except OSError:
            digest = None
        h.update((json.dumps([key, digest]) + "\n").encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- one file
def _parse_frame(xml: Path):
    """``(frame, None)`` or ``(None, (kind, detail))`` for one XML file.

    ``frame`` is ``(name, width, height, objects)``; ``objects`` holds per ``<object>``
    ``(name or None, [xmin, ymin, xmax, ymax] texts, difficult text)``.
    """
    try:
        root = parse(os.fspath(xml), forbid_dtd=True).getroot()
    except FileNotFoundError:
        return None, (BAD_RECORD, "the annotation file does not exist")
    except (ParseError, ValueError, LookupError, OSError) as e:
        # ValueError covers defusedxml's refusals (DTDForbidden, EntitiesForbidden, ...) and bad
        # bytes; LookupError an unknown declared encoding.
        return None, (BAD_RECORD, f"not a usable XML file ({type(e).__name__}: {e})")
    if root.tag != "annotation":
        return None, (BAD_RECORD, f"the root element is <{root.tag}>, not <annotation>: not a VOC file")
    name = (root.findtext("filename") or "").strip()
    if not name:
        return None, (MISSING_NAME, "no <filename>")
    w, h = _side(root.findtext("size/width")), _side(root.findtext("size/height"))
    if w is None or h is None:
        return None, (BAD_RECORD, f"<size> needs integer <width> and <height> in 1..{MAX_SIDE} (width="
                                  f"{root.findtext('size/width')!r}, height={root.findtext('size/height')!r})")
    objects = [((o.findtext("name") or "").strip() or None,
                [o.findtext(f"bndbox/{t}") for t in _COORD_TAGS], o.findtext("difficult"))
               for o in root.findall("object")]  # direct children: VOC <part>s are not objects
    return (name, w, h, objects), None


def _side(text: str | None) -> int | None:
    """An image side from ``<width>`` / ``<height>`` text (``"640"``, also ``"640.0"``), or ``None``."""
    try:
        v = float((text or "").strip())
    except ValueError:
        return None
    return int(v) if v.is_integer() and 0 < v <= MAX_SIDE else None


def _check_object(obj, label_of: dict[str, int], width: int, height: int):
    """``(kind, detail, (box, label, ignore))`` of one object: ``kind`` ``None`` (a good box),
    a note kind (``box_clipped``: keep the clipped box) or an error kind (``box`` is ``None``)."""
    name, texts, difficult = obj
    if name is None:
        return BAD_RECORD, "object without a <name>", None
    if name not in label_of:
        return UNKNOWN_CATEGORY, f"class {name!r} is not in the class list {sorted(label_of)}", None
    try:
        x1, y1, x2, y2 = (float(t.strip()) for t in texts)
    except (AttributeError, ValueError):  # AttributeError: a missing element's None
        return BAD_COORDINATES, "<bndbox> needs numeric " + ", ".join(
            f"<{t}>" for t in _COORD_TAGS) + f" (got {dict(zip(_COORD_TAGS, texts))})", None
    flag = (difficult or "0").strip()
    if flag not in ("0", "1"):
        return BAD_RECORD, f"<difficult> must be 0 or 1 (got {difficult!r})", None
    kind, detail, box = check_box(x1, y1, x2, y2, width, height)
    return kind, detail, None if box is None else (box, label_of[name], flag == "1")


# ----------------------------------------------------------------------------- the reader
def read_voc(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike = "",
    classes: Sequence[str] | None = None,
    problems: ProblemLog | None = None,
) -> ParsedLabels:
    """Parse a folder of VOC XML files or an image-set list (see the module docstring).

    Args:
        path: e.g. ``VOC2007/ImageSets/Main/train.txt`` or ``VOC2007/Annotations``.
        image_root: stored in the index; images are not checked here (see ``load_index``).
        classes: the class names in label order (``data.classes``); ``None``: the sorted names
            found in the files.
        problems: where bad records go; default ``ProblemLog(strict=True)`` (raise on the first).

    Returns:
        :class:`ParsedLabels` (``layout="voc"``) whose index has boxes ``float64[M, 4]`` x1, y1,
        x2, y2 pixels as written (1-based, inclusive; :data:`COORDINATES`), labels in ``1..C``,
        ``ignore = difficult``. ``frame_index`` holds positions in the file set.

    Raises:
        LabelFileError: an empty file set, a list that is not text, no ``Annotations`` folder,
            or (strict) the first bad record.
    """
    problems = ProblemLog(strict=True) if problems is None else problems
    file = os.fspath(path)
    base, entries = voc_files(path)
    frames = _read_frames(entries, base=base, file=file, problems=problems)
    if classes is None:
        classes = sorted({o[0] for _, (_, _, _, objs) in frames for o in objs if o[0] is not None})
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be unique (got {list(classes)})")
    label_of = {c: k + 1 for k, c in enumerate(classes)}
    names, widths, heights, boxes, labels, ignore, positions = [], [], [], [], [], [], []
    for fi, (name, w, h, objects) in frames:
        kept = []
        for k, obj in enumerate(objects):
            kind, detail, good = _check_object(obj, label_of, w, h)
            if kind is not None:
                where = f"{_rel(entries[fi][1], base)}: object {k} ({obj[0]!r}): {detail}"
                severity, skipped = ("note", "nothing") if kind in NOTE_KINDS else ("error", "box")
                problems.add(Problem(kind, file, fi, name, k, None, where, skipped, severity=severity))
            if good is not None:
                kept.append((k, *good))
        names.append(name)
        widths.append(w)
        heights.append(h)
        boxes.append(np.array([b for _, b, _, _ in kept], np.float64).reshape(-1, 4))
        labels.append(np.array([lab for _, _, lab, _ in kept], np.int64))
        ignore.append(np.array([ig for _, _, _, ig in kept], bool))
        positions.extend(k for k, *_ in kept)
    index = DetectionIndex.from_lists(image_root=image_root, names=names, widths=widths, heights=heights,
                                      boxes_per_image=boxes, labels_per_image=labels, ignore_per_image=ignore,
                                      classes=tuple(classes), source=file)
    frame_index = np.array([fi for fi, _ in frames], np.int64)
    note_zero_area_boxes(index, frame_index=frame_index, label_pos=np.array(positions, np.int64),
                         problems=problems, file=file)
    return ParsedLabels(index=index, frame_index=frame_index, num_frames=len(entries), layout="voc")


def _read_frames(entries, *, base: Path, file: str, problems: ProblemLog) -> list[tuple[int, tuple]]:
    """``[(position in the file set, (name, width, height, objects))]`` of the frames that pass the
    frame checks (parse, name, size, unique name); the others go to ``problems``."""
    frames = []
    seen: set[str] = set()
    for fi, (_key, xml, why) in enumerate(entries):
        frame, bad = (None, (IMAGE_OUTSIDE_ROOT, why)) if xml is None else _parse_frame(xml)
        name = None if frame is None else frame[0]
        if bad is None:
            outside = image_name_problem(name)
            if outside is not None:
                bad = (IMAGE_OUTSIDE_ROOT, f"<filename>: {outside}")
            elif name in seen:
                bad = (DUPLICATE_NAME, f"<filename> {name!r} is used by an earlier file")
        if bad is not None:
            kind, detail = bad
            where = detail if xml is None else f"{_rel(xml, base)}: {detail}"
            problems.add(Problem(kind, file, fi, name, None, None, where, "frame"))
            continue
        seen.add(name)
        frames.append((fi, frame))
    return frames


def _rel(xml: Path, base: Path) -> str:
    """The XML file's name as messages give it: relative to the folder or ``voc_root``."""
    return Path(os.path.relpath(xml, base)).as_posix()


# ----------------------------------------------------------------------------- registry entry
def _read_voc_entry(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike = "",
    image_size: tuple[int, int] | None = None,
    problems: ProblemLog | None = None,
    classes: Sequence[str] | None = None,
) -> ParsedLabels:
    """:func:`read_voc` with the registry's reader signature (``image_size`` is ignored: every
    XML file gives its image's size)."""
    return read_voc(path, image_root=image_root, classes=classes, problems=problems)


#: Pascal VOC XML: a folder of files or an ImageSets list. Never chosen by ``auto`` (see above).
VOC_FORMAT = LabelFormat(
    name="voc",
    family="voc",
    read=_read_voc_entry,
    sniff=None,
    # No prediction reader: ``alod evaluate`` refuses VOC. The devkit's widths are xmax - xmin + 1.
    box_convention="bdd100k",
    description="Pascal VOC XML (a folder of .xml files, or an ImageSets/Main/<split>.txt list of ids)",
    reads_folders=True,
    fingerprint=voc_fingerprint,
    accepts_classes=True,
)
