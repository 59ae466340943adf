"""CVAT (CVAT for images 1.1 XML): one ``annotations.xml`` for the whole task.

**Export layout** (the layout datumaro's CVAT reader expects too)::

    out_dir/annotations.xml     <version>1.1</version>, <meta><task> with the labels, one <image> per image
    out_dir/labels.json         the labels for CVAT's "Raw" label editor (paste when creating the task)
    out_dir/images/<name>       the images (copies or symlinks), subfolders of the names mirrored

Create a task from the contents of ``images/`` (a zip of it keeps the subfolders, so CVAT's image
names are the dataset's), paste ``labels.json`` as its labels, then *Upload annotations* with
``annotations.xml`` as "CVAT 1.1" to see the pre-annotations. Images are listed in the task's
priority order with ``id`` 0..N-1. Each pre-annotation is ``<box label xtl ytl xbr ybr
occluded="0" source="auto" z_order="0">`` (two decimals, as CVAT writes) holding
``<attribute name="score">0.873</attribute>``; ``score`` is declared as an immutable text attribute
of every label so that CVAT keeps it. No timestamps are written: the same task gives the same file.

**Import** takes the ``annotations.xml`` CVAT exports ("Export task dataset" / "Export annotations"
as CVAT for images 1.1), the ``.zip`` it downloads (``annotations.xml`` is read from inside it,
nothing is extracted), or a folder holding ``annotations.xml``:

* ``<box>`` becomes a box (its ``label`` must be a dataset class: ``unknown_category`` otherwise).
  ``occluded``, ``z_order``, ``source`` and attributes are ignored. A box with ``rotation`` other
  than 0 (degrees about its centre) is replaced by its axis-aligned hull and noted as
  ``rotated_box`` (when the hull is taken).
* ``<polygon>``, ``<polyline>``, ``<points>``, ``<ellipse>``, ``<cuboid>``, ``<mask>``,
  ``<skeleton>``, image-level ``<tag>`` and anything else inside an ``<image>``: ``not_a_box``.
* ``<image name>`` is matched to an exported name as in LabelMe (see
  :meth:`alod.annotate.files.NameMatcher.suffix_matches`): the name itself, or the one exported
  name it ends with (or that ends with it) at a folder boundary, e.g. ``images/cam1/a.jpg`` or
  ``a.jpg`` for ``cam1/a.jpg``. ``width``/``height`` that differ from the exported size: ``image_not_asked_for``.
* **Project-level exports** repeat ``<image>`` entries (same ``id`` and ``name``) once per subset
  (``annotation_samples/cvat/annotations.xml``). ``subset`` is not part of a dataset image's name,
  so the first entry of a name is taken and every later one is a ``duplicate_image`` problem whose
  ``where`` names its subset: export the one task whose labels you want when they differ.
* ``<track>`` (CVAT *for video*) and other unknown top-level elements: ``not_this_format``.

**Safety and errors.** The XML is parsed with ``defusedxml`` with DTDs forbidden: CVAT never writes
a ``<!DOCTYPE>``, and entity declarations can expand to gigabytes ("billion laughs") or read local
files. A missing path, a file that is not well-formed XML, has a DOCTYPE, is larger than
:data:`MAX_XML_BYTES`, whose root is not ``<annotations>``, or whose ``<version>`` is not 1.x, is
an :class:`~alod.utils.AlodError` naming the file; problems name the file and
``image id=.. name=.. [subset=..]: <tag> #k 'label'``.

**Checked without datumaro.** datumaro (the CVAT team's reader) needs opencv, pandas, pyarrow and
shapely (hundreds of MB), so the tests check the exported XML against what its CVAT reader requires
(``datumaro/plugins/data_formats/cvat/base.py``: ``<meta>`` with ``label/name``, ``<image id name
width height>``, numeric ``xtl ytl xbr ybr``, images under ``images/<name>``) and CVAT's published
description of the 1.1 format.
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

from alod.annotate.core import AnnotationFormat, ExportTask, ImportBuilder, ImportResult
from alod.annotate.files import (IMAGES_DIR, NameMatcher, check_export_labels, check_export_names, open_image,
                                 place_image)
from alod.utils import AlodError, atomic_write_text

XML_NAME = "annotations.xml"
LABELS_NAME = "labels.json"
#: the largest annotations.xml read (also inside a zip, where the size is the uncompressed one).
MAX_XML_BYTES = 512 << 20

#: characters XML 1.0 cannot hold (besides NUL and backslash, which no exported name may hold).
_XML_FORBIDDEN = "\x01-\x08\x0b\x0c\x0e-\x1f"
_ROOT = re.compile(
    rb"^(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>)*<annotations[\s/>]",
    re.DOTALL,
)
_SCORE_ATTRIBUTE = {"name": "score", "mutable": False, "input_type": "text", "default_value": "", "values": [""]}


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def export(task: ExportTask, out_dir: str | Path, *, copy_images: bool = False) -> list[Path]:
    """Write ``annotations.xml``, ``labels.json`` and ``images/`` (see the module docstring).

    Args:
        task: the images in priority order (names, sizes, pre-annotations as ``float64[N, 4]``
            x1,y1,x2,y2 pixels, labels in ``1..C``, scores) and classes.
        out_dir: the folder to fill (created).
        copy_images: copy the images instead of symlinking them.

    Returns:
        ``[annotations.xml, labels.json, images/]``: what to upload to CVAT.

    Raises:
        AlodError: an image name that cannot round-trip, labels outside ``1..C``, a missing image,
            an unwritable folder.
    """
    out_dir = Path(out_dir)
    check_export_names(task.images, extra_forbidden=_XML_FORBIDDEN)
    bad = [c for c in task.classes if re.search(f"[\x00{_XML_FORBIDDEN}]", c)]
    if bad:
        raise AlodError(f"class names {bad} hold control characters that XML cannot carry; rename them")
    root = ET.Element("annotations")
    _sub(root, "version", "1.1")
    meta_task = _sub(_sub(root, "meta"), "task")
    _sub(meta_task, "name", f"{task.run} cycle {task.cycle}")
    _sub(meta_task, "size", str(len(task.images)))
    _sub(meta_task, "mode", "annotation")
    _sub(meta_task, "overlap", "0")
    _sub(meta_task, "start_frame", "0")
    _sub(meta_task, "stop_frame", str(max(len(task.images) - 1, 0)))
    labels_el = _sub(meta_task, "labels")
    for c in task.classes:
        label_el = _sub(labels_el, "label")
        _sub(label_el, "name", c)
        attr = _sub(_sub(label_el, "attributes"), "attribute")
        _sub(attr, "name", "score")
        _sub(attr, "mutable", "False")
        _sub(attr, "input_type", "text")
        _sub(attr, "default_value", "")
        _sub(attr, "values", "")
    for i, im in enumerate(task.images):
        boxes, labels, scores = check_export_labels(im, len(task.classes))
        image_el = _sub(root, "image", id=str(i), name=im.name, width=str(int(im.width)), height=str(int(im.height)))
        for b, k, s in zip(boxes, labels, scores):
            box = _sub(image_el, "box", label=task.classes[int(k) - 1], source="auto", occluded="0",
                       xtl=f"{b[0]:.2f}", ytl=f"{b[1]:.2f}", xbr=f"{b[2]:.2f}", ybr=f"{b[3]:.2f}", z_order="0")
            _sub(box, "attribute", f"{float(s):.3f}", name="score")
        place_image(Path(im.path), out_dir / IMAGES_DIR / im.name, copy=copy_images)
    ET.indent(root, space="  ")
    xml = '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    labels_json = [{"name": c, "attributes": [dict(_SCORE_ATTRIBUTE)]} for c in task.classes]
    try:
        atomic_write_text(out_dir / XML_NAME, xml)
        atomic_write_text(out_dir / LABELS_NAME, json.dumps(labels_json, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise AlodError(f"cannot write the CVAT task files into {out_dir}: {e}") from None
    return [out_dir / XML_NAME, out_dir / LABELS_NAME, out_dir / IMAGES_DIR]


def _read_bytes(path: Path) -> tuple[bytes, str]:
    """``(the XML's bytes, the name problems give it)`` from a file, a CVAT zip or a folder."""
    if path.is_dir():
        if not (path / XML_NAME).is_file():
            raise AlodError(f"{path} holds no {XML_NAME}; give CVAT's annotations.xml (or the zip CVAT exported)")
        path = path / XML_NAME
    if not path.is_file():
        raise AlodError(f"{path} does not exist; give CVAT's annotations.xml (or the zip CVAT exported)")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                try:
                    info = zf.getinfo(XML_NAME)
                except KeyError:
                    raise AlodError(f"{path}: the zip holds no top-level {XML_NAME}; export the task "
                                    "as 'CVAT for images 1.1'") from None
                if info.file_size > MAX_XML_BYTES:
                    raise AlodError(f"{path}: {XML_NAME} inside is {info.file_size} bytes, more than "
                                    f"{MAX_XML_BYTES >> 20} MiB; refusing to unpack it")
                return zf.read(info), f"{path}:{XML_NAME}"
        if path.stat().st_size > MAX_XML_BYTES:
            raise AlodError(f"{path} is larger than {MAX_XML_BYTES >> 20} MiB; refusing to read it")
        return path.read_bytes(), str(path)
    except (OSError, zipfile.BadZipFile, RuntimeError) as e:  # RuntimeError: an encrypted zip member
        raise AlodError(f"{path} cannot be read ({type(e).__name__}: {e})") from None


def _parse(data: bytes, file: str) -> ET.Element:
    try:
        import defusedxml  # why: a missing defusedxml then costs CVAT imports only, not the format registry
        import defusedxml.ElementTree as SafeET  # why: as above
    except ImportError:
        raise AlodError("reading CVAT XML needs defusedxml (pip install -r requirements.txt)") from None
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as e:
        raise AlodError(f"{file}: has a DOCTYPE or entity declaration ({type(e).__name__}); CVAT never writes one "
                        "and entities can expand without bound, so alod does not read it") from None
    except ET.ParseError as e:
        raise AlodError(f"{file}: not well-formed XML ({e}); re-export it from CVAT as 'CVAT for images 1.1'") from None
    if root.tag != "annotations":
        raise AlodError(f"{file}: the root element is <{root.tag}>, not <annotations>: not a CVAT for images file")
    version = root.findtext("version")
    if version is not None and not version.strip().startswith("1."):
        raise AlodError(f"{file}: CVAT XML version {version.strip()!r}; alod reads 'CVAT for images 1.1'")
    return root


def _num(v):
    """An XML attribute as a float (``inf``/``nan`` stay, for the builder to reject); a missing or
    non-numeric one unchanged (the builder reports it as degenerate)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _box(builder: ImportBuilder, name: str, where: str, el: ET.Element) -> None:
    label = el.get("label")
    x1, y1, x2, y2 = (_num(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
    rotation = _num(el.get("rotation", "0"))
    if rotation == 0 or not all(isinstance(v, float) and math.isfinite(v) for v in (x1, y1, x2, y2)):
        builder.box(name, where, label, x1, y1, x2, y2)
        return
    if not (isinstance(rotation, float) and math.isfinite(rotation)):
        builder.problem(where, "degenerate_box", f"rotation {el.get('rotation')!r} is not a number; skipped")
        return
    # CVAT rotates the box about its centre; the hull's half sides follow from |cos| and |sin|.
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, abs(x2 - x1) / 2, abs(y2 - y1) / 2
    c, s = abs(math.cos(math.radians(rotation))), abs(math.sin(math.radians(rotation)))
    ex, ey = hw * c + hh * s, hw * s + hh * c
    hull = (cx - ex, cy - ey, cx + ex, cy + ey)
    before = len(builder.result.problems)
    builder.box(name, where, label, *hull)
    if len(builder.result.problems) == before:
        builder.problem(where, "rotated_box", f"rotated by {rotation:g} degrees; its axis-aligned hull "
                        f"{[round(v, 2) for v in hull]} is taken in its place")


def read(path: str | Path, task: ExportTask) -> ImportResult:
    """Read a CVAT for images 1.1 export back into boxes for ``task``'s images.

    Args:
        path: ``annotations.xml``, the zip CVAT exported, or a folder holding ``annotations.xml``.
        task: the exported images (names, sizes) and classes.

    Returns:
        :class:`~alod.annotate.core.ImportResult` with ``float64[K, 4]`` x1,y1,x2,y2 pixel boxes
        and ``int64[K]`` labels per answered image, and every problem (see the module docstring).

    Raises:
        AlodError: the path is missing or is not a safe, well-formed CVAT for images XML.
    """
    data, file = _read_bytes(Path(path))
    root = _parse(data, file)
    builder = ImportBuilder(task, file, "cvat")
    matcher = NameMatcher.for_task(task)
    for el in root:
        if el.tag in ("version", "meta"):
            continue
        if el.tag != "image":
            what = "a CVAT for video track" if el.tag == "track" else f"an unknown element <{el.tag}>"
            builder.problem(f"<{el.tag}> id={el.get('id')}", "not_this_format",
                            f"{what}; export the task as 'CVAT for images 1.1'; skipped")
            continue
        where = f"image id={el.get('id')} name={el.get('name')!r}"
        if el.get("subset") is not None:
            where += f" subset={el.get('subset')!r}"
        w, h = _num(el.get("width")), _num(el.get("height"))
        size = (int(w), int(h)) if all(isinstance(v, float) and v.is_integer() for v in (w, h)) else None
        name = open_image(builder, matcher, el.get("name"), where, size=size)
        if name is None:
            continue
        for k, child in enumerate(el):
            child_where = f"{where}: <{child.tag}> #{k} {child.get('label')!r}"
            if child.tag == "box":
                _box(builder, name, child_where, child)
            else:
                kind = "an image-level tag" if child.tag == "tag" else f"a <{child.tag}>"
                builder.problem(child_where, "not_a_box", f"{kind} (only <box> is a box); skipped")
    return builder.finish()


def sniff(path: str | Path) -> bool:
    """Whether ``path`` (a file, a zip, or a folder with ``annotations.xml``) is XML whose root
    element is ``<annotations>``; reads at most the first 64 KiB."""
    path = Path(path)
    try:
        if path.is_dir():
            path = path / XML_NAME
        if not path.is_file():
            return False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if XML_NAME not in zf.namelist():
                    return False
                with zf.open(XML_NAME) as f:
                    head = f.read(1 << 16)
        else:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return False
    return bool(_ROOT.match(head))


FORMAT = AnnotationFormat(name="cvat", export=export, read=read, sniff=sniff, version="CVAT for images 1.1")
