"""The torch ``Dataset`` over a :class:`~alod.data.index.DetectionIndex`."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from alod.data.index import DetectionIndex
from alod.utils import AlodError


class DetectionDataset(torch.utils.data.Dataset):
    """Images of ``index`` as ``(image float[3, H, W] in [0, 1], target)``.

    ``target`` holds ``boxes float32[K, 4]`` (x1, y1, x2, y2 px), ``labels int64[K]`` (1..C) and
    ``image_id`` (the position in ``index``). Ignored regions and zero-area boxes (kept by the
    readers, as the official evaluation keeps them) are not training targets and are left out:
    torchvision rejects boxes without positive width and height.

    An image that cannot be decoded raises :class:`AlodError` naming it and ``data.strict: false``;
    with ``skip_unreadable`` (what ``strict: false`` sets) the item is ``(None, {"image_id": i,
    "unreadable": reason})`` instead, and training and prediction skip it (:mod:`alod.engine`), so a
    file that breaks hours into a run is counted and listed and the run goes on.
    """

    def __init__(self, index: DetectionIndex, transform=None, *, skip_unreadable: bool = False):
        self.index = index
        self.transform = transform
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.index)

    def load_image(self, i: int) -> torch.Tensor:
        path = self.index.image_path(i)
        try:
            img = decode_rgb(path.read_bytes())
        except FileNotFoundError:
            raise AlodError(f"image {path} (frame {i}, {self.index.names[i]!s}) does not exist") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:  # truncated, corrupt, not an image
            raise AlodError(f"image {path} (frame {i}) cannot be decoded: {e}. Replace or remove it, or set "
                            "data.strict: false to skip unreadable images and go on") from None
        return img.float().div_(255.0)

    def __getitem__(self, i: int):
        try:
            image = self.load_image(i)
        except AlodError as e:
            if not self.skip_unreadable:
                raise
            return None, {"image_id": i, "unreadable": str(e)}
        boxes, labels, ignore = self.index.annotations(i)
        keep = ~ignore & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes[keep])).float().reshape(-1, 4),
            "labels": torch.from_numpy(np.ascontiguousarray(labels[keep])).long(),
            "image_id": i,
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


_JPEG_SOI = b"\xff\xd8"


def _torchvision_decode_jpeg():
    """torchvision's ``decode_jpeg`` (or ``None`` where it is gone: torchvision 0.29 deprecates its image
    codecs in favour of TorchCodec, which needs FFmpeg; PIL then decodes everything)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg  # why: may be gone in later torchvision releases
    except ImportError:  # pragma: no cover - depends on the installed torchvision
        return None
    return lambda data: decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


_DECODE_JPEG = _torchvision_decode_jpeg()


def decode_rgb(data: bytes) -> torch.Tensor:
    """``uint8[3, H, W]`` RGB pixels of an encoded image.

    JPEGs go through ``torchvision.io.decode_jpeg`` (libjpeg-turbo without PIL's per-image object
    overhead; frames/s against PIL in ``benchmarks/bench_train_step.py``); its pixels equal PIL's
    ``convert("RGB")`` exactly (checked on the 308 real JPEGs of ``shared/data`` and in
    ``tests/data/test_dataset.py``). Anything else, and any JPEG libjpeg refuses, goes through PIL,
    whose error (truncated, corrupt, not an image) is the one reported.
    """
    if _DECODE_JPEG is not None and data[:2] == _JPEG_SOI:
        try:
            with warnings.catch_warnings():  # the deprecation notice would print once per image
                warnings.simplefilter("ignore", DeprecationWarning)
                return _DECODE_JPEG(data)
        except RuntimeError:
            pass  # PIL decides, and names the problem
    with Image.open(io.BytesIO(data)) as im:
        return pil_to_tensor(im.convert("RGB"))


def collate_detection(batch):
    """Lists, not stacked tensors: detection images and targets differ in size.

    Unreadable items (``image is None``, see :class:`DetectionDataset`) stay in the lists; the
    engine drops them and reports their ``target["unreadable"]``.
    """
    images, targets = zip(*batch)
    return list(images), list(targets)
