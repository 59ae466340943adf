"""LabelMe (labelme 5.x JSON): one JSON file per image, written next to the image.

**Export layout.** For an image named ``cam1/0001.jpg`` in the dataset, the export folder gets
``cam1/0001.jpg`` (a copy, or a symlink to the original) and ``cam1/0001.json`` beside it, with
``imagePath: "0001.jpg"``: the dataset's subfolders are mirrored, so ``labelme <export folder>``
(which walks subfolders and keeps each label file beside its image) opens every image, and on import
the name comes back as *the JSON's folder relative to the folder imported, joined with its
imagePath*. Two images that would share a label file (``x.jpg`` and ``x.png``) are refused at
export, as labelme itself could not keep both. labelme lists files by name, so the task's priority
order is not kept.

**Export fields**, as labelme writes them: ``version``, ``flags: {}``, ``shapes``, ``imagePath``,
``imageData: null``, ``imageHeight``, ``imageWidth``. Each pre-annotation is a shape
``{label, points: [[x1, y1], [x2, y2]], group_id: null, description: "{\"score\": 0.873}",
shape_type: "rectangle", flags: {}}``. The model's score goes into ``description`` as JSON, the way
labelme's own AI detector writes its scores (``app.py``: ``description=json.dumps(dict(score=...))``);
not into ``flags``, which labelme's reader accepts only as ``str -> bool``.

**Import** takes a folder (every ``*.json`` under it, sorted, symlinked files and hidden entries
skipped) or one JSON file:

* ``rectangle`` shapes become boxes (corners in any order; clipping and the other checks are
  :class:`~alod.annotate.core.ImportBuilder`'s). A rectangle without exactly two points is a
  ``degenerate_box``.
* A shape **without** ``shape_type`` that has exactly two points (files written by other programs
  in labelme's style, e.g. ``annotation_samples/labelme/cover_source.json``) is taken as a
  rectangle, with no problem noted: labelme 5 would read it as a polygon, but a two-vertex polygon
  has no area and labelme cannot draw one, so a box is the only meaning it can have. Without
  ``shape_type`` and with any other number of points it is a polygon (labelme's default).
* ``polygon``, ``circle``, ``line``, ``linestrip``, ``point``, ``points``, ``mask`` and anything else:
  ``not_a_box``.
* The image is matched by its normalised imagePath (``\\`` read as ``/``) joined onto the JSON's
  folder: the exported name when it is one, else the one exported name that it ends with (or that
  ends with it) at a folder boundary, so importing a parent or a child of the export folder, or a
  single JSON file, still finds the image. Two candidates: ``image_not_asked_for`` naming both. An
  absolute imagePath, a drive letter, or one that leaves the folder imported: ``unsafe_image_name``
  (alod never opens the image; only the name is used).
* ``imageData`` (labelme embeds the image unless started with ``--nodata``) is ignored.
* ``imageWidth``/``imageHeight`` that differ from the exported size mean another image was
  annotated: ``image_not_asked_for`` (and the exported image stays ``image_missing``).

**Errors.** A missing path, or one where nothing can be read as labelme (a single file that is not
labelme JSON; a folder with no labelme JSON), is an :class:`~alod.utils.AlodError` naming it. In a
folder, a JSON that is malformed or not a labelme file is a ``not_this_format`` problem naming that
file, and the rest are read. Problems name the JSON file they come from (``image_missing``: the
folder imported); ``where`` is ``imagePath '...'``, ``shapes[i] 'label'`` or the file's name.

The name and image-placement helpers (:func:`~alod.annotate.files.check_export_names`,
:func:`~alod.annotate.files.place_image`, :class:`~alod.annotate.files.NameMatcher`,
:func:`~alod.annotate.files.open_image`) live in :mod:`alod.annotate.files`, shared by the formats.

**Checked against labelme's reader without installing it.** labelme (6.3.1 on PyPI) pulls in PyQt5,
onnxruntime, scikit-image and more, so the tests check the exported JSON against the rules of its
``labelme/_label_file.py`` (required keys, types, ``str -> bool`` flags, the image found beside the
JSON with the declared size) instead of importing it.
"""
from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

from alod.annotate.core import AnnotationFormat, ExportTask, ImportBuilder, ImportResult
from alod.annotate.files import (NameMatcher, as_coordinate, check_export_labels, check_export_names, open_image,
                                 place_image)
from alod.utils import AlodError, atomic_write_text

#: the labelme version written into exported files (any 5.x reads them).
LABELME_VERSION = "5.5.0"
#: JSON files larger than this are not read (a labelme file with an embedded image is a few MB).
MAX_JSON_BYTES = 256 << 20
#: how many JSON files :func:`sniff` opens in a folder before giving up.
_SNIFF_FILES = 5


# ---------------------------------------------------------------------------------------------
# Export

def export(task: ExportTask, out_dir: str | Path, *, copy_images: bool = False) -> list[Path]:
    """Write one labelme JSON per image next to a copy (or symlink) of the image.

    Args:
        task: the images (names, sizes, pre-annotations as ``float64[N, 4]`` x1,y1,x2,y2 pixels,
            labels in ``1..C``, scores) and classes.
        out_dir: the folder to fill (created); subfolders of image names are mirrored in it.
        copy_images: copy the images instead of symlinking them.

    Returns:
        ``[out_dir]``: the folder to open with ``labelme <out_dir>``.

    Raises:
        AlodError: an image name that cannot round-trip, two images sharing a label file, labels
            outside ``1..C``, a missing image, an unwritable folder.
    """
    out_dir = Path(out_dir)
    check_export_names(task.images)
    json_of: dict[str, str] = {}
    for im in task.images:
        key = posixpath.splitext(im.name)[0] + ".json"
        if key in json_of:
            raise AlodError(f"images {json_of[key]!r} and {im.name!r} would share the labelme file {key!r} "
                            "(labelme keeps one label file per image stem); export them in another format")
        json_of[key] = im.name
    for im in task.images:
        boxes, labels, scores = check_export_labels(im, len(task.classes))
        shapes = [
            {
                "label": task.classes[int(k) - 1],
                "points": [[float(b[0]), float(b[1])], [float(b[2]), float(b[3])]],
                "group_id": None,
                "description": json.dumps({"score": round(float(s), 3)}),
                "shape_type": "rectangle",
                "flags": {},
            }
            for b, k, s in zip(boxes, labels, scores)
        ]
        doc = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": posixpath.basename(im.name),
            "imageData": None,
            "imageHeight": int(im.height),
            "imageWidth": int(im.width),
        }
        place_image(Path(im.path), out_dir / im.name, copy=copy_images)
        target = out_dir / (posixpath.splitext(im.name)[0] + ".json")
        try:
            atomic_write_text(target, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        except OSError as e:
            raise AlodError(f"cannot write {target}: {e}") from None
    return [out_dir]


# ---------------------------------------------------------------------------------------------
# Import

def _load(path: Path):
    """The JSON object in ``path``, or a string saying why it is not a labelme file."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return f"larger than {MAX_JSON_BYTES >> 20} MiB; not read"
        data = path.read_bytes()
    except OSError as e:
        return f"cannot be read ({e})"
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"is not valid JSON ({type(e).__name__}: {e})"
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list) or "imagePath" not in doc:
        return "is not a labelme file (a JSON object with a 'shapes' list and an 'imagePath')"
    return doc


def _json_files(root: Path) -> tuple[list[Path], list[Path]]:
    """``(json files, symlinked json files)`` under ``root``, sorted by relative path; hidden
    entries skipped, symlinked folders not entered."""
    files, links = [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.lower().endswith(".json") and not f.startswith("."):
                p = Path(dirpath) / f
                (links if p.is_symlink() else files).append(p)
    def key(p: Path) -> str:
        return p.relative_to(root).as_posix()

    return sorted(files, key=key), sorted(links, key=key)


def _size(doc: dict) -> tuple[int, int] | None:
    w, h = doc.get("imageWidth"), doc.get("imageHeight")
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (w, h))
    return (w, h) if ok else None


def _point_pair(points) -> tuple | None:
    """``(x1, y1, x2, y2)`` from ``[[x1, y1], [x2, y2]]`` (values unchecked), or ``None``."""
    if (isinstance(points, list) and len(points) == 2
            and all(isinstance(p, list) and len(p) == 2 for p in points)):
        return points[0][0], points[0][1], points[1][0], points[1][1]
    return None


def _read_one(builder: ImportBuilder, matcher: NameMatcher, doc: dict, folder: str) -> None:
    name = open_image(builder, matcher, doc["imagePath"], f"imagePath {doc['imagePath']!r}",
                      folder=folder, size=_size(doc))
    if name is None:
        return
    for i, s in enumerate(doc["shapes"]):
        if not isinstance(s, dict):
            builder.problem(f"shapes[{i}]", "not_this_format", f"a shape must be a JSON object, got {s!r}; skipped")
            continue
        label = s.get("label")
        where = f"shapes[{i}] {label!r}"
        kind = s.get("shape_type")
        points = s.get("points")
        if kind is None and isinstance(points, list) and len(points) == 2:
            kind = "rectangle"  # see the module docstring: a 2-point shape without a type is a box
        if kind != "rectangle":
            builder.problem(where, "not_a_box",
                            f"a {kind or 'polygon'} shape (only rectangles are boxes); skipped")
            continue
        corners = _point_pair(points)
        if corners is None:
            builder.problem(where, "degenerate_box",
                            f"a rectangle needs two [x, y] corner points, got {points!r}; skipped")
            continue
        if not isinstance(label, str):
            builder.problem(where, "unknown_category", f"the label must be a string, got {label!r}; skipped")
            continue
        builder.box(name, where, label, *(as_coordinate(v) for v in corners))


def read(path: str | Path, task: ExportTask) -> ImportResult:
    """Read labelme JSON (a folder of them, or one file) back into boxes for ``task``'s images.

    Returns:
        :class:`~alod.annotate.core.ImportResult` with ``float64[K, 4]`` x1,y1,x2,y2 pixel boxes
        and ``int64[K]`` labels per answered image, and every problem (see the module docstring).

    Raises:
        AlodError: ``path`` is missing, or nothing under it is a labelme file.
    """
    path = Path(path)
    builder = ImportBuilder(task, path, "labelme")
    matcher = NameMatcher.for_task(task)
    if path.is_dir():
        root = path
        files, links = _json_files(root)
        for p in links:
            builder.file = str(p)
            builder.problem(p.name, "not_this_format", "a symbolic link; alod does not follow links out of the folder")
    elif path.is_file():
        root, files = path.parent, [path]
    else:
        raise AlodError(f"{path} does not exist; give the labelme export folder or one labelme JSON file")
    read_any = False
    for p in files:
        builder.file = str(p)
        doc = _load(p)
        if isinstance(doc, str):
            if not path.is_dir():
                raise AlodError(f"{p}: {doc}; give the labelme export folder or one labelme JSON file")
            builder.problem(p.name, "not_this_format", f"this file {doc}; skipped")
            continue
        read_any = True
        folder = p.parent.relative_to(root).as_posix()
        _read_one(builder, matcher, doc, "" if folder == "." else folder)
    if not read_any:
        raise AlodError(f"{path}: no labelme JSON file found (a JSON object with 'shapes' and 'imagePath'); "
                        "give the labelme export folder")
    builder.file = str(path)
    return builder.finish()


def sniff(path: str | Path) -> bool:
    """Whether ``path`` is a labelme JSON file, or a folder whose first JSON files include one."""
    path = Path(path)
    try:
        if path.is_file():
            return path.suffix.lower() == ".json" and isinstance(_load(path), dict)
        if path.is_dir():
            seen = 0
            for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    p = Path(dirpath) / f
                    if f.lower().endswith(".json") and not f.startswith(".") and not p.is_symlink():
                        if isinstance(_load(p), dict):
                            return True
                        seen += 1
                        if seen >= _SNIFF_FILES:
                            return False
    except OSError:
        return False
    return False


FORMAT = AnnotationFormat(name="labelme", export=export, read=read, sniff=sniff, version="labelme 5.x JSON")
