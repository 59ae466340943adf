"""The label-format registry: every format ``data.format`` and ``alod evaluate --format`` can name.

:data:`LABEL_FORMATS` maps a name to its :class:`LabelFormat` entry (reader, file sniffing,
prediction reader for ``alod evaluate``, default box convention).
:func:`alod.data.loading.load_index` and :func:`alod.evaluation.evaluate_files` go through it
and nothing else, so no code outside a format's own module branches on a format name.

``"auto"`` is not a format: :func:`detect_format` asks each entry's ``sniff`` in registry order
and the first that recognises the file head wins (a JSON object: COCO; a JSON list: BDD100K, whose
reader then tells det_20 from 2018 by the category names). Pascal VOC and YOLO are never
detected: a VOC ``path`` is a folder (no head) or an ImageSets list of plain ids (no signature), a
YOLO one a folder of ``.txt`` files, so they are named (``data.format: voc`` / ``yolo``;
``data.kind: voc`` / ``yolo`` implies it).

Adding a label format
---------------------
1. One module, as ``alod/data/yolo.py`` was added: a reader ``read(path, *, image_root, image_size,
   problems) -> ParsedLabels`` that reports bad records to ``problems`` (see
   :mod:`alod.data.problems`; helpers in :mod:`alod.data.common`), checks every image name with
   :func:`alod.data.problems.image_name_problem` (a label file must not reach outside the image
   folder) and every box with :func:`alod.data.common.check_box`, and at its end the entry
   ``YOLO_FORMAT = LabelFormat(name="yolo", family="yolo", read=..., sniff=...)``. A prediction
   reader is optional (without it ``alod evaluate`` refuses the format). A format whose ``path``
   stands for several files (a folder, a list of ids) sets ``reads_folders`` and ``fingerprint``,
   and one whose files carry no class list takes ``classes`` (``accepts_classes``), as
   :mod:`alod.data.voc` does; one whose frames are image files and sizes image headers sets
   ``needs_images``, as :mod:`alod.data.yolo` does. ``load_index`` checks
   image names again before it touches an image, so a reader that forgets cannot open files
   outside the image folder.
2. One entry in the tuple registered into :data:`LABEL_FORMATS` below: ``YOLO_FORMAT``. ``data.format: yolo``,
   ``load_index(fmt="yolo")`` and ``alod evaluate --format yolo`` then accept it.
3. Its tests in ``tests/data/test_yolo.py`` (``tests/data/test_readers.py`` shows a toy format
   registered end to end). Bump :data:`alod.data.loading.READER_VERSION` when an existing reader's
   output changes.
"""
from __future__ import annotations

import os

from alod.data.bdd100k import BDD100K_2018_FORMAT, BDD100K_FORMAT
from alod.data.coco import COCO_FORMAT
from alod.data.common import LabelFormat, ParsedLabels
from alod.data.problems import LabelFileError
from alod.data.voc import VOC_FORMAT
from alod.data.yolo import YOLO_FORMAT
from alod.utils import AlodError, Registry

__all__ = [
    "FORMAT_CHOICES",
    "LABEL_FORMATS",
    "LabelFormat",
    "ParsedLabels",
    "check_format_choice",
    "detect_format",
    "format_choices",
    "get_label_format",
    "label_format_for",
]

#: name -> entry. Order matters for ``auto``: the first entry whose ``sniff`` accepts a file wins.
LABEL_FORMATS: Registry[LabelFormat] = Registry("label format")
for _entry in (BDD100K_FORMAT, BDD100K_2018_FORMAT, COCO_FORMAT, VOC_FORMAT, YOLO_FORMAT):
    LABEL_FORMATS.register(_entry.name, _entry)

#: What ``data.format`` / ``--format`` accept (for argparse choices). Code that must see formats
#: registered later (tests) calls :func:`format_choices` instead.
FORMAT_CHOICES: tuple[str, ...] = ("auto", *LABEL_FORMATS)

#: Bytes of the file head that ``sniff`` functions see.
HEAD_BYTES = 4096


def format_choices() -> tuple[str, ...]:
    """``("auto", *LABEL_FORMATS)`` as the registry stands now."""
    return ("auto", *LABEL_FORMATS)


def get_label_format(name: str) -> LabelFormat:
    """The entry registered as ``name``.

    Raises:
        AlodError: ``name`` is not registered; the message lists the registered names.
    """
    return LABEL_FORMATS.get(name)


def check_format_choice(fmt: str) -> None:
    """Raise :class:`AlodError` unless ``fmt`` is ``"auto"`` or a registered format name (the
    message lists them all, ``auto`` first)."""
    if fmt != "auto" and not (isinstance(fmt, str) and fmt in LABEL_FORMATS):
        raise AlodError(f"unknown label format {fmt!r}; choose one of {', '.join(format_choices())}")


def detect_format(path: str | os.PathLike) -> str:
    """The name of the first registered format whose ``sniff`` accepts the file's head.

    With the built-in formats: ``"coco"`` if the top level is a JSON object, ``"bdd100k"`` if it is
    a list (det_20 vs 2018 is decided by the reader from the category names, see
    :func:`alod.data.bdd100k.detect_bdd_layout`). Reads the first :data:`HEAD_BYTES` bytes only.

    Raises:
        LabelFileError: no format recognises the file, or ``path`` is a folder.
    """
    # Formats read from a folder or a list of ids have nothing to sniff: they must be named.
    named_only = ", ".join(n for n, e in LABEL_FORMATS.items() if e.reads_folders)
    if os.path.isdir(path):
        raise LabelFileError(f"{os.fspath(path)} is a folder: 'auto' recognises a label file by its first bytes; "
                             f"name the format of a folder of label files ({named_only}) in data.format")
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    for name, entry in LABEL_FORMATS.items():
        if entry.sniff is not None and entry.sniff(head):
            return name
    raise LabelFileError(
        f"{os.fspath(path)}: cannot tell the label format: the file starts with "
        f"{head[:20]!r}, not a JSON object (COCO) or list (BDD100K). Is it JSON at all? "
        f"(Formats 'auto' never picks, such as {named_only}, must be named in data.format.)"
    )


def label_format_for(path: str | os.PathLike, fmt: str) -> LabelFormat:
    """The entry for ``fmt``, or for what :func:`detect_format` finds in ``path`` if ``fmt`` is
    ``"auto"``. Raises :class:`AlodError` for an unknown ``fmt`` or an unrecognised file."""
    check_format_choice(fmt)
    return get_label_format(detect_format(path) if fmt == "auto" else fmt)
