"""TensorBoard and JSON-lines logging. Only the main process creates a :class:`RunLogger`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class RunLogger:
    """Scalars, images and a ``metrics.jsonl`` record per event, for one run folder.

    ``tb_dir``: TensorBoard folder (``tensor_logs/<run>/...``); ``jsonl``: optional JSON-lines file
    that receives the same scalars (grep-able, survives without TensorBoard).
    """

    def __init__(self, tb_dir: str | Path, *, jsonl: str | Path | None = None):
        from torch.utils.tensorboard import SummaryWriter

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
        score_threshold: float = 0.5,
    ) -> None:
        """Draw predicted boxes (score >= threshold) on ``images [3, H, W] in [0, 1]`` and log a grid."""
        from torchvision.utils import draw_bounding_boxes, make_grid

        drawn = []
        for img, det in zip(images, dets):
            keep = det["scores"] >= score_threshold
            boxes = torch.as_tensor(det["boxes"][keep]).reshape(-1, 4)
            labels = [f"{classes[int(k) - 1]} {s:.2f}" for k, s in zip(det["labels"][keep], det["scores"][keep])]
            canvas = (img.clamp(0, 1) * 255).to(torch.uint8)
            # An image with no confident box is logged as it is (torchvision warns on empty boxes).
            drawn.append(draw_bounding_boxes(canvas, boxes, labels=labels, colors="magenta", width=1) if len(boxes) else canvas)
        if drawn:
            grid = make_grid(drawn, nrow=min(4, len(drawn)), padding=2)
            self.writer.add_image(tag, grid, global_step=int(step))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
