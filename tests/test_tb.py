"""alod.tb.RunLogger: validation images of any mix of sizes become one grid in TensorBoard.

Read back with TensorBoard's own reader (EventAccumulator), as a user's TensorBoard would.
Real datasets (COCO, a user's own photos) mix portrait and landscape frames of many sizes; a plain
``make_grid`` of such images raises, which used to kill a run at the end of cycle 1.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from alod.tb import RunLogger

CLASSES = ("car", "person")
MAGENTA = np.array([255, 0, 255])


def _images(tb_dir, tag="val_predictions"):
    """``{step: uint8[H, W, 3]}`` of ``tag`` in the event files under ``tb_dir``."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0})
    acc.Reload()
    if tag not in acc.Tags()["images"]:
        return {}
    out = {}
    for ev in acc.Images(tag):
        with Image.open(io.BytesIO(ev.encoded_image_string)) as im:
            arr = np.asarray(im.convert("RGB"))
        assert (ev.height, ev.width) == arr.shape[:2]
        out[ev.step] = arr
    return out


def _solid(h, w, value):
    return torch.full((3, h, w), float(value))


def _det(boxes=(), scores=(), labels=(), as_numpy=True):
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float32)
    lab = np.asarray(labels, dtype=np.int64)
    if as_numpy:
        return {"boxes": b, "scores": s, "labels": lab}
    return {"boxes": torch.from_numpy(b), "scores": torch.from_numpy(s), "labels": torch.from_numpy(lab)}


def _log(tmp_path, images, dets, **kw):
    logger = RunLogger(tmp_path / "tb")
    logger.images_with_boxes("val_predictions", images, dets, CLASSES, step=1, **kw)
    logger.close()
    return _images(tmp_path / "tb")


def _cells(grid, n, cell_h, cell_w, nrow=4, pad=2):
    """Cut a make_grid image back into its ``n`` cells."""
    cells = []
    for k in range(n):
        r, c = divmod(k, min(nrow, n))
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        cells.append(grid[y:y + cell_h, x:x + cell_w])
    return cells


def test_mixed_sizes_and_empty_detections_make_one_grid(tmp_path):
    """Landscape, portrait, square and a tiny image; boxes on some, none (or only low scores) on others."""
    sizes = [(60, 80), (80, 60), (50, 50), (20, 30), (64, 48)]
    images = [_solid(h, w, 0.2 + 0.1 * i) for i, (h, w) in enumerate(sizes)]
    dets = [
        _det([[5, 5, 40, 30]], [0.9], [1]),                          # one confident box
        _det(),                                                      # no detection at all
        _det([[1, 1, 20, 20], [10, 10, 30, 40]], [0.3, 0.8], [2, 1], as_numpy=False),  # torch tensors
        _det([[2, 2, 10, 10]], [0.1], [2]),                          # only a box below the threshold
        _det([[0, 0, 48, 64]], [0.99], [2]),                         # a box on the whole image
    ]
    grids = _log(tmp_path, images, dets)
    assert list(grids) == [1]
    grid = grids[1]
    cell_h, cell_w = 80, 80  # the largest height and the largest width; nothing is scaled below max_side
    assert grid.shape == (2 + 2 * (cell_h + 2), 2 + 4 * (cell_w + 2), 3)  # 4 per row, 2 rows
    cells = _cells(grid, 5, cell_h, cell_w)
    has_box = [bool((np.abs(c.astype(int) - MAGENTA).sum(-1) == 0).any()) for c in cells]
    assert has_box == [True, False, True, False, True]
    for (h, w), img, cell in zip(sizes, images, cells):
        # Letterboxed, not stretched: the image keeps its size, centred on the padding colour.
        value = round(float(img[0, 0, 0]) * 255)
        inside = (np.abs(cell.astype(int) - value).max(-1) <= 1) | (np.abs(cell.astype(int) - MAGENTA).sum(-1) == 0)
        ys, xs = np.nonzero(inside)
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (h, w)
        assert ys.min() == (cell_h - h) // 2 and xs.min() == (cell_w - w) // 2


def test_large_images_are_scaled_to_max_side_keeping_aspect(tmp_path):
    images = [_solid(300, 1200, 0.5), _solid(900, 450, 0.5)]
    dets = [_det([[600, 150, 1200, 300]], [0.9], [1]), _det([[0, 0, 450, 900]], [0.9], [2])]
    grids = _log(tmp_path, images, dets, max_side=200)
    grid = grids[1]
    # 1200x300 -> 200x50, 450x900 -> 100x200: cells of 200 (h) x 200 (w), one row of two.
    assert grid.shape == (2 + 200 + 2, 2 + 2 * (200 + 2), 3)
    first = _cells(grid, 2, 200, 200)[0]
    magenta = np.abs(first.astype(int) - MAGENTA).sum(-1) == 0
    ys, xs = np.nonzero(magenta)
    # The box (the right half of the 200x50 image, centred at y 75) is scaled with the image: x 100..200,
    # y 100..125 in the cell (a few px of slack for the line and the label text).
    assert abs(xs.min() - 100) <= 3 and xs.max() <= 200 and abs(ys.min() - 100) <= 3 and ys.max() <= 125


def test_grayscale_float_images_and_out_of_frame_boxes(tmp_path):
    images = [torch.rand(1, 40, 50), torch.rand(40, 30)]  # [1, H, W] and [H, W]
    dets = [_det([[-10, -5, 70, 20]], [0.9], [1]), _det([[5, 5, 4, 30], [np.nan, 0, 5, 5]], [0.9, 0.9], [1, 2])]
    grids = _log(tmp_path, images, dets)
    assert grids[1].shape == (2 + 40 + 2, 2 + 2 * (50 + 2), 3)


def test_nothing_to_draw_logs_nothing(tmp_path):
    assert _log(tmp_path, [], []) == {}


def test_letterbox_images_shapes():
    from alod.tb import letterbox_images

    out = letterbox_images([torch.zeros(3, 10, 20, dtype=torch.uint8), torch.zeros(3, 30, 5, dtype=torch.uint8)])
    assert [tuple(x.shape) for x in out] == [(3, 30, 20), (3, 30, 20)]
    with pytest.raises(ValueError):
        letterbox_images([torch.zeros(3, 10, 20, dtype=torch.uint8)], fill=300)
