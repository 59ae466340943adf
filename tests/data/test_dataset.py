"""DetectionDataset, collate_detection and the named transform presets, on hand-made images whose
pixels and boxes are known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from alod.data.dataset import DetectionDataset, collate_detection
from alod.data.index import DetectionIndex
from alod.data.transforms import TRANSFORM_PRESETS, get_transform
from alod.utils import AlodError

CLASSES = ("car", "person")
W, H = 24, 16


@pytest.fixture
def index(tmp_path) -> DetectionIndex:
    """Image 0: RGB (255, 0, 51) everywhere; 5 boxes of which 2 are targets. Image 1: grey, no boxes.
    Image 2: white, one box."""
    Image.new("RGB", (W, H), (255, 0, 51)).save(tmp_path / "red.png")
    Image.new("L", (W, H), 0).save(tmp_path / "black.png")  # grey-scale file: must come out as 3 channels
    Image.new("RGB", (W, H), (255, 255, 255)).save(tmp_path / "white.png")
    return DetectionIndex.from_lists(
        image_root=tmp_path,
        names=["red.png", "black.png", "white.png"],
        widths=[W] * 3,
        heights=[H] * 3,
        boxes_per_image=[
            np.array([
                [1, 2, 10, 12],  # target
                [0, 0, 5, 5],  # ignored region: never a training target
                [3, 3, 3, 9],  # zero width
                [4, 6, 8, 6],  # zero height
                [12.5, 1.5, 20, 15],  # target
            ]),
            np.zeros((0, 4)),
            np.array([[2, 2, 6, 6]]),
        ],
        labels_per_image=[np.array([1, 2, 1, 2, 2]), np.zeros(0), np.array([1])],
        ignore_per_image=[np.array([False, True, False, False, False]), np.zeros(0, bool), np.array([False])],
        classes=CLASSES,
    )


# -------------------------------------------------------------------------------------- dataset
def test_image_is_float_chw_in_unit_range(index):
    ds = DetectionDataset(index)
    assert len(ds) == 3
    image, _ = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([1.0, 0.0, 51 / 255]))  # channel order R, G, B
    assert torch.all(image[0] == 1.0) and torch.all(image[1] == 0.0)
    grey, _ = ds[1]
    assert grey.shape == (3, H, W) and torch.all(grey == 0.0)
    white, _ = ds[2]
    assert torch.all(white == 1.0)


def test_target_keeps_only_trainable_boxes(index):
    _, target = DetectionDataset(index)[0]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.0, 2, 10, 12], [12.5, 1.5, 20, 15]]))
    assert target["labels"].tolist() == [1, 2]
    assert target["image_id"] == 0
    # The index itself still holds all five (evaluation needs the ignored regions).
    assert len(index.annotations(0)[0]) == 5


def test_image_without_boxes_has_empty_well_shaped_target(index):
    _, target = DetectionDataset(index)[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["image_id"] == 1


def test_targets_match_the_index_for_a_subset(index):
    sub = index.subset([2, 0])
    ds = DetectionDataset(sub)
    image, target = ds[0]
    assert torch.all(image == 1.0)  # white.png
    assert target["image_id"] == 0  # the position in *this* index
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 2, 6, 6]]))
    assert target["labels"].tolist() == [1]
    assert ds[1][1]["labels"].tolist() == [1, 2]


def test_transform_receives_image_and_target(index):
    calls = []

    def transform(image, target):
        calls.append((image.shape, target["image_id"]))
        return image * 0.5, {**target, "seen": True}

    image, target = DetectionDataset(index, transform=transform)[2]
    assert calls == [((3, H, W), 2)]
    assert torch.all(image == 0.5) and target["seen"] is True


def test_dataset_does_not_modify_the_index(index):
    before = index.boxes.copy()
    ds = DetectionDataset(index, transform=get_transform("hflip"))
    torch.manual_seed(0)
    for _ in range(4):
        _, target = ds[0]
        target["boxes"].add_(100.0)  # a consumer writing into the target must not reach the index
    np.testing.assert_array_equal(index.boxes, before)


def test_missing_image_is_alod_error_naming_it(index, tmp_path):
    (tmp_path / "white.png").unlink()
    with pytest.raises(AlodError, match="white.png"):
        DetectionDataset(index)[2]


def test_unreadable_image_is_alod_error(index, tmp_path):
    (tmp_path / "black.png").write_bytes(b"not a png at all")
    with pytest.raises(AlodError, match=r"black.png \(frame 1\) cannot be decoded.*data.strict: false"):
        DetectionDataset(index)[1]


def test_unreadable_image_is_skipped_when_asked(index, tmp_path):
    (tmp_path / "black.png").write_bytes(b"not a png at all")
    image, target = DetectionDataset(index, skip_unreadable=True)[1]
    assert image is None and target["image_id"] == 1 and "black.png" in target["unreadable"]
    images, targets = collate_detection([DetectionDataset(index, skip_unreadable=True)[i] for i in (0, 1)])
    assert images[0] is not None and images[1] is None and "unreadable" in targets[1]


# -------------------------------------------------------------------------------------- collate
def test_collate_detection_keeps_lists(index):
    ds = DetectionDataset(index)
    images, targets = collate_detection([ds[0], ds[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == 2
    assert torch.equal(images[0], ds[0][0]) and targets[1]["image_id"] == 1


def test_collate_with_dataloader_and_different_image_sizes(index, tmp_path):
    Image.new("RGB", (W + 8, H - 4), (0, 0, 0)).save(tmp_path / "white.png")  # now a different size
    loader = DataLoader(DetectionDataset(index), batch_size=2, collate_fn=collate_detection)
    batches = list(loader)
    assert [len(imgs) for imgs, _ in batches] == [2, 1]
    (last_images, last_targets) = batches[-1]
    assert last_images[0].shape == (3, H - 4, W + 8) and last_targets[0]["image_id"] == 2
    assert [t["image_id"] for _, ts in batches for t in ts] == [0, 1, 2]


# ----------------------------------------------------------------------------------- transforms
def _painted(boxes: list[list[int]]) -> tuple[torch.Tensor, dict]:
    """An image that is 1 exactly inside the integer ``boxes`` (x1, y1, x2, y2; x2, y2 exclusive)."""
    image = torch.zeros(3, H, W)
    for x1, y1, x2, y2 in boxes:
        image[:, y1:y2, x1:x2] = 1.0
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.ones(len(boxes), dtype=torch.int64), "image_id": 7}
    return image, target


def _box_of_ones(image: torch.Tensor) -> list[int]:
    ys, xs = torch.where(image[0] == 1.0)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_hflip_moves_boxes_with_the_pixels():
    flip = get_transform("hflip")
    box = [2, 3, 9, 11]
    image, target = _painted([box])
    torch.manual_seed(0)
    outcomes = set()
    for _ in range(24):
        out_image, out_target = flip(image, target)
        flipped = not torch.equal(out_image, image)
        outcomes.add(flipped)
        expected = [W - box[2], box[1], W - box[0], box[3]] if flipped else box
        if flipped:
            assert torch.equal(out_image, image.flip(-1))
        assert _box_of_ones(out_image) == expected
        assert out_target["boxes"].tolist() == [[float(v) for v in expected]]
        assert torch.equal(out_target["labels"], target["labels"]) and out_target["image_id"] == 7
    assert outcomes == {True, False}, "a random flip happens about half the time"
    # The caller's tensors are never modified.
    assert target["boxes"].tolist() == [[float(v) for v in box]] and _box_of_ones(image) == box


def test_hflip_keeps_boxes_valid_and_is_an_involution():
    from alod.data.transforms import _hflip

    image, target = _painted([[0, 0, 5, 4], [20, 10, 24, 16], [7, 2, 8, 3]])
    once_image, once = _hflip(image, target)
    b = once["boxes"]
    assert torch.all(b[:, 2] > b[:, 0]) and torch.all(b[:, 0] >= 0) and torch.all(b[:, 2] <= W)
    assert once["boxes"].tolist() == [[19.0, 0, 24, 4], [0.0, 10, 4, 16], [16.0, 2, 17, 3]]
    twice_image, twice = _hflip(once_image, once)
    assert torch.equal(twice_image, image) and torch.equal(twice["boxes"], target["boxes"])


def test_hflip_with_no_boxes():
    image, target = _painted([])
    torch.manual_seed(1)
    for _ in range(6):
        _, out = get_transform("hflip")(image, target)
        assert out["boxes"].shape == (0, 4)


def test_hflip_follows_torch_seed():
    image, target = _painted([[2, 3, 9, 11]])
    flip = get_transform("hflip")

    def decisions(seed):
        torch.manual_seed(seed)
        return [not torch.equal(flip(image, target)[0], image) for _ in range(16)]

    assert decisions(3) == decisions(3)
    assert decisions(3) != decisions(4)


def test_none_preset_is_no_transform():
    assert get_transform("none") is None


def test_registered_presets():
    assert {"none", "hflip"} <= set(TRANSFORM_PRESETS)


def test_unknown_preset_is_rejected_with_valid_names():
    with pytest.raises(AlodError) as e:
        get_transform("colour_jitter")
    assert "colour_jitter" in str(e.value)
    for name in TRANSFORM_PRESETS:
        assert name in str(e.value)


# ------------------------------------------------------------------------------- decoding
def _pil_rgb(data: bytes) -> torch.Tensor:
    import io

    from torchvision.transforms.functional import pil_to_tensor

    with Image.open(io.BytesIO(data)) as im:
        return pil_to_tensor(im.convert("RGB"))


def test_decode_rgb_equals_pil_on_real_jpegs(shared_data):
    """libjpeg-turbo through torchvision gives PIL's pixels exactly, colour and grey-scale frames alike."""
    from alod.data.dataset import decode_rgb

    files = sorted((shared_data / "bdd100k_val50").rglob("*.jpg"))[:10] + sorted((shared_data / "coco128").rglob("*.jpg"))
    assert len(files) > 20
    modes = set()
    for f in files:
        data = f.read_bytes()
        with Image.open(f) as im:
            modes.add(im.mode)
        assert torch.equal(decode_rgb(data), _pil_rgb(data)), f
    assert "RGB" in modes and "L" in modes  # both paths of libjpeg's colour conversion were compared


def test_decode_rgb_png_and_broken_jpeg(tmp_path):
    import io

    from alod.data.dataset import decode_rgb

    buf = io.BytesIO()
    Image.new("LA", (5, 4), (7, 200)).save(buf, format="PNG")
    assert decode_rgb(buf.getvalue()).shape == (3, 4, 5)
    assert decode_rgb(buf.getvalue())[:, 0, 0].tolist() == [7, 7, 7]
    jpg = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 240)).save(jpg, format="JPEG")
    with pytest.raises(OSError):  # libjpeg refuses the truncated file; PIL's error is the one raised
        decode_rgb(jpg.getvalue()[: len(jpg.getvalue()) // 2])


def test_truncated_jpeg_names_the_file(tmp_path):
    import io

    jpg = io.BytesIO()
    Image.new("RGB", (W, H), (10, 120, 240)).save(jpg, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpg.getvalue()[:60])
    idx = DetectionIndex.from_lists(image_root=tmp_path, names=["cut.jpg"], widths=[W], heights=[H],
                                    boxes_per_image=[np.zeros((0, 4))], labels_per_image=[np.zeros(0, int)],
                                    classes=CLASSES)
    with pytest.raises(AlodError, match="cut.jpg.*cannot be decoded"):
        DetectionDataset(idx)[0]
    image, target = DetectionDataset(idx, skip_unreadable=True)[0]
    assert image is None and "cannot be decoded" in target["unreadable"]
