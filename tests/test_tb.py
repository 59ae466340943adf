"""alod.tb: validation images with ground truth and predictions, as one grid in TensorBoard.

Read back with TensorBoard's own reader (EventAccumulator), as a user's TensorBoard would.
Real datasets (COCO, a user's own photos) mix portrait and landscape frames of many sizes; a plain
``make_grid`` of such images raises, which used to kill a run at the end of cycle 1.
:func:`alod.tb.draw_detections` is tested on pixels: a missed ground-truth box must stay visible.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from alod.tb import GT_WIDTH, IGNORE_GREY, PRED_WIDTH, RunLogger, class_color, draw_detections, legend_strip

CLASSES = ("car", "person")
CAR, PERSON = np.array(class_color(1)), np.array(class_color(2))


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


def _without_legend(grid):
    """The grid below the legend strip: make_grid's padding starts with the first all-black row."""
    top = int(np.flatnonzero(grid.max(axis=(1, 2)) == 0)[0])
    assert top > 0  # there is a legend
    return grid[top:]


def _is(pixels, color):
    return np.abs(pixels.astype(int) - np.asarray(color)).sum(-1) == 0


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
    grid = _without_legend(grids[1])
    cell_h, cell_w = 80, 80  # the largest height and the largest width; nothing is scaled below max_side
    assert grid.shape == (2 + 2 * (cell_h + 2), 2 + 4 * (cell_w + 2), 3)  # 4 per row, 2 rows
    cells = _cells(grid, 5, cell_h, cell_w)
    has_box = [bool((_is(c, CAR) | _is(c, PERSON)).any()) for c in cells]
    assert has_box == [True, False, True, False, True]
    for (h, w), cell in zip(sizes, cells):
        # Letterboxed, not stretched: the image keeps its size, centred on the (black) padding.
        ys, xs = np.nonzero(cell.max(-1) > 0)
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (h, w)
        assert ys.min() == (cell_h - h) // 2 and xs.min() == (cell_w - w) // 2


def test_large_images_are_scaled_to_max_side_keeping_aspect(tmp_path):
    images = [_solid(300, 1200, 0.5), _solid(900, 450, 0.5)]
    dets = [_det([[600, 150, 1200, 300]], [0.9], [1]), _det([[0, 0, 450, 900]], [0.9], [2])]
    grids = _log(tmp_path, images, dets, max_side=200)
    grid = _without_legend(grids[1])
    # 1200x300 -> 200x50, 450x900 -> 100x200: cells of 200 (h) x 200 (w), one row of two.
    assert grid.shape == (2 + 200 + 2, 2 + 2 * (200 + 2), 3)
    first = _cells(grid, 2, 200, 200)[0]
    ys, xs = np.nonzero(_is(first, CAR))
    # The box (the lower right quarter of the 200x50 image, centred at y 75) is scaled with the image:
    # x 100..199, y 100..124 in the cell; its "car 0.90" tag sits on top of it, within the image.
    assert xs.min() == 100 and xs.max() == 199 and 75 <= ys.min() < 100 and ys.max() == 124
    assert _is(first[100:125, 199], CAR).all() and _is(first[124, 100:200], CAR).all()


def test_grayscale_float_images_and_out_of_frame_boxes(tmp_path):
    images = [torch.rand(1, 40, 50), torch.rand(40, 30)]  # [1, H, W] and [H, W]
    dets = [_det([[-10, -5, 70, 20]], [0.9], [1]), _det([[5, 5, 4, 30], [np.nan, 0, 5, 5]], [0.9, 0.9], [1, 2])]
    grids = _log(tmp_path, images, dets)
    assert _without_legend(grids[1]).shape == (2 + 40 + 2, 2 + 2 * (50 + 2), 3)


def test_nothing_to_draw_logs_nothing(tmp_path):
    assert _log(tmp_path, [], []) == {}


def test_letterbox_images_shapes():
    from alod.tb import letterbox_images

    out = letterbox_images([torch.zeros(3, 10, 20, dtype=torch.uint8), torch.zeros(3, 30, 5, dtype=torch.uint8)])
    assert [tuple(x.shape) for x in out] == [(3, 30, 20), (3, 30, 20)]
    with pytest.raises(ValueError):
        letterbox_images([torch.zeros(3, 10, 20, dtype=torch.uint8)], fill=300)


# ----------------------------------------------------------------------------- draw_detections
BG = (128, 128, 128)


def _canvas(h=100, w=160):
    return np.full((h, w, 3), BG, dtype=np.uint8)


def test_ground_truth_thin_and_prediction_thick_in_their_class_colours():
    image = _canvas()
    out = draw_detections(image, gt_boxes=np.array([[10.0, 10, 50, 60]]), gt_labels=np.array([1]),
                          boxes=np.array([[70.0, 40, 150, 90]]), labels=np.array([2]), scores=np.array([0.9]),
                          class_names=CLASSES, score_threshold=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (image == BG).all()  # the input is not drawn on
    assert not np.array_equal(CAR, PERSON)
    # Ground truth: a 1 px car-coloured outline on pixels 10..49 x 10..59.
    assert GT_WIDTH == 1
    assert _is(out[10:60, 10], CAR).all() and _is(out[10:60, 49], CAR).all() and _is(out[59, 10:50], CAR).all()
    assert _is(out[20:50, 11], BG).all()
    # Prediction: a 3 px person-coloured outline on pixels 70..149 x 40..89 (lines grow inwards) ...
    assert PRED_WIDTH == 3
    assert _is(out[60:90, 70:73], PERSON).all() and _is(out[87:90, 70:150], PERSON).all()
    assert _is(out[60:87, 73], BG).all()
    # ... with its "person 0.90" tag on a person-coloured plate above the box: plate and text pixels.
    tag = out[:40, 70:150]
    assert _is(tag, PERSON).sum() > 100 and (~_is(tag, PERSON) & ~_is(tag, BG)).sum() > 20
    # No car-coloured pixel near the prediction, no person-coloured one near the ground truth.
    assert not _is(out[:, 60:], CAR).any() and not _is(out[:, :60], PERSON).any()
    # Deterministic.
    again = draw_detections(image, gt_boxes=np.array([[10.0, 10, 50, 60]]), gt_labels=np.array([1]),
                            boxes=np.array([[70.0, 40, 150, 90]]), labels=np.array([2]), scores=np.array([0.9]),
                            class_names=CLASSES, score_threshold=0.5)
    assert np.array_equal(out, again)


@pytest.mark.parametrize("preds", [
    {},                                                                        # none given
    {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)},  # zero boxes
    {"boxes": np.array([[10.0, 10, 50, 60]]), "labels": np.array([1]), "scores": np.array([0.2])},  # below threshold
])
def test_a_missed_ground_truth_box_stays_visible(preds):
    out = draw_detections(_canvas(), gt_boxes=np.array([[10.0, 10, 50, 60]]), gt_labels=np.array([1]),
                          class_names=CLASSES, score_threshold=0.5, **preds)
    assert _is(out[10:60, 10], CAR).all() and _is(out[10:60, 49], CAR).all()
    assert _is(out[20:50, 11:49], BG).all()  # thin only: no (thick) prediction, no tag
    assert (~_is(out, CAR) & ~_is(out, BG)).sum() == 0


def test_scores_below_threshold_are_not_drawn():
    box = {"boxes": np.array([[70.0, 40, 150, 90]]), "labels": np.array([2]), "scores": np.array([0.3])}
    assert (draw_detections(_canvas(), **box, class_names=CLASSES, score_threshold=0.5) == BG).all()
    assert _is(draw_detections(_canvas(), **box, class_names=CLASSES, score_threshold=0.3), PERSON).any()
    nan = {**box, "scores": np.array([np.nan])}
    assert (draw_detections(_canvas(), **nan, class_names=CLASSES, score_threshold=0.0) == BG).all()


def test_boxes_outside_the_image_are_clipped_or_skipped():
    h, w = 50, 160
    out = draw_detections(_canvas(h, w), gt_boxes=np.array([[-20.0, -10, 40, 30]]), gt_labels=np.array([1]),
                          boxes=np.array([[60.0, 20, 400, 300]]), labels=np.array([2]), scores=np.array([0.9]),
                          class_names=CLASSES, score_threshold=0.5)
    assert _is(out[:30, 0], CAR).all() and _is(out[0, :40], CAR).all() and _is(out[29, :40], CAR).all()
    assert _is(out[20:h, w - 3:w], PERSON).all() and _is(out[h - 3:h, 60:w], PERSON).all()
    # Wholly outside, inverted, non-finite: nothing drawn, nothing raised.
    bad = np.array([[100.0, 100, 150, 150], [-30, -30, -1, -1], [-30, 10, 0, 20], [40, 10, 20, 30],
                    [np.nan, 0, 5, 5], [0, 0, np.inf, 5]])
    out = draw_detections(_canvas(h, w), gt_boxes=bad, gt_labels=np.ones(6, int), boxes=bad,
                          labels=np.full(6, 2), scores=np.full(6, 0.9), class_names=CLASSES, score_threshold=0.5)
    assert (out == BG).all()


def test_nothing_to_draw_returns_a_copy_of_the_image():
    image = _canvas(7, 5)
    out = draw_detections(image, class_names=CLASSES)
    assert np.array_equal(out, image) and out is not image and out.flags.writeable
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(image.astype(np.float32), class_names=CLASSES)


def test_ignored_regions_are_grey_and_dashed():
    out = draw_detections(_canvas(), gt_boxes=np.array([[10.0, 10, 90, 60], [100, 10, 140, 60]]),
                          gt_labels=np.array([1, 1]), gt_ignore=np.array([True, False]), class_names=CLASSES)
    top = out[10, 10:90]
    assert 0.4 < _is(top, IGNORE_GREY).mean() < 0.8 and _is(top, BG).any()
    assert not _is(out[:, :95], CAR).any() and _is(out[10:60, 100], CAR).all()


def test_many_classes_cycle_through_the_palette():
    from alod.tb import OKABE_ITO

    assert [class_color(k) for k in range(1, 8)] == list(OKABE_ITO) and len(set(OKABE_ITO)) == 7
    assert class_color(8) == class_color(1) and class_color(0) == class_color(7)


def test_legend_lists_the_drawn_classes_and_wraps():
    wide, narrow = legend_strip(1000, CLASSES, [1, 2]), legend_strip(120, CLASSES, [1, 2])
    assert wide.dtype == np.uint8 and wide.shape[1] == 1000 and narrow.shape[1] == 120
    assert narrow.shape[0] > wide.shape[0]  # more lines, none cut off
    assert _is(wide, CAR).any() and _is(wide, PERSON).any()
    assert not _is(legend_strip(1000, CLASSES, [1]), PERSON).any()


def test_logged_grid_shows_ground_truth_without_predictions(tmp_path):
    """End to end through TensorBoard: the image with no detection still shows its (missed) car."""
    images = [_solid(60, 80, 0.5), _solid(60, 80, 0.5)]
    dets = [_det(), _det([[40, 30, 75, 55]], [0.9], [2])]
    targets = [{"boxes": np.array([[10.0, 10, 50, 40]]), "labels": np.array([1]), "ignore": np.array([False])},
               {"boxes": torch.tensor([[40.0, 30, 75, 55]]), "labels": torch.tensor([2])}]
    grids = _log(tmp_path, images, dets, targets=targets)
    legend_h = grids[1].shape[0] - _without_legend(grids[1]).shape[0]
    assert _is(grids[1][:legend_h], CAR).any() and _is(grids[1][:legend_h], PERSON).any()
    first, second = _cells(_without_legend(grids[1]), 2, 60, 80)
    assert _is(first[10:40, 10], CAR).all() and not _is(first, PERSON).any()
    assert _is(second[35:55, 74], PERSON).all() and not _is(second, CAR).any()
