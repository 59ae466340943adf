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

The name and image-placement helpers below (:func:`check_export_names`, :func:`place_image`,
:class:`NameMatcher`, :func:`open_image`) are what any format needs; ``cvat.py`` imports them from
here until they move to ``core.py``.

**Checked against labelme's reader without installing it.** labelme (6.3.1 on PyPI) pulls in PyQt5,
onnxruntime, scikit-image and more, so the tests check the exported JSON against the rules of its
``labelme/_label_file.py`` (required keys, types, ``str -> bool`` flags, the image found beside the
JSON with the declared size) instead of importing it.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
from pathlib import Path

import numpy as np

from alod.annotate.core import AnnotationFormat, ExportImage, ExportTask, ImportBuilder, ImportResult
from alod.utils import AlodError, atomic_write_text

#: the labelme version written into exported files (any 5.x reads them).
LABELME_VERSION = "5.5.0"
#: JSON files larger than this are not read (a labelme file with an embedded image is a few MB).
MAX_JSON_BYTES = 256 << 20
#: how many JSON files :func:`sniff` opens in a folder before giving up.
_SNIFF_FILES = 5

_DRIVE = re.compile(r"^[A-Za-z]:")


# ---------------------------------------------------------------------------------------------
# Helpers every file format needs (the CVAT module uses them too; they could move to core.py).

def check_export_names(images: list[ExportImage], *, extra_forbidden: str = "") -> None:
    """Refuse image names that cannot be written under an export folder and come back unchanged.

    A name must be relative, ``/``-separated and already normal (no ``.``, ``..`` or empty
    components, no backslash, no drive letter, no NUL); ``extra_forbidden`` is a regex character
    class body of more characters a format cannot hold (XML control characters for CVAT).

    Raises:
        AlodError: naming the first bad image and why.
    """
    bad = re.compile(f"[\x00\\\\{extra_forbidden}]")
    seen = set()
    for im in images:
        name = im.name
        why = None
        if not isinstance(name, str) or not name:
            why = "it is empty"
        elif bad.search(name):
            why = "it holds a backslash or a control character, which annotation tools rewrite"
        elif name.startswith("/") or _DRIVE.match(name):
            why = "it is absolute"
        elif posixpath.normpath(name) != name or any(p in ("", ".", "..") for p in name.split("/")):
            why = "it is not a plain relative path (it has '.', '..' or empty components)"
        elif name in seen:
            why = "it is listed twice"
        if why:
            raise AlodError(f"image name {name!r} cannot be exported: {why}; rename it in the dataset")
        seen.add(name)


def check_export_labels(im: ExportImage, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``im``'s pre-annotations as ``float64[N, 4]``, ``int64[N]``, ``float64[N]``, checked."""
    boxes = np.asarray(im.boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(im.labels, dtype=np.int64).reshape(-1)
    scores = np.asarray(im.scores, dtype=np.float64).reshape(-1)
    if not (len(boxes) == len(labels) == len(scores)):
        raise AlodError(f"image {im.name!r}: {len(boxes)} boxes, {len(labels)} labels and {len(scores)} scores; "
                        "they must match")
    if not np.isfinite(boxes).all():
        raise AlodError(f"image {im.name!r}: pre-annotation boxes must be finite, got {boxes.tolist()}")
    if len(labels) and (labels.min() < 1 or labels.max() > n_classes):
        raise AlodError(f"image {im.name!r}: labels must lie in 1..{n_classes}, got {labels.tolist()}")
    return boxes, labels, scores


def place_image(src: Path, dest: Path, *, copy: bool) -> None:
    """Put the image ``src`` at ``dest``: a copy, or a symlink to ``src``'s absolute path.

    A file or link left at ``dest`` by an earlier export is replaced (never written through: a link
    is removed, not followed); ``dest`` being ``src`` itself (exporting into the image folder) is
    left alone.

    Raises:
        AlodError: ``src`` is missing or ``dest`` cannot be written.
    """
    src = Path(src)
    if not src.is_file():
        raise AlodError(f"image {src} does not exist (or is not a file); cannot export it")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        elif dest.exists():
            if dest.samefile(src):
                return
            dest.unlink()
        if copy:
            shutil.copyfile(src, dest)
        else:
            os.symlink(src.resolve(), dest)
    except OSError as e:
        raise AlodError(f"cannot place image {src} at {dest}: {e}") from None


def normalise_name(raw: str) -> str:
    """A name as a tool wrote it, ``/``-separated and normalised (``a\\b/./c`` -> ``a/b/c``)."""
    return posixpath.normpath(raw.replace("\\", "/"))


def is_unsafe_name(norm: str) -> bool:
    """Whether a normalised name is absolute (``/``, ``//host``, ``C:``) or leaves its folder."""
    return (not norm or norm == ".." or norm.startswith(("/", "../")) or bool(_DRIVE.match(norm))
            or "\x00" in norm)


class NameMatcher:
    """Finds the exported name a tool's image name stands for.

    The exported name itself; else the unique exported name that the tool's name ends with, or that
    ends with the tool's name, at a ``/`` boundary (the images were uploaded from a parent or child
    folder, or one by one). ``match`` returns the list of candidates: one is a match, none means
    the image was not exported, several are ambiguous.
    """

    def __init__(self, task: ExportTask):
        self.sizes = {im.name: (im.width, im.height) for im in task.images}
        self._by_base: dict[str, list[str]] = {}
        for n in self.sizes:
            self._by_base.setdefault(posixpath.basename(n), []).append(n)

    def match(self, norm: str) -> list[str]:
        if norm in self.sizes:
            return [norm]
        return sorted(n for n in self._by_base.get(posixpath.basename(norm), [])
                      if norm.endswith("/" + n) or n.endswith("/" + norm))


def open_image(builder: ImportBuilder, matcher: NameMatcher, raw, where: str, *,
               folder: str = "", size: tuple | None = None) -> str | None:
    """Resolve a tool's image name and open it in ``builder``; the dataset name, or ``None`` (with
    the problem recorded) when the image is skipped.

    Args:
        raw: the name as the file has it.
        folder: ``/``-separated folder the name is relative to (LabelMe: the JSON's folder under
            the folder imported), ``""`` for none.
        size: ``(width, height)`` the file declares, checked against the exported size when given.
    """
    if not isinstance(raw, str) or not raw:
        builder.problem(where, "not_this_format", f"the image name is {raw!r}, not a file name; skipped")
        return None
    norm = normalise_name(raw)
    full = normalise_name(posixpath.join(folder, norm)) if folder else norm
    if norm.startswith("/") or _DRIVE.match(norm) or is_unsafe_name(full):
        builder.problem(where, "unsafe_image_name",
                        f"image name {raw!r} is absolute or leaves the folder imported; skipped")
        return None
    found = matcher.match(full)
    if len(found) > 1:
        builder.problem(where, "image_not_asked_for",
                        f"{raw!r} could be any of the exported images {found}; keep the export's folder layout; "
                        "skipped")
        return None
    name = found[0] if found else full
    if found and size is not None and tuple(size) != matcher.sizes[name]:
        want = matcher.sizes[name]
        builder.problem(where, "image_not_asked_for",
                        f"the file says {raw!r} is {size[0]}x{size[1]} but the exported {name!r} is "
                        f"{want[0]}x{want[1]}: another image was annotated; skipped")
        return None
    return name if builder.image(name, where) else None


def as_coordinate(v):
    """A JSON coordinate for :meth:`ImportBuilder.box`: an integer as a float (``inf`` when too large
    for one, so it is reported as degenerate instead of overflowing); anything else unchanged, for
    the builder to accept or reject."""
    if isinstance(v, int) and not isinstance(v, bool):
        try:
            return float(v)
        except OverflowError:
            return float("inf")
    return v


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
    matcher = NameMatcher(task)
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
