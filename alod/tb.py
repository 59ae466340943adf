"""TensorBoard and JSON-lines logging. Only the main process creates a :class:`RunLogger`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torchvision.transforms.v2.functional import resize
from torchvision.utils import draw_bounding_boxes, make_grid


class RunLogger:
    """Scalars, images and a ``metrics.jsonl`` record per event, for one run folder.

    ``tb_dir``: TensorBoard folder (``tensor_logs/<run>/...``); ``jsonl``: optional JSON-lines file
    that receives the same scalars (grep-able, survives without TensorBoard).
    """

    def __init__(self, tb_dir: str | Path, *, jsonl: str | Path | None = None):
        self.writer = SummaryWriter(log_dir=str(tb_dir))
        self.jsonl = Path(jsonl) if jsonl else None

    def scalars(self, values: dict[str, float], *, step: int, prefix: str = "", record: dict | None = None) -> None:
        for k, v in values.items():
            if v is None or not np.isfinite(v):
                continue  # e.g. AP of a class absent from the split: TensorBoard cannot plot NaN
            self.writer.add_scalar(f"{prefix}{k}", float(v), global_step=int(step))
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            clean = {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in values.items()}
            with open(self.jsonl, "a") as f:
                f.write(json.dumps({**(record or {}), "step": int(step), "prefix": prefix, **clean}, sort_keys=True) + "\n")

    def images_with_boxes(
        self, tag: str, images: list[torch.Tensor], dets: list[dict], classes: tuple[str, ...], *, step: int,
        score_threshold: float = 0.5, max_side: int = 640,
    ) -> None:
        """Draw predicted boxes (score >= ``score_threshold``) on each image and log one grid.

        Args:
            images: ``[3, H, W]`` (or ``[1, H, W]`` / ``[H, W]`` grey) float in [0, 1] or uint8, of any
                mix of sizes.
            dets: per image ``boxes [N, 4]`` x1, y1, x2, y2 px of that image, ``scores [N]``,
                ``labels [N]`` (1..C), as numpy arrays or tensors; ``N`` may be 0.
            max_side: an image whose longer side exceeds this is scaled down (aspect kept) before
                drawing, so labels stay legible and the logged grid stays small.

        Every drawn image is letterboxed (centred, aspect kept, padded) onto one cell as large as
        the largest of them, so portrait and landscape frames of different sizes share one grid.
        """
        drawn = [_draw(img, det, classes, score_threshold=score_threshold, max_side=max_side)
                 for img, det in zip(images, dets)]
        if drawn:
            grid = make_grid(letterbox_images(drawn), nrow=min(4, len(drawn)), padding=2)
            self.writer.add_image(tag, grid, global_step=int(step))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------------------- drawing
def _to_rgb_uint8(img: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` uint8 from ``[3|1, H, W]`` or ``[H, W]``, float in [0, 1] or uint8."""
    img = torch.as_tensor(img).detach().cpu()
    if img.dim() == 2:
        img = img.unsqueeze(0)
    if img.dim() != 3 or img.shape[0] not in (1, 3, 4) or img.shape[1] < 1 or img.shape[2] < 1:
        raise ValueError(f"expected an image [3, H, W], [1, H, W] or [H, W], got shape {tuple(img.shape)}")
    img = img[:3] if img.shape[0] == 4 else img.expand(3, -1, -1) if img.shape[0] == 1 else img
    if img.dtype != torch.uint8:
        img = (torch.nan_to_num(img.float()).clamp(0, 1) * 255).round().to(torch.uint8)
    return img.contiguous()


def _draw(img, det: dict, classes: tuple[str, ...], *, score_threshold: float, max_side: int) -> torch.Tensor:
    """One image with its confident boxes drawn: ``uint8 [3, h, w]``, scaled so that max(h, w) <= max_side."""
    canvas = _to_rgb_uint8(img)
    h, w = canvas.shape[1:]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        canvas = resize(canvas, [nh, nw], antialias=True)
    else:
        nh, nw = h, w
    # numpy arrays or tensors (on any device) alike
    boxes = torch.as_tensor(det["boxes"]).detach().cpu().to(torch.float32).reshape(-1, 4)
    scores = torch.as_tensor(det["scores"]).detach().cpu().to(torch.float32).reshape(-1)
    labels = torch.as_tensor(det["labels"]).detach().cpu().reshape(-1)
    boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h])
    boxes = torch.stack([boxes[:, 0].clamp(0, nw), boxes[:, 1].clamp(0, nh),
                         boxes[:, 2].clamp(0, nw), boxes[:, 3].clamp(0, nh)], dim=1)
    # Only confident, finite, well-formed boxes: draw_bounding_boxes raises on x2 < x1.
    keep = ((scores >= score_threshold) & torch.isfinite(boxes).all(1)
            & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]))
    if not bool(keep.any()):
        return canvas  # nothing to draw (torchvision warns on empty boxes)
    names = [f"{classes[int(k) - 1] if 1 <= int(k) <= len(classes) else int(k)} {float(s):.2f}"
             for k, s in zip(labels[keep], scores[keep])]
    return draw_bounding_boxes(canvas, boxes[keep], labels=names, colors="magenta", width=1)


def letterbox_images(images: list[torch.Tensor], *, fill: int = 0) -> list[torch.Tensor]:
    """Centre each ``uint8 [3, h_i, w_i]`` image on a ``[3, max h, max w]`` canvas of ``fill`` (0-255).

    No image is resized, so boxes already drawn stay where they are; the result stacks into one
    batch (``make_grid`` needs equal sizes).
    """
    if not 0 <= fill <= 255:
        raise ValueError(f"fill must be in 0..255, got {fill}")
    if not images:
        return []
    height = max(int(im.shape[1]) for im in images)
    width = max(int(im.shape[2]) for im in images)
    out = []
    for im in images:
        h, w = int(im.shape[1]), int(im.shape[2])
        if (h, w) == (height, width):
            out.append(im)
            continue
        canvas = torch.full((im.shape[0], height, width), fill, dtype=im.dtype)
        y, x = (height - h) // 2, (width - w) // 2
        canvas[:, y:y + h, x:x + w] = im
        out.append(canvas)
    return out
