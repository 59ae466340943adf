"""Paired (image, target) transforms, chosen by name in YAML (``train.transforms``)."""
from __future__ import annotations

from typing import Callable

import torch

from alod.utils import Registry

Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]
#: ``train.transforms`` -> a factory of the transform (``None``: no transform).
TRANSFORM_PRESETS: Registry[Callable[[], Transform | None]] = Registry("transform preset")


def _hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Flip ``image [3, H, W]`` and ``target["boxes"] [K, 4]`` (x1, y1, x2, y2 px) left-right."""
    width = image.shape[-1]
    image = image.flip(-1)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image, {**target, "boxes": boxes}


@TRANSFORM_PRESETS.register("none")
def _none() -> Transform | None:
    return None


@TRANSFORM_PRESETS.register("hflip")
def _random_hflip() -> Transform:
    def apply(image, target):
        # torch's global RNG: seeded per process and per DataLoader worker, so runs are repeatable.
        if torch.rand(()) < 0.5:
            return _hflip(image, target)
        return image, target

    return apply


def get_transform(name: str) -> Transform | None:
    """A fresh transform of the preset ``name``; :class:`AlodError` listing the presets."""
    return TRANSFORM_PRESETS.get(name, where="train.transforms")()
