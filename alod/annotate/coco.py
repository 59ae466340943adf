"""COCO instances JSON (2017): a cycle's images with pre-annotations out, a COCO file back in.

Export (``out_dir``)::

    annotations.json   {"info", "licenses": [], "images", "categories", "annotations"}
    images/<name>      the images, copied or symlinked, under their dataset names (subfolders kept)

* ``images``: ``{"id": 1.., "file_name": <dataset name>, "width", "height"}``, in the order the
  images should be labeled (the export task's order).
* ``categories``: ``{"id": k, "name": classes[k-1], "supercategory": ""}`` for ``k = 1..C``. The
  supercategory is empty because some tools (CVAT through Datumaro) read a non-empty one as a parent
  label.
* ``annotations``: the model's detections as pre-annotations, ``{"id", "image_id", "category_id",
  "bbox": [x, y, w, h], "area": w*h, "iscrowd": 0, "segmentation": [], "score"}`` in pixels.
  ``score`` (the detection's confidence) is not part of COCO's ground-truth format: pycocotools and
  the tools we know ignore it in an instances file and drop it when they write one. The empty
  ``segmentation`` is what CVAT itself writes for a box.

Import (``read``): a COCO instances JSON file, or a folder holding ``annotations.json``.

* Categories are resolved by **name** through the file's own ``categories`` (tools renumber ids);
  a name that is not one of the dataset's classes (exact, case-sensitive) is ``unknown_category``,
  and so is a ``category_id`` the file does not define.
* ``bbox`` ``[x, y, w, h]`` (pixels) gives the corners ``x, y, x + w, y + h``; ``w`` or ``h`` not
  positive is ``degenerate_box``. An annotation with a polygon or mask **and** a ``bbox`` is imported
  as its ``bbox`` (the bbox is COCO's detection ground truth); one with no ``bbox`` (segmentation or
  keypoints only) is ``not_a_box``.
* ``iscrowd: 1`` marks a region covering a group of objects. alod's labels have no "ignore" flag,
  and training on a crowd box as if it were one object would teach the wrong thing, so a crowd
  region is **skipped** and reported as ``not_a_box``.
* Images are matched by ``file_name``: the exact dataset name, else the exported image with that
  file name whose folders agree best with it (``images/sub/a.jpg``, or a tool that kept only
  ``a.jpg``; see :class:`alod.annotate.files.NameMatcher`). An absolute ``file_name`` or one with
  ``..`` is ``unsafe_image_name``; a name matching no exported image, or an image record whose
  ``width``/``height`` differ from the exported image's (another picture, or one the tool rotated or
  resized) is ``image_not_asked_for``; either way the record and its annotations are skipped.
* An image record with no annotations means "annotated, and empty". COCO has no "reviewed" flag:
  importing the exported ``annotations.json`` unchanged accepts every pre-annotation as a label.
  Exported images with no record are ``image_missing``.
* A file that is not a JSON object with ``images``, ``annotations`` and ``categories`` lists raises
  :class:`~alod.utils.AlodError` naming the file; a malformed record inside one is reported
  (``not_this_format``) and skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

from alod.annotate.core import AnnotationFormat, ExportTask, ImportBuilder, ImportResult
from alod.annotate.files import (NameMatcher, export_rows, is_id, is_number, is_safe_relative, place_images,
                                 read_json, ref_segments)
from alod.utils import AlodError, atomic_write_bytes

NAME = "coco"
VERSION = "COCO instances JSON (2017)"
#: The file an export writes (and ``read`` looks for in a folder).
ANNOTATIONS_FILE = "annotations.json"
_EXPECTED = "a COCO instances JSON file (an object with 'images', 'annotations' and 'categories' lists)"


def export(task: ExportTask, out_dir: str | Path, *, copy_images: bool = True) -> list[Path]:
    """Write ``out_dir/annotations.json`` and the images under ``out_dir/images/``.

    Pre-annotations (``ExportImage.boxes`` ``float64[N, 4]`` x1, y1, x2, y2 pixels) become
    ``bbox`` ``[x, y, w, h]`` after clipping to the image. Returns ``[annotations.json]``.
    """
    out_dir = Path(out_dir)
    rows = export_rows(task)
    images, annotations = [], []
    for image_id, row in enumerate(rows, 1):
        im = row.image
        images.append({"id": image_id, "file_name": im.name, "width": int(im.width), "height": int(im.height)})
        for j, (box, label) in enumerate(zip(row.boxes.tolist(), row.labels.tolist(), strict=True)):
            w, h = box[2] - box[0], box[3] - box[1]
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                   "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0, "segmentation": []}
            if row.scores is not None:
                ann["score"] = float(row.scores[j])
            annotations.append(ann)
    doc = {
        "info": {"description": f"alod run {task.run!r}, cycle {task.cycle}: images to label; the annotations "
                                "are the model's detections (pre-annotations, with their 'score')"},
        "licenses": [],
        "images": images,
        "categories": [{"id": k, "name": c, "supercategory": ""} for k, c in enumerate(task.classes, 1)],
        "annotations": annotations,
    }
    place_images(task, out_dir, copy_images=copy_images)
    target = out_dir / ANNOTATIONS_FILE
    atomic_write_bytes(target, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    return [target]


def _file_of(path: Path) -> Path:
    if path.is_dir():
        if not (path / ANNOTATIONS_FILE).is_file():
            raise AlodError(f"{path}: a folder without {ANNOTATIONS_FILE}; pass the COCO JSON file itself")
        return path / ANNOTATIONS_FILE
    return path


def read(path: str | Path, task: ExportTask) -> ImportResult:
    """Read a COCO instances JSON file (or a folder with ``annotations.json``) against ``task``:
    its categories, its image records (matched to the exported images), then its boxes."""
    path = _file_of(Path(path))
    doc = read_json(path, _EXPECTED)
    if not isinstance(doc, dict):
        raise AlodError(f"{path}: a JSON {type(doc).__name__}, not an object; expected {_EXPECTED}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise AlodError(f"{path}: no {key!r} list; expected {_EXPECTED} "
                            "(an image with no objects still has an image record)")
    b = ImportBuilder(task, path, NAME)
    category = _categories(doc["categories"], b)
    name_of, record_ids = _images(doc["images"], task, b)
    for i, ann in enumerate(doc["annotations"]):
        _add_annotation(i, ann, b, category=category, name_of=name_of, record_ids=record_ids)
    return b.finish()


def _categories(categories: list, b: ImportBuilder) -> dict:
    """category id -> name (the first name of an id wins; bad records reported)."""
    category = {}
    for i, c in enumerate(categories):
        if not (isinstance(c, dict) and is_id(c.get("id")) and isinstance(c.get("name"), str)):
            b.problem(f"categories[{i}]", "not_this_format",
                      "a category needs an integer 'id' and a string 'name'; skipped")
        elif c["id"] in category and category[c["id"]] != c["name"]:
            b.problem(f"category {c['id']}", "not_this_format",
                      f"id {c['id']} names both {category[c['id']]!r} and {c['name']!r}; the first is used")
        else:
            category.setdefault(c["id"], c["name"])
    return category


def _images(records: list, task: ExportTask, b: ImportBuilder) -> tuple[dict, set]:
    """``(name_of, record_ids)``: the file's image id -> exported name for accepted records, and
    every image id the file defines (problems reported, images opened in ``b``)."""
    sizes = {im.name: (int(im.width), int(im.height)) for im in task.images}
    matcher = NameMatcher(sizes)
    name_of, record_ids = {}, set()
    for i, rec in enumerate(records):
        if not (isinstance(rec, dict) and is_id(rec.get("id")) and isinstance(rec.get("file_name"), str)):
            b.problem(f"images[{i}]", "not_this_format", "an image needs an 'id' and a string 'file_name'; skipped")
            continue
        file_name, where = rec["file_name"], f"image {rec['id']} ({rec['file_name']!r})"
        if rec["id"] in record_ids:
            b.problem(where, "not_this_format", f"image id {rec['id']!r} is used by an earlier image record; "
                      "this one is skipped")
            continue
        record_ids.add(rec["id"])
        if not is_safe_relative(file_name):
            b.problem(where, "unsafe_image_name", f"file_name {file_name!r} is absolute or leaves the image "
                      "folder; skipped")
            continue
        name, why = matcher.match(ref_segments(file_name))
        if name is None:
            b.problem(where, "image_not_asked_for", f"{file_name!r}: {why}; skipped")
            continue
        w, h = rec.get("width"), rec.get("height")
        if is_number(w) and is_number(h) and (w, h) != sizes[name]:
            b.problem(where, "image_not_asked_for",
                      f"the file's image is {w}x{h} but the exported {name!r} is {sizes[name][0]}x{sizes[name][1]} "
                      "(another picture, or rotated or resized by the tool); skipped")
            continue
        if b.image(name, where):
            name_of[rec["id"]] = name
    return name_of, record_ids


def _add_annotation(i: int, ann, b: ImportBuilder, *, category: dict, name_of: dict, record_ids: set) -> None:
    """Add annotation ``i``'s box (``bbox`` ``[x, y, w, h]`` px) to ``b``, or report why not."""
    if not isinstance(ann, dict):
        b.problem(f"annotations[{i}]", "not_this_format", "not an object; skipped")
        return
    where = f"annotation {ann['id']}" if is_id(ann.get("id")) else f"annotations[{i}]"
    image_id = ann.get("image_id")
    if not (is_id(image_id) and image_id in name_of):
        if not (is_id(image_id) and image_id in record_ids):  # else its image was reported already
            b.problem(where, "image_not_asked_for", f"image_id {image_id!r} is not one of the file's images; skipped")
        return
    name = name_of[image_id]
    where = f"{where} (image {name!r})"
    if ann.get("iscrowd", 0) not in (0, False, None):
        b.problem(where, "not_a_box", "a crowd region (iscrowd: 1) covers a group of objects; alod labels are "
                  "single objects, so it is skipped")
        return
    bbox = ann.get("bbox")
    if bbox is None or bbox == []:
        b.problem(where, "not_a_box", "no 'bbox' (a segmentation or keypoints only annotation); skipped")
        return
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        b.problem(where, "degenerate_box", f"bbox must be [x, y, width, height] numbers, got {bbox!r}; skipped")
        return
    category_id = ann.get("category_id")
    cname = category.get(category_id) if is_id(category_id) else None
    if cname is None:
        b.problem(where, "unknown_category", f"category_id {category_id!r} is not defined in the file's categories; "
                  "skipped")
        return
    x, y, w, h = bbox
    if not (w > 0 and h > 0):
        b.problem(where, "degenerate_box", f"bbox {bbox} has a width or height that is not positive; skipped")
        return
    b.box(name, where, cname, x, y, x + w, y + h)


def sniff(path: str | Path) -> bool:
    """A JSON object with ``images`` and ``annotations`` or ``categories`` (or a folder with
    ``annotations.json`` that is one)."""
    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATIONS_FILE
    if not path.is_file():
        return False
    try:
        doc = read_json(path, _EXPECTED)
    except AlodError:
        return False
    return isinstance(doc, dict) and "images" in doc and ("annotations" in doc or "categories" in doc)


FORMAT = AnnotationFormat(name=NAME, export=export, read=read, sniff=sniff, version=VERSION)
