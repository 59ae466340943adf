"""Inputs the benchmarks share: a batch of generated demo scenes with their boxes, a detector's SGD
training step on them, and the two CPU JPEG decoders timed against each other (PIL and
:func:`alod.data.dataset.decode_rgb`)."""
from __future__ import annotations

from dataclasses import asdict
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from alod.config import SyntheticConfig
from alod.data.dataset import DetectionDataset, collate_detection, decode_rgb
from alod.data.loading import load_index
from alod.data.synthetic import generate_dataset


def scene_batch(tmp: Path, n: int, width: int = 320, height: int = 192):
    """``(images, targets, jpeg_files)``: ``n`` generated scenes of ``width x height`` under ``tmp``,
    as the training DataLoader would hand them to a detector."""
    root = generate_dataset(tmp / f"d{width}", **asdict(SyntheticConfig(num_train=n, num_val=1, width=width, height=height)),
                            progress=False)
    index = load_index(labels=root / "labels/det_20/det_train.json", image_root=root / "images/100k/train",
                       image_size=(width, height), log=lambda *_: None)
    images, targets = collate_detection([DetectionDataset(index)[i] for i in range(n)])
    return images, targets, sorted((root / "images/100k/train").glob("*.jpg"))


def sgd_step(model_cfg, images, targets, *, bf16: bool = False, channels_last: bool = False):
    """``(model, step)``: a detector built from ``model_cfg`` (seed 0) in train mode, and a function
    that runs one SGD step with backward on ``images`` / ``targets`` (no warm-up: the caller's).
    ``bf16``: under CPU bf16 autocast; ``channels_last``: weights in that memory format."""
    import torch

    from alod.models import build_detector

    torch.manual_seed(0)
    model = build_detector(num_classes=10, **asdict(model_cfg))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return model, step


def cpu_decoders(blobs: list[bytes]) -> dict[str, Callable[[], None]]:
    """``{"pil": ..., "torchvision": ...}``: each decodes every blob to RGB pixels once per call."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    def pil():
        for b in blobs:
            with Image.open(BytesIO(b)) as im:
                pil_to_tensor(im.convert("RGB"))

    def torchvision():
        for b in blobs:
            decode_rgb(b)

    return {"pil": pil, "torchvision": torchvision}
