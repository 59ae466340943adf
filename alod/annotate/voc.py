"""Pascal VOC XML: one ``<annotation>`` file per image, out with pre-annotations and back in.

**Export layout** (a VOC dataset: the folder is readable by ``data.kind: voc`` itself)::

    out_dir/Annotations/<name without extension>.xml   one per image, subfolders of the names mirrored
    out_dir/ImageSets/Main/default.txt                 the image ids in the task's priority order
    out_dir/JPEGImages/<name>                          the images (copies or symlinks)
    out_dir/labelmap.txt                               the classes, for CVAT / datumaro ("name:::" lines)

Each XML file holds ``<folder>JPEGImages</folder>``, ``<filename>`` (the image's **dataset name**,
subfolders included, so the name comes back exactly), ``<size>`` (width, height, depth 3),
``<segmented>0`` and one ``<object>`` per pre-annotation (``<name>``, ``<pose>Unspecified``,
``<truncated>0``, ``<difficult>0``, ``<bndbox>``). **Scores are not carried**: VOC has no field for a
confidence, so a pre-annotation looks like any box; review every image before importing. Two images
that would share an XML file (``x.jpg`` and ``x.png``) are refused at export.

**Coordinates** are written and read **as the box values, unshifted**, the convention of the VOC
label reader (:data:`alod.data.voc.COORDINATES`: VOC's 1-based inclusive pixel indices are kept as
written, not moved by one), so a VOC file means the same box whether it is read as a dataset or
imported as a cycle's labels, and export then import gives the boxes back (written with up to 4
decimals: VOC tools read ``float(text)``; labelImg rounds to integers when it saves).

**Import** takes the export folder (edited in place, e.g. by labelImg), any folder of VOC XML files
(every ``*.xml`` under it), the ``.zip`` CVAT exports as "PASCAL VOC 1.1" (read without extracting),
or one XML file:

* Each file is parsed with ``defusedxml``, DTDs forbidden (entity bombs, external entities: the
  file is refused). A file that is not well-formed, has a DOCTYPE, is larger than
  :data:`MAX_XML_BYTES`, or whose root is not ``<annotation>`` is a ``not_this_format`` problem
  naming it (for a single file: an :class:`~alod.utils.AlodError`); the others are read.
* ``<filename>`` is matched to an exported name as in LabelMe and CVAT (the name itself, or the
  one exported name it ends with, or that ends with it, at a folder boundary; see
  :meth:`alod.annotate.files.NameMatcher.suffix_matches`). Absolute, drive-letter or ``..``
  names are ``unsafe_image_name``; alod never opens the image. ``<size>`` that differs from the
  exported size is ``image_not_asked_for``. ``<path>`` and ``<folder>`` are ignored.
* ``<object>``: ``<name>`` must be a dataset class (``unknown_category``); ``<bndbox>`` numbers go
  through the checks every format shares (:class:`~alod.annotate.core.ImportBuilder`).
  ``<difficult>1`` objects are skipped as ``not_a_box``: the VOC label reader makes them ignored
  regions, never training targets, and imported labels have no ignore flag (as COCO's ``iscrowd``).
  ``<part>`` children, ``<truncated>``, ``<occluded>``, attributes: ignored.
* An XML file with no ``<object>`` means "annotated, and empty".
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import defusedxml
import defusedxml.ElementTree as SafeET

from alod.annotate.core import AnnotationFormat, ExportTask, ImportBuilder, ImportResult
from alod.annotate.files import (
    NameMatcher,
    check_export_names,
    check_images_exist,
    export_rows,
    files_by_stem,
    open_image,
    place_image,
    read_members,
)
from alod.utils import AlodError, atomic_write_text

NAME = "voc"
VERSION = "Pascal VOC XML (one <annotation> per image)"
ANNOTATIONS_DIR, IMAGES_DIR, SET_FILE, LABELMAP_FILE = "Annotations", "JPEGImages", "ImageSets/Main/default.txt", "labelmap.txt"
#: The largest XML file read (also inside a zip, where the size is the uncompressed one).
MAX_XML_BYTES = 64 << 20

#: Characters XML 1.0 cannot hold (besides NUL and backslash, which no exported name may hold).
_XML_FORBIDDEN = "\x01-\x08\x0b\x0c\x0e-\x1f"
_ROOT = re.compile(rb"^(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->)*<annotation[\s/>]", re.DOTALL)
_COORDS = ("xmin", "ymin", "xmax", "ymax")


# ---------------------------------------------------------------------------------------------
# Export

def _number(v: float) -> str:
    """A coordinate as VOC text: up to 4 decimals, no trailing zeros (``12``, ``12.5``)."""
    return f"{v:.4f}".rstrip("0").rstrip(".")


def _xml(task: ExportTask, row) -> str:
    """One image's ``<annotation>`` document (``row``: an :class:`~alod.annotate.files.ExportRow`)."""
    im = row.image
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = IMAGES_DIR
    ET.SubElement(root, "filename").text = im.name
    size = ET.SubElement(root, "size")
    for tag, v in (("width", int(im.width)), ("height", int(im.height)), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for box, label in zip(row.boxes.tolist(), row.labels.tolist(), strict=True):
        obj = ET.SubElement(root, "object")
        for tag, text in (("name", task.classes[label - 1]), ("pose", "Unspecified"), ("truncated", "0"),
                          ("difficult", "0")):
            ET.SubElement(obj, tag).text = text
        bnd = ET.SubElement(obj, "bndbox")
        for tag, v in zip(_COORDS, box):
            ET.SubElement(bnd, tag).text = _number(v)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def export(task: ExportTask, out_dir: str | Path, *, copy_images: bool = False) -> list[Path]:
    """Write one VOC XML per image, ``ImageSets/Main/default.txt``, ``labelmap.txt`` and the images.

    Args:
        task: the images (names, sizes, pre-annotations as ``float64[N, 4]`` x1,y1,x2,y2 pixels,
            labels in ``1..C``; scores are not written) and classes.
        out_dir: the folder to fill (created).
        copy_images: copy the images instead of symlinking them.

    Returns:
        ``[out_dir]``: the VOC folder (zip it for CVAT's "PASCAL VOC 1.1" upload).

    Raises:
        AlodError: an image name that cannot round-trip, two images sharing an XML file, a class
            name XML cannot hold, labels outside ``1..C``, a missing image, an unwritable folder.
    """
    out_dir = Path(out_dir)
    check_export_names(task.images, extra_forbidden=_XML_FORBIDDEN)
    bad = [c for c in task.classes if re.search(f"[\x00{_XML_FORBIDDEN}]", c) or ":" in c]
    if bad:
        raise AlodError(f"class names {bad} hold control characters or ':' (labelmap.txt's separator); rename them")
    ids = files_by_stem(task, what="VOC", suffix=".xml")
    rows = export_rows(task)
    check_images_exist(task)
    try:
        for key, row in zip(ids, rows):
            place_image(Path(row.image.path), out_dir / IMAGES_DIR / row.image.name, copy=copy_images)
            atomic_write_text(out_dir / ANNOTATIONS_DIR / f"{key}.xml", _xml(task, row))
        atomic_write_text(out_dir / SET_FILE, "".join(f"{k}\n" for k in ids))
        atomic_write_text(out_dir / LABELMAP_FILE, "# label:color_rgb:parts:actions\n"
                          + "".join(f"{c}:::\n" for c in task.classes))
    except OSError as e:
        raise AlodError(f"cannot write the VOC files into {out_dir}: {e}") from None
    return [out_dir]


# ---------------------------------------------------------------------------------------------
# Import

def _parse(data: bytes) -> tuple[ET.Element | None, str | None]:
    """``(root, None)`` of a VOC file's bytes, or ``(None, why)``."""

    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as e:
        return None, (f"has a DOCTYPE or entity declaration ({type(e).__name__}); VOC files have none and entities "
                      "can expand without bound, so alod does not read it")
    except (ET.ParseError, ValueError, LookupError) as e:  # LookupError: an unknown declared encoding
        return None, f"is not well-formed XML ({type(e).__name__}: {e})"
    if root.tag != "annotation":
        return None, f"has the root element <{root.tag}>, not <annotation>: not a VOC file"
    return root, None


def _num(text):
    """An element's text as a float (``inf``/``nan`` stay, for the builder to reject); missing or
    non-numeric text unchanged (the builder reports it)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _size(root: ET.Element) -> tuple[int, int] | None:
    w, h = _num(root.findtext("size/width")), _num(root.findtext("size/height"))
    ok = all(isinstance(v, float) and v.is_integer() for v in (w, h))
    return (int(w), int(h)) if ok else None


def _read_one(builder: ImportBuilder, matcher: NameMatcher, root: ET.Element) -> None:
    raw = (root.findtext("filename") or "").strip()
    name = open_image(builder, matcher, raw, f"<filename> {raw!r}", size=_size(root))
    if name is None:
        return
    for k, obj in enumerate(root.findall("object")):  # direct children: <part>s are not objects
        label = (obj.findtext("name") or "").strip()
        where = f"<object> #{k} {label!r}"
        if (obj.findtext("difficult") or "0").strip() == "1":
            builder.problem(where, "not_a_box", "marked <difficult>1: the VOC reader makes it an ignored region, never "
                            "a training target, and imported labels have no ignore flag; skipped")
            continue
        if obj.find("bndbox") is None:
            builder.problem(where, "degenerate_box", "no <bndbox>; skipped")
            continue
        builder.box(name, where, label, *(_num(obj.findtext(f"bndbox/{t}")) for t in _COORDS))


def read(path: str | Path, task: ExportTask) -> ImportResult:
    """Read VOC XML (a folder of files, a zip, or one file) back into boxes for ``task``'s images.

    Returns:
        :class:`~alod.annotate.core.ImportResult` with ``float64[K, 4]`` x1,y1,x2,y2 pixel boxes
        (the ``<bndbox>`` values as written) and ``int64[K]`` labels per answered image, and every
        problem (see the module docstring).

    Raises:
        AlodError: ``path`` is missing, or nothing under it is a VOC file.
    """
    path = Path(path)
    members = read_members(path, suffixes=(".xml",), max_bytes=MAX_XML_BYTES)
    single = path.is_file() and len(members) == 1 and members[0].file == str(path)
    builder = ImportBuilder(task, path, NAME)
    matcher = NameMatcher.for_task(task)
    read_any = False
    for m in members:
        builder.file = m.file
        root, why = (None, m.why) if m.data is None else _parse(m.data)
        if root is None:
            if single:
                raise AlodError(f"{path}: {why}; give a Pascal VOC XML file, the folder or the zip")
            builder.problem(m.name, "unsafe_image_name" if m.unsafe else "not_this_format", f"this file {why}; skipped")
            continue
        read_any = True
        _read_one(builder, matcher, root)
    if not read_any:
        raise AlodError(f"{path}: no Pascal VOC XML file found (an <annotation> per image); give the VOC folder, "
                        "the zip your tool exported, or one XML file")
    builder.file = str(path)
    return builder.finish()


def sniff(path: str | Path) -> bool:
    """Whether ``path`` is a VOC XML file, or a folder or zip whose first XML file is one (a folder:
    ``Annotations/`` first, then the folder itself; reads at most 64 KiB of one file)."""

    path = Path(path)
    try:
        if path.is_dir():
            for folder in (path / ANNOTATIONS_DIR, path):
                files = sorted(folder.glob("*.xml")) if folder.is_dir() else []
                if files:
                    with open(files[0], "rb") as f:
                        return bool(_ROOT.match(f.read(1 << 16)))
            return False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = sorted(n for n in zf.namelist() if n.lower().endswith(".xml") and "/." not in "/" + n)
                if not names:
                    return False
                with zf.open(names[0]) as f:
                    return bool(_ROOT.match(f.read(1 << 16)))
        if path.is_file() and path.suffix.lower() == ".xml":
            with open(path, "rb") as f:
                return bool(_ROOT.match(f.read(1 << 16)))
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return False
    return False


FORMAT = AnnotationFormat(name=NAME, export=export, read=read, sniff=sniff, version=VERSION, suffixes=(".xml",))
