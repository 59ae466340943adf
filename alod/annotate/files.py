"""What the annotation formats share beyond :mod:`alod.annotate.core` (one module for all).

* **Reading**: a JSON file with an error that names the file and what was expected
  (:func:`read_json`); JSON values as numbers, ids and coordinates (:func:`is_number`,
  :func:`is_id`, :func:`as_coordinate`).
* **Image names**: checking an export's names before anything is written, and finding the exported
  image a tool's reference means. Two rules, each kept exactly as its formats were tested with:

  - COCO and Label Studio (references that may be URLs, upload-renamed files, paths relative to
    wherever the tool found the image): :func:`ref_segments`, :func:`is_safe_relative`,
    :meth:`NameMatcher.match` (same file name, most trailing folders in agreement, Label Studio's
    ``<8 hex>-`` upload prefix removed if needed), :func:`export_rows`.
  - LabelMe and CVAT (names relative to an image folder, possibly one level above or below the
    export): :func:`normalise_name`, :func:`is_unsafe_name`, :meth:`NameMatcher.suffix_matches`
    (the exported name it ends with, or that ends with it, at a folder boundary),
    :func:`open_image`, :func:`check_export_names`, :func:`check_export_labels`.
* **Placing images** into an export folder under their dataset names, as copies or symlinks
  (:func:`place_image`, :func:`place_images`).
* **Reading a folder, a zip or one file** of annotation files (VOC, YOLO): :func:`read_members`
  (hidden entries and symbolic links skipped, zip member names that leave the zip reported,
  sizes bounded, nothing extracted).

None of this reads an image: imports only ever open the annotation file they are given.
"""
from __future__ import annotations

import json
import math
import os
import posixpath
import re
import shutil
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alod.annotate.core import ExportImage, ExportTask
from alod.utils import AlodError

#: The folder of an export that holds the images, under their dataset names.
IMAGES_DIR = "images"

# Label Studio stores an uploaded file as "<8 hex digits>-<original name>".
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?=.)")
# A Windows drive letter at the start of a name ("C:...").
_DRIVE = re.compile(r"^[A-Za-z]:")


def read_json(path: Path, expected: str):
    """The parsed content of the JSON file ``path``.

    Raises :class:`AlodError` naming ``path`` and ``expected`` (what the caller wanted, e.g.
    "a COCO instances JSON file") when the file is missing, a folder, not UTF-8 or not JSON.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AlodError(f"{path}: no such file; expected {expected}") from None
    except IsADirectoryError:
        raise AlodError(f"{path}: is a folder; expected {expected}") from None
    except OSError as e:
        raise AlodError(f"{path}: cannot be read ({e.strerror or e}); expected {expected}") from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise AlodError(f"{path}: not UTF-8 text; expected {expected}") from None
    except json.JSONDecodeError as e:
        raise AlodError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                        f"expected {expected}") from None
    except RecursionError:
        raise AlodError(f"{path}: JSON nested too deeply to be an annotation file; expected {expected}") from None
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise AlodError(f"{path}: unreadable JSON ({e}); expected {expected}") from None


def is_number(v) -> bool:
    """A finite JSON number (not a bool, not an integer too large for a float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _finite(v) -> bool:
    try:
        return not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError, OverflowError):
        return False


def is_id(v) -> bool:
    """A usable record id: an int (not bool) or a string."""
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def ref_segments(ref: str) -> list[str] | None:
    """The path segments of an image reference (``/`` or ``\\`` separated; empty and ``.`` dropped),
    or ``None`` when a segment is ``..`` or the reference holds a NUL (it could leave a folder)."""
    if "\x00" in ref:
        return None
    segs = [s for s in ref.replace("\\", "/").split("/") if s not in ("", ".")]
    return None if ".." in segs else segs


def is_safe_relative(name: str) -> bool:
    """Whether ``name`` is a relative path that stays inside its folder (no ``..``, not absolute,
    no drive letter, not empty)."""
    segs = ref_segments(name) if isinstance(name, str) else None
    return bool(segs) and not name.startswith(("/", "\\")) and not _DRIVE.match(name)


class NameMatcher:
    """Finds the exported image an outside reference means.

    Built from the exported names, or from a mapping name -> ``(width, height)`` (then
    :attr:`sizes` holds it; :func:`open_image` needs it), e.g. :meth:`for_task`.

    :meth:`match` (COCO, Label Studio): an exact dataset name wins. Otherwise the candidates are the
    exported images with the reference's file name (after removing Label Studio's ``<8 hex>-``
    upload prefix if nothing matched with it), and the one whose path agrees with the reference over
    the most trailing folders is taken; a tie is ambiguous and matches nothing. So
    ``images/sub/a.jpg``, ``/data/upload/3/1a2b3c4d-a.jpg`` and ``a.jpg`` all find ``sub/a.jpg``
    when it is the only exported ``a.jpg``.

    :meth:`suffix_matches` (LabelMe, CVAT): the exported name itself; else every exported name that
    the tool's name ends with, or that ends with the tool's name, at a ``/`` boundary (the images
    were uploaded from a parent or child folder, or one by one).
    """

    def __init__(self, names: Iterable[str] | Mapping[str, tuple[int, int]]):
        self.sizes: dict[str, tuple[int, int]] | None = dict(names) if isinstance(names, Mapping) else None
        self._names = set(names)
        self._by_file = defaultdict(list)
        for n in self._names:
            self._by_file[n.rsplit("/", 1)[-1]].append(n)

    @classmethod
    def for_task(cls, task: ExportTask) -> NameMatcher:
        """A matcher over ``task``'s images, with their ``(width, height)`` in :attr:`sizes`."""
        return cls({im.name: (im.width, im.height) for im in task.images})

    def match(self, segments: list[str]) -> tuple[str | None, str]:
        """``(name, "")`` or ``(None, why)`` for the reference split into ``segments``."""
        if not segments:
            return None, "the reference names no file"
        joined = "/".join(segments)
        if joined in self._names:
            return joined, ""
        last = segments[-1]
        for file in dict.fromkeys((last, _UPLOAD_PREFIX.sub("", last))):
            ref = segments[:-1] + [file]
            scored = []
            for name in self._by_file.get(file, ()):
                parts = name.split("/")
                k = 0
                while k < min(len(parts), len(ref)) and parts[-1 - k] == ref[-1 - k]:
                    k += 1
                scored.append((k, name))
            if scored:
                best = max(k for k, _ in scored)
                top = sorted(n for k, n in scored if k == best)
                if len(top) == 1:
                    return top[0], ""
                return None, (f"matches several exported images ({', '.join(top[:5])}); "
                              "name the image by its full dataset name")
        return None, "no exported image has this file name"

    def suffix_matches(self, norm: str) -> list[str]:
        """The candidates for the normalised name ``norm``: one is a match, none means the image was
        not exported, several are ambiguous."""
        if norm in self._names:
            return [norm]
        return sorted(n for n in self._by_file.get(posixpath.basename(norm), [])
                      if norm.endswith("/" + n) or n.endswith("/" + norm))


def normalise_name(raw: str) -> str:
    """A name as a tool wrote it, ``/``-separated and normalised (``a\\b/./c`` -> ``a/b/c``)."""
    return posixpath.normpath(raw.replace("\\", "/"))


def is_unsafe_name(norm: str) -> bool:
    """Whether a normalised name is absolute (``/``, ``//host``, ``C:``) or leaves its folder."""
    return (not norm or norm == ".." or norm.startswith(("/", "../")) or bool(_DRIVE.match(norm))
            or "\x00" in norm)


def open_image(builder, matcher: NameMatcher, raw, where: str, *,
               folder: str = "", size: tuple | None = None) -> str | None:
    """Resolve a tool's image name (LabelMe, CVAT) and open it in ``builder`` (an
    :class:`~alod.annotate.core.ImportBuilder`); the dataset name, or ``None`` (with the problem
    recorded) when the image is skipped.

    Args:
        matcher: built with sizes (:meth:`NameMatcher.for_task`).
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
    found = matcher.suffix_matches(full)
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


# ------------------------------------------------------------------------------------- export checks
def check_export_names(images: list[ExportImage], *, extra_forbidden: str = "") -> None:
    """Refuse image names that cannot be written under an export folder and come back unchanged
    (LabelMe, CVAT).

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
    """``im``'s pre-annotations as ``float64[N, 4]``, ``int64[N]``, ``float64[N]``, checked (LabelMe,
    CVAT: a score per box)."""
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


@dataclass(frozen=True)
class ExportRow:
    """One image of an export, checked: boxes clipped to the image (boxes with no area left are
    dropped), ``scores`` ``None`` when the task gave none."""

    image: ExportImage
    boxes: np.ndarray   # float64[N, 4] x1, y1, x2, y2 pixels
    labels: np.ndarray  # int64[N] in 1..C
    scores: np.ndarray | None  # float64[N]


def export_rows(task: ExportTask) -> list[ExportRow]:
    """Check ``task`` before anything is written (COCO, Label Studio; :class:`AlodError` naming the
    image otherwise)."""
    seen = set()
    n_classes = len(task.classes)
    rows = []
    for im in task.images:
        if not is_safe_relative(im.name):
            raise AlodError(f"image name {im.name!r} is not a relative path inside the image root; "
                            "it cannot be exported")
        if im.name in seen:
            raise AlodError(f"image {im.name!r} is listed twice in the export task")
        seen.add(im.name)
        if not (int(im.width) > 0 and int(im.height) > 0):
            raise AlodError(f"image {im.name!r}: size {im.width}x{im.height} is not positive")
        try:
            boxes = np.asarray(im.boxes, dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(im.labels, dtype=np.int64).reshape(-1)
            scores = np.asarray(im.scores, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise AlodError(f"image {im.name!r}: pre-annotations are not boxes [N, 4], labels [N], "
                            f"scores [N] ({e})") from None
        if len(labels) != len(boxes) or len(scores) not in (0, len(boxes)):
            raise AlodError(f"image {im.name!r}: {len(boxes)} boxes, {len(labels)} labels and {len(scores)} "
                            "scores; they must be as many")
        if len(labels) and (labels.min() < 1 or labels.max() > n_classes):
            raise AlodError(f"image {im.name!r}: labels must be in 1..{n_classes} (the classes), "
                            f"got {sorted(set(labels.tolist()))}")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise AlodError(f"image {im.name!r}: non-finite box coordinates or scores")
        if im.priority is not None and not _finite(im.priority):
            raise AlodError(f"image {im.name!r}: priority {im.priority!r} is not a finite number")
        boxes = boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, int(im.width))
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, int(im.height))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        rows.append(ExportRow(im, boxes[keep], labels[keep], scores[keep] if len(scores) else None))
    return rows


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


def check_images_exist(task: ExportTask) -> None:
    """Refuse an export whose images are not all on disk, before anything is written."""
    missing = [str(im.path) for im in task.images if not Path(im.path).is_file()]
    if missing:
        raise AlodError(f"{len(missing)} image(s) to export not found, e.g. {missing[0]}")


def files_by_stem(task: ExportTask, *, what: str, suffix: str) -> dict[str, str]:
    """``{image name without extension: image name}`` for formats that write one ``<stem><suffix>``
    file per image (VOC, YOLO); refuses two images that would share one file (``what`` names it)."""

    stems: dict[str, str] = {}
    for im in task.images:
        stem = posixpath.splitext(im.name)[0]
        if stem in stems:
            raise AlodError(f"images {stems[stem]!r} and {im.name!r} would share the {what} file {stem}{suffix}; "
                            "export them in another format")
        stems[stem] = im.name
    return stems


def place_images(task: ExportTask, out_dir: Path, *, copy_images: bool) -> Path:
    """Copy (or symlink, absolute target) every image to ``out_dir/images/<name>`` (COCO, Label
    Studio); returns that folder. Call after :func:`export_rows` (names checked). Every image is
    checked to exist before any is placed."""
    root = Path(out_dir) / IMAGES_DIR
    check_images_exist(task)
    root.mkdir(parents=True, exist_ok=True)
    for im in task.images:
        place_image(Path(im.path), root / im.name, copy=copy_images)
    return root


# ------------------------------------------------------------------------------------- folders and zips
@dataclass(frozen=True)
class Member:
    """One annotation file read from a folder, a zip or a single path (VOC, YOLO).

    ``name`` is ``/``-separated and relative to the folder or zip (the file's own name for a single
    file), ``file`` how problems name it, ``data`` its bytes, or ``None`` with ``why`` (in words)
    when it was not read: a symbolic link, a member name that leaves the zip (``unsafe`` then),
    a file larger than the limit, or an I/O error.
    """

    name: str
    file: str
    data: bytes | None
    why: str | None = None
    unsafe: bool = False


def read_members(path: Path, *, suffixes: tuple[str, ...], max_bytes: int, max_files: int = 200_000) -> list[Member]:
    """Every file ending in one of ``suffixes`` (any case) under ``path``: a folder (walked,
    sorted, hidden entries skipped, symbolic links reported and not followed), a ``.zip`` (members
    with a name that is absolute or has ``..`` reported as ``unsafe``; nothing is extracted), or
    one file. Each is read whole, up to ``max_bytes`` (the uncompressed size for a zip member).

    Raises:
        AlodError: ``path`` does not exist, the zip cannot be read, or more than ``max_files``
            files match.
    """

    path = Path(path)
    if path.is_dir():
        out = _folder_members(path, suffixes, max_bytes)
    elif path.is_file() and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                out = _zip_members(zf, str(path), suffixes, max_bytes, max_files)
        except (OSError, zipfile.BadZipFile, RuntimeError) as e:  # RuntimeError: an encrypted member
            raise AlodError(f"{path} cannot be read as a zip ({type(e).__name__}: {e})") from None
    elif path.is_file():
        out = [_file_member(path, path.name, str(path), max_bytes)]
    else:
        raise AlodError(f"{path} does not exist; give the folder, zip or file the annotation tool wrote")
    if len(out) > max_files:
        raise AlodError(f"{path}: more than {max_files} annotation files; refusing to read them")
    return out


def _file_member(p: Path, name: str, file: str, max_bytes: int) -> Member:
    try:
        if p.stat().st_size > max_bytes:
            return Member(name, file, None, f"larger than {max_bytes >> 20} MiB; not read")
        return Member(name, file, p.read_bytes())
    except OSError as e:
        return Member(name, file, None, f"cannot be read ({e.strerror or e})")


def _folder_members(root: Path, suffixes, max_bytes: int) -> list[Member]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or not f.lower().endswith(suffixes):
                continue
            p = Path(dirpath) / f
            name = p.relative_to(root).as_posix()
            if p.is_symlink():
                out.append(Member(name, str(p), None, "a symbolic link; alod does not follow links out of the folder"))
            else:
                out.append(_file_member(p, name, str(p), max_bytes))
    return sorted(out, key=lambda m: m.name)


def _zip_members(zf, file: str, suffixes, max_bytes: int, max_files: int) -> list[Member]:

    out = []
    infos = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(suffixes)]
    if len(infos) > max_files:
        raise AlodError(f"{file}: more than {max_files} annotation files; refusing to read them")
    for info in infos:
        raw = info.filename
        where = f"{file}:{raw}"
        norm = normalise_name(raw)
        if is_unsafe_name(norm) or _DRIVE.match(raw):
            out.append(Member(raw, where, None, f"member name {raw!r} is absolute or leaves the zip; skipped",
                              unsafe=True))
        elif posixpath.basename(norm).startswith("."):
            continue  # hidden files, e.g. macOS __MACOSX/._x resource forks
        elif info.file_size > max_bytes:
            out.append(Member(norm, where, None, f"larger than {max_bytes >> 20} MiB uncompressed; not read"))
        else:
            try:
                out.append(Member(norm, where, zf.read(info)))
            except (OSError, EOFError, RuntimeError, NotImplementedError, zlib.error, zipfile.BadZipFile) as e:
                # a damaged or encrypted member, or a compression method Python lacks
                out.append(Member(norm, where, None, f"cannot be unpacked ({type(e).__name__}: {e})"))
    return sorted(out, key=lambda m: m.name)
