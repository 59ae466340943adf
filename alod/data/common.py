"""What every label-format module shares: the reader's result, the format entry, value helpers.

Neutral ground so that the format modules (:mod:`alod.data.bdd100k`, :mod:`alod.data.coco`, and any
new one) can define their :class:`LabelFormat` entry without importing each other or the registry
(:mod:`alod.data.readers`), which imports them.
"""
from __future__ import annotations

import json
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from alod.data.index import DetectionIndex

#: Coordinates must lie strictly inside ``(-COORD_LIMIT, COORD_LIMIT)``: beyond it they would
#: silently become inf in the float32 index. A chained comparison against it also rejects NaN
#: (every comparison with NaN is false) and infinities.
COORD_LIMIT = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ParsedLabels:
    """What a reader returns.

    Attributes:
        index: the images and boxes that passed the checks.
        frame_index: ``int64[N]``; ``frame_index[i]`` is the position in the label file of image
            ``i`` of ``index`` (frames that were skipped leave gaps), for problem messages.
        num_frames: number of frames (COCO: image records) in the file, skipped ones included.
        layout: the name of the label format read (``"bdd100k"``, ``"bdd100k_2018"``, ``"coco"``;
            for ``"auto"``: what was detected).
    """

    index: DetectionIndex
    frame_index: np.ndarray
    num_frames: int
    layout: str


@dataclass(frozen=True)
class LabelFormat:
    """One label format, as the registry :data:`alod.data.readers.LABEL_FORMATS` lists it.

    Attributes:
        name: the name ``data.format`` and ``alod evaluate --format`` use.
        family: formats of one family share their prediction files and are told apart only by
            the reader (BDD100K det_20 and 2018 are both ``"bdd100k"``); ``alod evaluate`` reports
            it as ``data_format``.
        read: ``read(path, *, image_root: str, image_size: (width, height) px,
            problems: ProblemLog) -> ParsedLabels``; ``image_size`` is for formats whose files
            carry no sizes (others ignore it), bad records go to ``problems``.
        sniff: ``sniff(head: bytes) -> bool``: does a file starting with ``head`` (its first
            4096 bytes, byte-order mark and leading whitespace removed) belong to this format?
            ``None``: never chosen by ``fmt="auto"`` (BDD100K 2018 is told from det_20 by
            ``read_detected``, not by the file head).
        read_detected: the reader used when ``fmt="auto"`` chose this format (same signature as
            ``read``); ``None``: ``read``. BDD100K's accepts both layouts and reports which it saw.
        read_predictions: ``read_predictions(path, gt: DetectionIndex, *, gt_path) ->
            (detections, counts)`` for ``alod evaluate``: ``detections[i]`` belongs to
            ``gt.names[i]`` (``boxes float64[N, 4]`` x1, y1, x2, y2 px, ``labels int64[N]`` in
            ``1..C``, ``scores float64[N]``), ``counts`` has ``frames``, ``detections`` and
            ``missing_frames``; ``gt_path`` is the label file ``gt`` was read from. Raises
            :class:`~alod.utils.AlodError` naming the file and record. ``None``: ``alod evaluate``
            cannot read predictions of this format.
        read_exact_boxes: ``read_exact_boxes(path, gt: DetectionIndex) -> list[list | None]``:
            per image of ``gt``, the boxes the reader keeps, in its order, as the file writes them
            (Python floats, x1, y1, x2, y2 px); ``None`` for an image not found in the file. May
            raise on anything unexpected: the caller (:func:`alod.file_evaluation.exact_gt_boxes`)
            then falls back to the index's float32 boxes. ``None``: no exact re-read.
        box_convention: the default of ``alod evaluate --box-convention`` for this format
            (``"bdd100k"``: ``w = x2 - x1 + 1``; ``"coco"``: ``w = x2 - x1``).
        description: one line for help texts.
    """

    name: str
    family: str
    read: Callable[..., ParsedLabels]
    sniff: Callable[[bytes], bool] | None = None
    read_detected: Callable[..., ParsedLabels] | None = None
    read_predictions: Callable[..., tuple[list[dict], dict]] | None = None
    read_exact_boxes: Callable[..., list] | None = None
    box_convention: str = "coco"
    description: str = ""


# ----------------------------------------------------------------------------- value helpers
def array_to_numpy(a: array, dtype) -> np.ndarray:
    """Copy a typed ``array.array`` into a 1-d numpy array of ``dtype`` (``frombuffer`` refuses
    empty buffers, so an empty array gets ``np.zeros(0, dtype)``)."""
    return np.frombuffer(a, dtype=dtype).copy() if len(a) else np.zeros(0, dtype=dtype)


def json_type_name(v) -> str:
    """The JSON name of a decoded value's type (``object``, ``array``, ``string``, ``number``,
    ``boolean``, ``null``), for messages such as "frame is a JSON array, not an object"."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__
    )


def short_json(v, n: int = 80) -> str:
    """A value as JSON, cut to ``n`` characters, for messages."""
    try:
        s = json.dumps(v, allow_nan=True)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def rows_to_detections(rows: list[tuple]) -> dict:
    """One image's prediction rows ``(x1, y1, x2, y2, score, label)`` -> the detection dict of
    :func:`alod.evaluation.evaluate_detections`: ``boxes float64[N, 4]`` px, ``labels int64[N]``,
    ``scores float64[N]`` (empty arrays for no rows)."""
    if not rows:
        return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}
    a = np.asarray(rows, dtype=np.float64)
    return {"boxes": a[:, :4], "labels": a[:, 5].astype(np.int64), "scores": a[:, 4]}
