"""The compact index every reader produces and every stage consumes.

A split is stored as flat numpy arrays in CSR layout (boxes of image ``i`` are rows
``offsets[i]:offsets[i+1]``) instead of a list of dicts: 70k BDD100K frames with 1.3M boxes take a
few tens of MB, save to one ``.npz`` and load in well under a second.

Conventions (shared by readers, datasets, evaluation and scoring):

* ``boxes``: ``float64[M, 4]``, ``x1, y1, x2, y2`` in pixels of the original image: the label
  file's own values, so that evaluating against the index gives the official result (float32
  moves an IoU by ~1e-7 and can flip a match that sits on a threshold, which moved a rare
  class's AP by ~1e-3). Training converts to float32 tensors itself.
* ``names``: relative paths under ``image_root``, confined to it
  (:func:`alod.data.problems.image_name_problem`; :meth:`DetectionIndex.image_path` refuses
  any other name).
* ``labels``: ``int64[M]`` in ``1..C`` (``0`` is reserved for background, as in torchvision),
  indexing ``classes[label - 1]``.
* ``ignore``: ``bool[M]``; ignored regions (BDD100K ``other person``, ``other vehicle``,
  ``trailer``; COCO ``iscrowd``) carry the class they are mapped to and count as crowd regions in
  evaluation; they are never training targets.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alod.data.problems import image_name_problem
from alod.utils import AlodError, atomic_write_bytes, sha256_strings

INDEX_FORMAT = "alod.index/1"


@dataclass(frozen=True, eq=False)
class DetectionIndex:
    """Images and their boxes for one split.

    Attributes:
        image_root: folder the image ``names`` are relative to.
        names: ``str[N]`` image file names (relative paths), in label-file order.
        widths, heights: ``int32[N]`` image sizes in pixels.
        offsets: ``int64[N + 1]``; boxes of image ``i`` are ``offsets[i]:offsets[i + 1]``.
        boxes: ``float64[M, 4]`` x1, y1, x2, y2 pixels (any float array given is converted).
        labels: ``int64[M]`` class ids in ``1..len(classes)``.
        ignore: ``bool[M]`` crowd / ignored regions.
        classes: class names; ``classes[k - 1]`` is the name of label ``k``.
        source: the label file this index was parsed from (for messages and audit).
    """

    image_root: str
    names: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    classes: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if self.boxes.dtype != np.float64:
            object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=np.float64))
        n = len(self.names)
        m = len(self.boxes)
        if self.offsets.shape != (n + 1,) or int(self.offsets[0]) != 0 or int(self.offsets[-1]) != m:
            raise ValueError(f"offsets must have shape ({n + 1},), start at 0 and end at {m}")
        if self.boxes.shape != (m, 4) or self.labels.shape != (m,) or self.ignore.shape != (m,):
            raise ValueError("boxes, labels and ignore must have matching first dimensions")
        if self.widths.shape != (n,) or self.heights.shape != (n,):
            raise ValueError("widths and heights must have one entry per image")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_lists(
        cls,
        *,
        image_root: str | os.PathLike,
        names: list[str],
        widths: list[int] | np.ndarray,
        heights: list[int] | np.ndarray,
        boxes_per_image: list[np.ndarray],
        labels_per_image: list[np.ndarray],
        ignore_per_image: list[np.ndarray] | None = None,
        classes: tuple[str, ...],
        source: str = "",
    ) -> "DetectionIndex":
        """Build from per-image arrays (``boxes_per_image[i]``: ``float[K_i, 4]``, stored as float64)."""
        counts = np.array([len(b) for b in boxes_per_image], dtype=np.int64)
        offsets = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        if ignore_per_image is None:
            ignore_per_image = [np.zeros(len(b), dtype=bool) for b in boxes_per_image]

        def cat(parts, dtype, shape):
            parts = [np.asarray(p, dtype=dtype).reshape(shape) for p in parts]
            return np.concatenate(parts) if parts else np.zeros((0,) + shape[1:], dtype=dtype)

        return cls(
            image_root=str(image_root),
            names=np.asarray(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
            widths=np.asarray(widths, dtype=np.int32),
            heights=np.asarray(heights, dtype=np.int32),
            offsets=offsets,
            boxes=cat(boxes_per_image, np.float64, (-1, 4)),
            labels=cat(labels_per_image, np.int64, (-1,)),
            ignore=cat(ignore_per_image, bool, (-1,)),
            classes=tuple(classes),
            source=str(source),
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, i: int) -> Path:
        """``image_root / names[i]``.

        Raises:
            AlodError: the name would leave ``image_root`` (absolute, ``..``, ...; see
                :func:`alod.data.problems.image_name_problem`). Readers never let such a name into
                an index; this guards indexes built by other code.
        """
        name = str(self.names[i])
        why = image_name_problem(name)
        if why is not None:
            raise AlodError(f"image {i} of {self.source or 'the index'}: {why}; refusing to open it "
                            f"outside the image folder {self.image_root!r}")
        return Path(self.image_root) / name

    def annotations(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes float64[K, 4], labels int64[K], ignore bool[K])`` of image ``i``."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.boxes[a:b], self.labels[a:b], self.ignore[a:b]

    def name_to_index(self) -> dict[str, int]:
        return {str(n): i for i, n in enumerate(self.names)}

    def subset(self, indices) -> "DetectionIndex":
        """A new index with images ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, ends = self.offsets[indices], self.offsets[indices + 1]
        counts = ends - starts
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = (
            np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
            if len(indices) and offsets[-1] > 0
            else np.zeros(0, dtype=np.int64)
        )
        return DetectionIndex(
            image_root=self.image_root,
            names=self.names[indices],
            widths=self.widths[indices],
            heights=self.heights[indices],
            offsets=offsets,
            boxes=self.boxes[rows],
            labels=self.labels[rows],
            ignore=self.ignore[rows],
            classes=self.classes,
            source=self.source,
        )

    def class_counts(self, *, include_ignored: bool = False) -> dict[str, int]:
        keep = np.ones(len(self.labels), bool) if include_ignored else ~self.ignore
        counts = np.bincount(self.labels[keep], minlength=self.num_classes + 1)
        return {c: int(counts[k + 1]) for k, c in enumerate(self.classes)}

    def fingerprint(self) -> dict:
        """What a schedule records to recognise this split: image count + hash of sorted names."""
        return {"num_images": len(self), "names_sha256": sha256_strings(sorted(map(str, self.names)))}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` atomically (see :func:`alod.utils.atomic_write_bytes`)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.array(INDEX_FORMAT),
            image_root=np.array(self.image_root),
            names=self.names,
            widths=self.widths,
            heights=self.heights,
            offsets=self.offsets,
            boxes=self.boxes,
            labels=self.labels,
            ignore=self.ignore,
            classes=np.asarray(self.classes, dtype=str),
            source=np.array(self.source),
        )
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DetectionIndex":
        """Read a file :meth:`save` wrote (files from before float64 boxes load with their float32
        boxes widened, which is exact but keeps their float32 rounding)."""
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != INDEX_FORMAT:
                raise ValueError(f"{path}: not an {INDEX_FORMAT} file (format={z['format']})")
            return cls(
                image_root=str(z["image_root"]),
                names=z["names"],
                widths=z["widths"],
                heights=z["heights"],
                offsets=z["offsets"],
                boxes=z["boxes"],
                labels=z["labels"],
                ignore=z["ignore"],
                classes=tuple(str(c) for c in z["classes"]),
                source=str(z["source"]),
            )

    def equals(self, other: "DetectionIndex") -> bool:
        """Exact equality of every array and field (used to check caches against fresh parses)."""
        return (
            self.image_root == other.image_root
            and self.classes == other.classes
            and self.source == other.source
            and all(
                np.array_equal(getattr(self, k), getattr(other, k))
                for k in ("names", "widths", "heights", "offsets", "boxes", "labels", "ignore")
            )
        )
