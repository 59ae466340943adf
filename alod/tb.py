"""TensorBoard and JSON-lines logging. Only the main process creates a :class:`RunLogger`."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.tensorboard import SummaryWriter
from torchvision.transforms.v2.functional import resize
from torchvision.utils import make_grid


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
        targets: list[dict] | None = None, score_threshold: float = 0.5, max_side: int = 640,
    ) -> None:
        """Log one grid of images with their ground truth and predictions (see :func:`render_grid`)."""
        grid = render_grid(images, dets, classes, targets=targets, score_threshold=score_threshold, max_side=max_side)
        if grid is not None:
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


def render_grid(
    images: list[torch.Tensor], dets: list[dict], classes: tuple[str, ...], *, targets: list[dict] | None = None,
    score_threshold: float = 0.5, max_side: int = 640,
) -> torch.Tensor | None:
    """Draw each image's ground truth and confident predictions; one ``uint8 [3, H, W]`` grid, or ``None``
    when there are no images.

    Args:
        images: ``[3, H, W]`` (or ``[1, H, W]`` / ``[H, W]`` grey) float in [0, 1] or uint8, of any
            mix of sizes.
        dets: per image ``boxes [N, 4]`` x1, y1, x2, y2 px of that image, ``scores [N]``,
            ``labels [N]`` (1..C), as numpy arrays or tensors; ``N`` may be 0.
        targets: per image its ground truth, ``boxes [K, 4]`` x1, y1, x2, y2 px, ``labels [K]``
            (1..C) and optionally ``ignore [K]`` (crowd regions); ``None``: predictions only.
        max_side: an image whose longer side exceeds this is scaled down (aspect kept) before
            drawing, so labels stay legible and the logged grid stays small.

    Every drawn image is letterboxed (centred, aspect kept, padded) onto one cell as large as the
    largest of them, so portrait and landscape frames of different sizes share one grid. A legend
    strip (:func:`legend_strip`) on top says how to read it: TensorBoard images have no captions.
    """
    if not images:
        return None
    targets = targets if targets is not None else [None] * len(images)
    if not len(images) == len(dets) == len(targets):
        raise ValueError(f"got {len(images)} images, {len(dets)} detections and {len(targets)} targets")
    drawn, shown = [], set()
    for img, det, tgt in zip(images, dets, targets):
        canvas, used = _draw(img, det, tgt, classes, score_threshold=score_threshold, max_side=max_side)
        drawn.append(canvas)
        shown |= used
    grid = make_grid(letterbox_images(drawn), nrow=min(4, len(drawn)), padding=2)
    legend = legend_strip(int(grid.shape[2]), classes, sorted(shown))
    return torch.cat([torch.from_numpy(legend).permute(2, 0, 1), grid], dim=1)


def _draw(img, det: dict, target: dict | None, classes: tuple[str, ...], *, score_threshold: float,
          max_side: int) -> tuple[torch.Tensor, set[int]]:
    """One image drawn: ``(uint8 [3, h, w] scaled so that max(h, w) <= max_side, labels drawn)``."""

    canvas = _to_rgb_uint8(img)
    h, w = canvas.shape[1:]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        canvas = resize(canvas, [nh, nw], antialias=True)
    else:
        nh, nw = h, w
    factor = np.array([nw / w, nh / h, nw / w, nh / h])
    target = target or {}
    gt_boxes = _np(target.get("boxes", ()), np.float64).reshape(-1, 4)
    gt_labels = _np(target.get("labels", ()), np.int64)
    gt_ignore = _np(target["ignore"], bool) if target.get("ignore") is not None else None
    boxes, labels = _np(det["boxes"], np.float64).reshape(-1, 4), _np(det["labels"], np.int64)
    scores = _np(det["scores"], np.float64)
    out = draw_detections(canvas.permute(1, 2, 0).numpy(), gt_boxes=gt_boxes * factor, gt_labels=gt_labels,
                          gt_ignore=gt_ignore, boxes=boxes * factor, labels=labels, scores=scores,
                          class_names=classes, score_threshold=score_threshold)
    used = set(gt_labels[~gt_ignore] if gt_ignore is not None else gt_labels) | set(labels[scores >= score_threshold])
    return torch.from_numpy(out).permute(2, 0, 1).contiguous(), {int(k) for k in used}


def _np(x, dtype) -> np.ndarray:
    """numpy arrays or tensors (on any device) alike, flattened unless 2-D."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=dtype)
    return x if x.ndim == 2 else x.reshape(-1)


# Okabe & Ito (2008), "Color Universal Design": distinguishable with the common colour-vision
# deficiencies. Its black is left out (invisible on night scenes, and the text colour); class k gets
# entry (k - 1) % 7, so an 8th class reuses the first colour (its predictions still carry their name).
OKABE_ITO = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
             (204, 121, 167))
IGNORE_GREY = (150, 150, 150)
GT_WIDTH, PRED_WIDTH = 1, 3
LEGEND_ITEMS = ("GT: thin", "pred: thick, class score", "ignored GT: grey dashed")
_LEGEND_BG = (32, 32, 32)


def class_color(label: int) -> tuple[int, int, int]:
    """RGB of class ``label`` (1..C; any int cycles through :data:`OKABE_ITO`)."""
    return OKABE_ITO[(int(label) - 1) % len(OKABE_ITO)]


def draw_detections(
    image: np.ndarray, *, gt_boxes=None, gt_labels=None, gt_ignore=None, boxes=None, labels=None, scores=None,
    class_names: tuple[str, ...] | list[str] = (), score_threshold: float = 0.5,
) -> np.ndarray:
    """Ground truth and predictions of one image, in one colour per class; a new ``uint8[H, W, 3]``.

    Args:
        image: ``uint8[H, W, 3]`` RGB; not modified.
        gt_boxes: ``float[K, 4]`` x1, y1, x2, y2 pixels of ``image``; drawn as thin (1 px) outlines,
            so a ground-truth box with no thick box on it is a miss.
        gt_labels: ``int[K]`` in ``1..C``.
        gt_ignore: ``bool[K]`` or ``None``; ignored (crowd) regions are drawn as grey dashed
            outlines rather than left out: evaluation does not count a prediction on them as a
            false positive, and the grey box shows why.
        boxes: ``float[N, 4]`` x1, y1, x2, y2 pixels, predictions; drawn as thick (3 px) outlines
            with a ``"class score"`` tag, those with ``scores >= score_threshold`` only.
        labels: ``int[N]`` in ``1..C`` (other values are drawn with their number as the name).
        scores: ``float[N]`` in [0, 1].
        class_names: ``class_names[k - 1]`` names label ``k``.

    Any of the arrays may be ``None`` or empty. Boxes are clipped to the image; boxes that lie
    wholly outside it, are inverted (x2 < x1) or non-finite are skipped. Lines grow inwards from
    the box edge, so a prediction that matches its ground truth exactly covers the thin line.
    """

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8[H, W, 3] image, got {image.dtype}{list(image.shape)}")
    h, w = image.shape[:2]
    pil = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(pil)
    font = _font()

    gt_boxes, gt_keep = _clip(gt_boxes, w, h)
    gt_labels = _np(gt_labels if gt_labels is not None else np.zeros(len(gt_keep)), np.int64)
    gt_ignore = (_np(gt_ignore, bool) if gt_ignore is not None else np.zeros(len(gt_keep), bool))
    if not len(gt_labels) == len(gt_ignore) == len(gt_keep):
        raise ValueError(f"gt_boxes, gt_labels and gt_ignore differ in length: {len(gt_keep)}, {len(gt_labels)}, "
                         f"{len(gt_ignore)}")
    for i in np.flatnonzero(gt_keep & gt_ignore):
        _dashed_rectangle(draw, gt_boxes[i], IGNORE_GREY)
    for i in np.flatnonzero(gt_keep & ~gt_ignore):
        draw.rectangle(list(gt_boxes[i]), outline=class_color(gt_labels[i]), width=GT_WIDTH)

    boxes, keep = _clip(boxes, w, h)
    labels = _np(labels if labels is not None else np.zeros(len(keep)), np.int64)
    scores = _np(scores if scores is not None else np.zeros(len(keep)), np.float64)
    if not len(labels) == len(scores) == len(keep):
        raise ValueError(f"boxes, labels and scores differ in length: {len(keep)}, {len(labels)}, {len(scores)}")
    keep &= scores >= score_threshold  # NaN scores fail this too
    # Least confident first, so the most confident box and its tag end up on top.
    order = [i for i in np.argsort(scores, kind="stable") if keep[i]]
    for i in order:
        draw.rectangle(list(boxes[i]), outline=class_color(labels[i]), width=PRED_WIDTH)
    for i in order:
        k = int(labels[i])
        name = class_names[k - 1] if 1 <= k <= len(class_names) else str(k)
        _tag(draw, font, boxes[i], f"{name} {scores[i]:.2f}", class_color(k), w)
    return np.array(pil)  # writable (np.asarray of a PIL image is read-only)


def _clip(boxes, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """``(integer pixel boxes [N, 4] inside the image, bool[N] drawable)``; PIL corners are inclusive."""
    b = _np(boxes if boxes is not None else np.zeros((0, 4)), np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        ok = (np.isfinite(b).all(1) & (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
              & (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < w) & (b[:, 1] < h))
    b = np.where(np.isfinite(b), b, 0.0)
    x1, y1 = np.clip(np.floor(b[:, 0]), 0, w - 1), np.clip(np.floor(b[:, 1]), 0, h - 1)
    # x2 is the exclusive edge in pixel coordinates: the last covered pixel is ceil(x2) - 1.
    x2, y2 = np.clip(np.ceil(b[:, 2]) - 1, x1, w - 1), np.clip(np.ceil(b[:, 3]) - 1, y1, h - 1)
    return np.stack([x1, y1, x2, y2], 1).astype(np.int64), ok


def _dashed_rectangle(draw, box, color, dash: int = 4, gap: int = 3) -> None:
    x1, y1, x2, y2 = (int(v) for v in box)
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False)):
        for s in range(a, b + 1, dash + gap):
            e = min(s + dash - 1, b)
            draw.line([(s, fixed), (e, fixed)] if horizontal else [(fixed, s), (fixed, e)], fill=color, width=1)


def _text_color(rgb) -> tuple[int, int, int]:
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else (255, 255, 255)


def _tag(draw, font, box, text: str, color, w: int) -> None:
    """``text`` on a ``color`` plate above the box (inside it when the box touches the top edge)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 2
    x = max(0, min(int(box[0]), w - tw))
    y = int(box[1]) - th if int(box[1]) >= th else int(box[1])
    draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=color)
    draw.text((x + 2 - left, y + 1 - top), text, fill=_text_color(color), font=font)


@functools.lru_cache(maxsize=1)
def _font():

    # Bundled with Pillow: the same glyphs on every machine. Size 12: at the default 10 a space is
    # about 1 px wide and "traffic sign 0.61" reads as "trafficsign0.61".
    return ImageFont.load_default(size=12)


def legend_strip(width: int, classes: tuple[str, ...] | list[str], labels: list[int] = ()) -> np.ndarray:
    """``uint8[h, width, 3]``: how to read the drawings (:data:`LEGEND_ITEMS`) and the colour of each
    class in ``labels`` (1..C), flowed over as many lines as ``width`` needs."""

    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(probe.textbbox((0, 0), "Ag|", font=font)[3], 8) + 4
    items = [(text, None) for text in LEGEND_ITEMS]
    items += [(classes[k - 1] if 1 <= k <= len(classes) else str(k), class_color(k)) for k in labels]
    gap, swatch = 12, line_h - 6
    placed, x, row = [], 4, 0
    for text, color in items:
        iw = probe.textlength(text, font=font) + (swatch + 3 if color else 0)
        if x > 4 and x + iw > width - 4:
            x, row = 4, row + 1
        placed.append((x, row, text, color))
        x += int(iw) + gap
    strip = Image.new("RGB", (max(1, width), line_h * (row + 1) + 2), _LEGEND_BG)
    draw = ImageDraw.Draw(strip)
    for x, row, text, color in placed:
        y = 2 + row * line_h
        if color is not None:
            draw.rectangle([x, y + 2, x + swatch - 1, y + 1 + swatch], fill=color)
            x += swatch + 3
        draw.text((x, y + 1), text, fill=(235, 235, 235), font=font)
    return np.array(strip)


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
