"""YOLO text labels: a cycle's images with pre-annotations out, the labels folder (or zip) back in.

**Export layout** (what Label Studio's YOLO import, labelImg and ultralytics-style tools read)::

    out_dir/images/<name>          the images (copies or symlinks), subfolders of the names mirrored
    out_dir/labels/<stem>.txt      one per image, the same subfolders; empty when it has no pre-annotation
    out_dir/classes.txt            the class names, one a line: class_id k is line k + 1
    out_dir/data.yaml              the same names for ultralytics-style tools (names, nc, train/val: images)

Each label line is ``class_id cx cy w h``, the box centre and size divided by the image's width
and height (8 decimals), ``class_id`` 0-based in the dataset's class order. **Scores are not
carried**: a YOLO label line has no confidence field (a sixth column is a prediction file, which no
labeling tool reads as labels), so a pre-annotation looks like any box; review every image before
importing. Two images with the same stem (``x.jpg`` and ``x.png``) would share a label file and
are refused at export; a class name that a ``classes.txt`` line cannot hold (a line break, leading
or trailing spaces) is refused too.

**Import** takes the export folder (edited in place), any folder or ``.zip`` holding a class file
and label files (Label Studio's and CVAT's YOLO exports), nothing extracted:

* **Classes.** ``class_id`` is named by the file's own class file, not by the export's order
  (Label Studio sorts its ``classes.txt``): the shallowest of ``classes.txt``, ``obj.names``,
  ``data.yaml``, ``data.yml`` (same rules as the YOLO label reader,
  :func:`alod.data.yolo.parse_class_names`). None, or a broken one, is an
  :class:`~alod.utils.AlodError`: ids that cannot be named cannot be imported. A name that is not
  one of the dataset's classes makes its boxes ``unknown_category``.
* **Which image.** Every other ``*.txt`` is a label file; its path without ``.txt`` is matched to
  the exported names without their extension as COCO and Label Studio references are
  (:meth:`alod.annotate.files.NameMatcher.match`: the exact name, else the one with that file name
  whose folders agree best, Label Studio's ``<8 hex>-`` upload prefix removed if needed), so
  ``labels/cam1/a.txt``, ``obj_train_data/a.txt`` and ``labels/1a2b3c4d-a.txt`` all find
  ``cam1/a.jpg`` when it is the only exported ``a``. A label file that matches no exported image is
  ``image_not_asked_for`` (image lists such as ``train.txt`` are passed over silently); a zip
  member whose name is absolute or has ``..`` is ``unsafe_image_name``; two files for one image:
  ``duplicate_image``.
* **No label file = not answered.** The YOLO label reader reads a missing file as "no objects"
  (the dataset convention), but an import must tell "looked at, and empty" from "never labeled":
  the export writes a file for every image (empty or not), as CVAT and Label Studio do, so an
  exported image without one is ``image_missing``. An empty file is "annotated, and empty".
* **Lines.** Blank lines are skipped. Not 5 fields: ``not_this_format`` (a polygon's odd field
  count: ``not_a_box``); a class id that is not an integer in the class file's range:
  ``unknown_category``; a coordinate that is not a number: ``degenerate_box``; the box
  ``(cx - w/2) * W ...`` in pixels of the **exported** image (YOLO records no image size, so a
  resized copy cannot be detected) then goes through the checks every format shares
  (:class:`~alod.annotate.core.ImportBuilder`: outside, clipped, degenerate, duplicate, tiny).
* A label file larger than :data:`MAX_TXT_BYTES` or not UTF-8: ``not_this_format`` (skipped).
"""
from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path

import yaml

from alod.annotate.core import AnnotationFormat, ExportTask, ImportBuilder, ImportResult
from alod.annotate.files import (
    Member,
    NameMatcher,
    check_export_names,
    check_images_exist,
    export_rows,
    files_by_stem,
    place_image,
    read_members,
    ref_segments,
)
from alod.data.yolo import CLASS_FILES, parse_class_names, parse_line, to_pixels
from alod.utils import AlodError, atomic_write_text

NAME = "yolo"
VERSION = "YOLO text labels (class_id cx cy w h, normalised; classes.txt / data.yaml)"
IMAGES_DIR, LABELS_DIR, CLASSES_FILE, DATA_FILE = "images", "labels", "classes.txt", "data.yaml"
#: The largest label or class file read (also inside a zip, uncompressed).
MAX_TXT_BYTES = 16 << 20
#: The endings of the files an import reads (and ``alod import`` hashes).
SUFFIXES = (".txt", ".names", ".yaml", ".yml")
#: Image lists that YOLO exports hold beside the labels (not label files), passed over when they
#: match no exported image.
_LIST_FILES = {"train.txt", "val.txt", "valid.txt", "test.txt", "readme.txt", "notes.txt"}
#: parse_line's kinds (the label reader's) -> the import's problem kinds.
_KIND = {"bad_record": "not_this_format", "unknown_category": "unknown_category", "bad_coordinates": "degenerate_box"}


# ---------------------------------------------------------------------------------------------
# Export

def _check_classes(classes: tuple[str, ...]) -> None:
    bad = [c for c in classes if not c or c != c.strip() or any(ch in c for ch in "\r\n\x00")]
    if bad:
        raise AlodError(f"class names {bad!r} cannot be lines of classes.txt (empty, a line break, or spaces at "
                        "either end); rename them")


def export(task: ExportTask, out_dir: str | Path, *, copy_images: bool = False) -> list[Path]:
    """Write ``images/``, ``labels/<stem>.txt`` per image, ``classes.txt`` and ``data.yaml``.

    Args:
        task: the images (names, sizes, pre-annotations as ``float64[N, 4]`` x1,y1,x2,y2 pixels,
            labels in ``1..C``; scores are not written) and classes.
        out_dir: the folder to fill (created).
        copy_images: copy the images instead of symlinking them.

    Returns:
        ``[out_dir]``: the folder to open or upload (zip it for Label Studio or CVAT).

    Raises:
        AlodError: an image name that cannot round-trip, two images sharing a label file, a class
            name classes.txt cannot hold, labels outside ``1..C``, a missing image, an unwritable
            folder.
    """

    out_dir = Path(out_dir)
    check_export_names(task.images)
    _check_classes(task.classes)
    stems = files_by_stem(task, what="YOLO label", suffix=".txt")
    rows = export_rows(task)
    check_images_exist(task)
    names = list(task.classes)
    try:
        for stem, row in zip(stems, rows):
            W, H = int(row.image.width), int(row.image.height)
            lines = [f"{k - 1} {(x1 + x2) / 2 / W:.8f} {(y1 + y2) / 2 / H:.8f} {(x2 - x1) / W:.8f} {(y2 - y1) / H:.8f}\n"
                     for (x1, y1, x2, y2), k in zip(row.boxes.tolist(), row.labels.tolist(), strict=True)]
            place_image(Path(row.image.path), out_dir / IMAGES_DIR / row.image.name, copy=copy_images)
            atomic_write_text(out_dir / LABELS_DIR / f"{stem}.txt", "".join(lines))
        atomic_write_text(out_dir / CLASSES_FILE, "".join(f"{c}\n" for c in names))
        atomic_write_text(out_dir / DATA_FILE, yaml.safe_dump({"train": IMAGES_DIR, "val": IMAGES_DIR, "nc": len(names),
                                                              "names": names}, allow_unicode=True, sort_keys=False))
    except OSError as e:
        raise AlodError(f"cannot write the YOLO files into {out_dir}: {e}") from None
    return [out_dir]


# ---------------------------------------------------------------------------------------------
# Import

def _class_names(members: list[Member], path: Path) -> tuple[str, ...]:
    """The names of the shallowest class file among ``members`` (:data:`CLASS_FILES` order breaks
    ties). Raises :class:`AlodError` when there is none or it cannot be read."""
    found = [m for m in members if posixpath.basename(m.name) in CLASS_FILES and not m.unsafe]
    if not found:
        raise AlodError(f"{path}: no class file ({', '.join(CLASS_FILES)}); YOLO class ids cannot be named "
                        "without one: import the folder or zip that holds it")
    m = min(found, key=lambda m: (m.name.count("/"), CLASS_FILES.index(posixpath.basename(m.name))))
    if m.data is None:
        raise AlodError(f"{m.file}: {m.why}")
    try:
        text = m.data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AlodError(f"{m.file}: not UTF-8 text ({e.reason})") from None
    return parse_class_names(text, yaml_file=m.name.lower().endswith((".yaml", ".yml")), where=m.file)


class _Images:
    """Exported images by their name without extension (YOLO label files name images that way)."""

    def __init__(self, task: ExportTask):
        self.name_of = {posixpath.splitext(im.name)[0]: im.name for im in task.images}
        self.size = {im.name: (int(im.width), int(im.height)) for im in task.images}
        self.matcher = NameMatcher(self.name_of)

    def find(self, b: ImportBuilder, m: Member) -> str | None:
        """The exported image of label file ``m`` (opened in ``b``), or ``None`` (problem recorded)."""
        segments = ref_segments(m.name[: -len(".txt")])
        stem, why = self.matcher.match(segments) if segments else (None, "it names no file")
        if stem is None:
            if posixpath.basename(m.name).lower() not in _LIST_FILES:
                b.problem(m.name, "image_not_asked_for", f"a label file for no exported image ({why}); skipped")
            return None
        name = self.name_of[stem]
        return name if b.image(name, m.name) else None


def _lines(b: ImportBuilder, name: str, where: str, text: str, classes: tuple[str, ...], size) -> None:
    for k, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        w = f"{where} line {k + 1}"
        kind, detail, parsed = parse_line(line, len(classes))
        if kind is not None:
            polygon = kind == "bad_record" and "polygon" in detail
            b.problem(w, "not_a_box" if polygon else _KIND[kind], f"{detail}; skipped")
            continue
        b.box(name, w, classes[parsed[0]], *to_pixels(*parsed[1:], *size))


def read(path: str | Path, task: ExportTask) -> ImportResult:
    """Read YOLO label files (a folder or a zip with a class file) back into boxes for ``task``.

    Returns:
        :class:`~alod.annotate.core.ImportResult` with ``float64[K, 4]`` x1,y1,x2,y2 pixel boxes
        and ``int64[K]`` labels per answered image, and every problem (see the module docstring).

    Raises:
        AlodError: ``path`` is missing or a single file, holds no or a broken class file, or no
            label file.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".txt":
        raise AlodError(f"{path}: one label file cannot be imported alone (its class ids need the class file); "
                        "give the YOLO folder or zip")
    members = read_members(path, suffixes=SUFFIXES, max_bytes=MAX_TXT_BYTES)
    classes = _class_names(members, path)
    labels = [m for m in members if m.name.lower().endswith(".txt") and posixpath.basename(m.name) not in CLASS_FILES]
    if not labels:
        raise AlodError(f"{path}: no YOLO label file (<image stem>.txt); give the YOLO folder or zip")
    b, images = ImportBuilder(task, path, NAME), _Images(task)
    for m in labels:
        b.file = m.file
        if m.data is None:
            b.problem(m.name, "unsafe_image_name" if m.unsafe else "not_this_format", f"this file {m.why}; skipped")
            continue
        try:
            text = m.data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            b.problem(m.name, "not_this_format", f"not UTF-8 text ({e.reason}); skipped")
            continue
        name = images.find(b, m)
        if name is not None:
            _lines(b, name, m.name, text, classes, images.size[name])
    b.file = str(path)
    return b.finish()


def sniff(path: str | Path) -> bool:
    """Whether ``path`` is a folder or zip with a class file (at its top or one folder down) and at
    least one other ``.txt`` file."""

    path = Path(path)
    try:
        if path.is_dir():
            names = [p.relative_to(path).as_posix() for pattern in ("*", "*/*") for p in path.glob(pattern)]
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") <= 2]
        else:
            return False
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return False
    has_classes = any(posixpath.basename(n) in CLASS_FILES and n.count("/") <= 1 for n in names)
    return has_classes and any(n.lower().endswith(".txt") and posixpath.basename(n) not in CLASS_FILES for n in names)


FORMAT = AnnotationFormat(name=NAME, export=export, read=read, sniff=sniff, version=VERSION, suffixes=SUFFIXES)
