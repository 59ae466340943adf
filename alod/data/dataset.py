"""The torch ``Dataset`` over a :class:`~alod.data.index.DetectionIndex`."""
from __future__ import annotations

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
    """

    def __init__(self, index: DetectionIndex, transform=None):
        self.index = index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def load_image(self, i: int) -> torch.Tensor:
        path = self.index.image_path(i)
        try:
            with Image.open(path) as im:
                img = pil_to_tensor(im.convert("RGB"))
        except FileNotFoundError:
            raise AlodError(f"image {path} (frame {i}, {self.index.names[i]!s}) does not exist") from None
        except (UnidentifiedImageError, OSError) as e:
            raise AlodError(f"image {path} (frame {i}) cannot be read: {e}. Replace or remove it.") from None
        return img.float().div_(255.0)

    def __getitem__(self, i: int):
        image = self.load_image(i)
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


def collate_detection(batch):
    """Lists, not stacked tensors: detection images and targets differ in size."""
    images, targets = zip(*batch)
    return list(images), list(targets)
