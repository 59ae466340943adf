"""The annotation-format registry: every format ``alod export --format`` and ``alod import`` can name.

One entry per tool module (``labelme``, ``cvat``, ``coco``, ``labelstudio``, ``voc``, ``yolo``), each that module's
``FORMAT`` (an :class:`~alod.annotate.core.AnnotationFormat`). Registration order is the order of
``--format``'s choices and of content detection (:func:`detect_format`).
"""
from __future__ import annotations

from pathlib import Path

from alod.annotate import coco, cvat, labelme, labelstudio, voc, yolo
from alod.annotate.core import AnnotationFormat
from alod.utils import AlodError, Registry

ANNOTATION_FORMATS: Registry[AnnotationFormat] = Registry("annotation format")
for _module in (labelme, cvat, coco, labelstudio, voc, yolo):
    ANNOTATION_FORMATS.register(_module.FORMAT.name, _module.FORMAT)


def get_format(name: str) -> AnnotationFormat:
    """The format registered as ``name``; :class:`AlodError` listing the formats."""
    return ANNOTATION_FORMATS.get(name)


def format_names() -> list[str]:
    """Registered format names, in registration order (``--format``'s choices)."""
    return ANNOTATION_FORMATS.names()


def detect_format(path: str | Path) -> AnnotationFormat:
    """The format of ``path`` by content, or a clear error listing the formats tried."""
    path = Path(path)
    for fmt in ANNOTATION_FORMATS.values():
        try:
            if fmt.sniff(path):
                return fmt
        except (OSError, ValueError):
            continue
    raise AlodError(f"{path}: not recognised as any annotation format ({', '.join(ANNOTATION_FORMATS)}); "
                    "name it with --format")
