"""alod.data.problems and the shared checks: image-name confinement, box bounds, image files."""
from __future__ import annotations

import os
import shutil

import pytest

from alod.data.common import box_slack, check_box
from alod.data.problems import (
    BOX_CLIPPED,
    BOX_OUTSIDE_IMAGE,
    INVERTED_BOX,
    KINDS,
    NON_FINITE,
    NOTE_KINDS,
    check_image_file,
    confine_image_name,
    decode_check,
    image_name_problem,
)

# ----------------------------------------------------------------------------- image names
HOSTILE_NAMES = {
    "/etc/passwd": "absolute path",
    "//etc/passwd": "absolute path",
    "../../etc/passwd": "'..' component",
    "..": "'..' component",
    "a/../../b.jpg": "'..' component",
    "a/..": "'..' component",
    "": "empty",
    ".": "the image folder itself",
    "./": "the image folder itself",
    "a\x00.jpg": "NUL byte",
    "C:\\Windows\\win.ini": "backslash",
    "C:/Windows/win.ini": "drive letter",
    "c:win.ini": "drive letter",
    "\\\\server\\share\\x.jpg": "backslash",
    "..\\..\\etc\\passwd": "backslash",
    "a\udc80\ud800.jpg": "cannot be encoded",
}
GOOD_NAMES = ["b1c66a42-6f7d68ca.jpg", "sub/dir/x.jpg", "./x.jpg", "a//b.jpg", "...jpg", "...", "a..b.jpg",
              "ünïcödé 画像.jpg", "with space.png", "-rf.jpg", "~/x.jpg", "ab:c.jpg"]


@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
def test_hostile_names_are_refused(tmp_path, name):
    why = image_name_problem(name)
    assert why is not None and HOSTILE_NAMES[name] in why
    path, why2 = confine_image_name(tmp_path, name)
    assert path is None and why2 == why


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_plain_relative_names_are_accepted(tmp_path, name):
    assert image_name_problem(name) is None
    path, why = confine_image_name(tmp_path, name)
    assert why is None and path == tmp_path / name
    assert os.path.commonpath([tmp_path, os.path.normpath(path)]) == str(tmp_path)


def test_non_string_name_is_refused(tmp_path):
    assert confine_image_name(tmp_path, 5)[0] is None


@pytest.fixture
def linked_root(tmp_path, shared_data):
    """An image folder holding a symlink to a real frame outside it, and a symlinked sub-folder."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    real = sorted((shared_data / "bdd100k_val50" / "images").iterdir())[0]
    shutil.copyfile(real, outside / "frame.jpg")
    root = tmp_path / "images"
    root.mkdir()
    os.symlink(outside / "frame.jpg", root / "link.jpg")
    os.symlink(outside, root / "linked_dir")
    (root / "own.jpg").write_bytes((outside / "frame.jpg").read_bytes())
    return root


def test_symlinks_inside_the_root_are_followed_by_default(linked_root):
    for name in ("link.jpg", "linked_dir/frame.jpg", "own.jpg"):
        path, why = confine_image_name(linked_root, name)
        assert why is None and path.is_file()
        assert check_image_file(path, verify=True) is None


def test_follow_symlinks_false_confines_the_resolved_path(linked_root):
    for name in ("link.jpg", "linked_dir/frame.jpg"):
        path, why = confine_image_name(linked_root, name, follow_symlinks=False)
        assert path is None and "outside the image folder" in why and "elsewhere" in why
    path, why = confine_image_name(linked_root, "own.jpg", follow_symlinks=False)
    assert why is None and path == linked_root / "own.jpg"


def test_every_kind_has_words_and_an_action():
    assert NOTE_KINDS <= set(KINDS)
    for kind, (what, action) in KINDS.items():
        assert what and action, kind


# ----------------------------------------------------------------------------- box bounds
def test_box_slack_is_2px_or_1_percent():
    assert box_slack(1280) == pytest.approx(12.8) and box_slack(720) == pytest.approx(7.2)
    assert box_slack(100) == 2.0 and box_slack(0) == 2.0


@pytest.mark.parametrize("box,kind,kept", [
    ((0, 0, 1280, 720), None, (0, 0, 1280, 720)),                # the whole frame
    ((10.5, 20.25, 30, 40), None, (10.5, 20.25, 30, 40)),
    ((-5, 0, 10, 10), BOX_CLIPPED, (0, 0, 10, 10)),
    ((1200, 700, 1290, 727), BOX_CLIPPED, (1200, 700, 1280, 720)),
    ((-12.8, -7.2, 1292.8, 727.2), BOX_CLIPPED, (0, 0, 1280, 720)),  # exactly at the tolerance
    ((-12.9, 0, 10, 10), BOX_OUTSIDE_IMAGE, None),
    ((0, 0, 1e30, 10), BOX_OUTSIDE_IMAGE, None),
    ((2000, 0, 2100, 10), BOX_OUTSIDE_IMAGE, None),               # wholly outside
    ((0, 0, 10, 800), BOX_OUTSIDE_IMAGE, None),
    ((0, 0, float("nan"), 10), NON_FINITE, None),
    ((0, 0, float("inf"), 10), NON_FINITE, None),
    ((0, 0, 10**400, 10), NON_FINITE, None),
    ((10, 0, 5, 10), INVERTED_BOX, None),
])
def test_check_box(box, kind, kept):
    got_kind, detail, got = check_box(*box, 1280, 720)
    assert got_kind == kind and (kind is None) == (detail == "")
    assert got == (None if kept is None else tuple(float(v) for v in kept))
    if kind == BOX_OUTSIDE_IMAGE:
        assert "1280x720" in detail


# ----------------------------------------------------------------------------- image files
@pytest.fixture
def jpeg(shared_data):
    return sorted((shared_data / "bdd100k_val50" / "images").iterdir())[0].read_bytes()


def test_decode_check_catches_a_truncated_jpeg_that_pil_verify_passes(tmp_path, jpeg):
    from PIL import Image

    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[: len(jpeg) // 2])
    with Image.open(path) as im:
        im.verify()  # the header is intact: verify() alone would let it through
    why = decode_check(path)
    assert why is not None and "truncated" in why and str(path) in why
    assert check_image_file(path) is None  # without verify: only stat
    assert check_image_file(path, verify=True) == ("unreadable_image", why)


def test_decode_check_accepts_good_images_and_refuses_non_images(tmp_path, jpeg, shared_data):
    (tmp_path / "ok.jpg").write_bytes(jpeg)
    assert decode_check(tmp_path / "ok.jpg") is None
    png = sorted((shared_data / "coco128" / "images" / "val2017").iterdir())[0]
    assert decode_check(png) is None
    (tmp_path / "text.jpg").write_text("not an image")
    assert "does not decode" in decode_check(tmp_path / "text.jpg")


def test_check_image_file_refuses_folders_and_special_files(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    kind, detail = check_image_file(tmp_path / "dir.jpg")
    assert kind == "unreadable_image" and "a folder" in detail
    os.mkfifo(tmp_path / "fifo.jpg")  # opening it would block forever
    kind, detail = check_image_file(tmp_path / "fifo.jpg", verify=True)
    assert kind == "unreadable_image" and "not a regular file" in detail
    assert check_image_file(tmp_path / "nope.jpg")[0] == "missing_image"
