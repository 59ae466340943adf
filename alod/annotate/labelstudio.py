"""Label Studio (1.x) JSON: a cycle's images as tasks with predictions out, a JSON export back in.

Export (``out_dir``)::

    tasks.json         the tasks to import into a project (one per image, in labeling order)
    label_config.xml   the labeling interface (paste it under Settings > Labeling Interface > Code)
    README.txt         the steps below, with this export's paths
    images/<name>      the images, copied or symlinked, under their dataset names

Each task is ``{"data": {"image": <URL>, "alod_name": <dataset name>, "alod_priority": <score>},
"meta": {"alod_name", "run", "cycle", "priority", "width", "height"}, "predictions": [{"model_version":
"alod-cycle-N", "score": ..., "result": [...]}]}``. Every result is a ``rectanglelabels`` region
(``from_name`` ``label``, ``to_name`` ``image``) with ``x, y, width, height`` in **percent** of the
image's width and height, ``rotation`` 0, one class name and the detection's ``score``.

* **Priority.** Label Studio sorts tasks by the prediction ``score`` ("Prediction score" column),
  but accepts only scores in ``[0, 1]`` (its SDK's ``validate_prediction`` rejects others), while a
  strategy's score is any real number. So the prediction ``score`` is the priority rescaled over the
  exported images, ``(p - min) / (max - min)`` (1.0 for all when they are equal): the same order, the
  most urgent image at 1.0. The raw value is in ``data.alod_priority`` (a sortable Data Manager
  column) and ``meta.priority``. An image without a priority gets no prediction ``score``.
* **Image URL.** ``data.image`` is ``image_url_prefix + <dataset name, URL-quoted>``, by default
  ``/data/local-files/?d=images/<name>``: Label Studio's local-files URL, relative to
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``. Images served from elsewhere: ``export(...,
  image_url_prefix="https://host/cycle3/")`` (or ``/data/local-files/?d=cycle3/images/`` with the
  document root one folder higher, to keep one Label Studio for all cycles).
* **How to label.** (1) start Label Studio with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<out_dir>``; (2) create a project and paste
  ``label_config.xml`` as its labeling interface; (3) Settings > Cloud Storage > Add Source Storage >
  Local files, absolute path ``<out_dir>/images`` (add it, do not sync: tasks.json already has one task
  per image); (4) import ``tasks.json``; sort by prediction score, descending; (5) annotators correct
  the pre-annotations and **Submit**; (6) Export > JSON (not JSON-MIN) and ``alod import`` that file.

Import (``read``): a Label Studio JSON export, a list of tasks, each with ``annotations``
``[{"result": [...], "completed_by", "was_cancelled", "ground_truth", ...}]``.

* **Which image.** ``data.alod_name`` (written by the export; then ``meta.alod_name``) names the
  dataset image. A task that came from elsewhere (no ``alod_name``) is matched by its ``data.image``
  URL: the path (or the ``d=`` parameter of a local-files URL), URL-unquoted, is matched to the
  exported image with that file name whose folders agree best, Label Studio's ``<8 hex>-`` upload
  prefix removed if needed (``/data/upload/3/1a2b3c4d-a.jpg`` and ``/a.jpg`` find ``sub/a.jpg`` when
  it is the only exported ``a.jpg``; a tie is ambiguous: ``image_not_asked_for``). A URL with a
  ``..`` segment, or an ``alod_name`` that is absolute or has one, is ``unsafe_image_name``. The
  import never opens an image, only the JSON file.
* **Coordinates.** Percent times the **exported** image's width and height. ``original_width`` /
  ``original_height`` are only checked: percent does not depend on the size the tool saw, so a
  proportionally resized copy is fine, but a different aspect ratio (another picture, or one the
  browser turned by its EXIF orientation) makes the task ``image_not_asked_for`` (skipped).
* **Rotation.** A rectangle with ``rotation`` (degrees, clockwise, about its top-left corner) gives
  the axis-aligned hull of its four corners, reported as ``rotated_box``. A region on an image
  rotated in the tool (``image_rotation`` not 0) is skipped, also as ``rotated_box``.
* **Several annotators.** One annotation per task is taken: the one marked ground truth
  (``ground_truth: true``, a reviewer's choice), else the first submitted one in the file (Label
  Studio lists them in creation order). Every other submitted annotation is reported as
  ``duplicate_image`` naming who made it, and not merged: boxes of two people do not average into
  a better box; a reviewer settles it in Label Studio (mark one as ground truth) and exports again.
* **Not labeled.** Cancelled ("skipped") annotations are ignored. A task with predictions only, a
  draft only, or only cancelled annotations is not labeled: its image is ``image_missing`` (a human
  must submit it). A submitted annotation with no regions means "annotated, and empty".
* **Rejected in review.** An annotation a reviewer rejected (``last_action: "rejected"``, or its
  last ``reviews`` entry ``accepted: false`` and no later ``accepted`` / ``fixed_and_accepted``
  action) is not a label: it is skipped as ``rejected_annotation`` naming the task. Another
  annotation of the task that was not rejected (the fixed and accepted one) is taken as usual; with
  none, the image is ``image_missing``.
* **Region types.** ``rectanglelabels`` regions are boxes; so is a ``rectangle`` region labelled by a
  ``labels`` result with the same id. Anything else (polygons, keypoints, brushes, ellipses,
  choices, text) is ``not_a_box``. A region needs exactly one label (``unknown_category`` otherwise;
  names are matched exactly, case included).
* A file that is not a JSON list of tasks (objects with a ``data`` object) raises
  :class:`~alod.utils.AlodError` naming the file; a malformed task or region inside one is reported
  and skipped.

``tasks`` builds the task list (``alod serve`` creates the same tasks in a project and answers
``/predict`` with their predictions), and ``read_tasks`` reads parsed tasks (``alod serve`` checks
each webhook's annotation with it, ``missing=False``).

Validation against the real tool: the export passes Label Studio's own checks
(``label_studio_sdk.label_interface.LabelInterface``: the labeling config, and every prediction
against it) in ``tests/annotate/test_labelstudio.py``, which skips when ``label-studio-sdk`` is not
installed. It is not in requirements.txt: it pulls opencv, pandas, nltk and an API client; its
labeling-interface module alone needs pydantic, lxml, jsonschema, xmljson, jsf, appdirs and pyjwt.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import quoteattr

from alod.annotate.core import AnnotationFormat, ExportTask, ImportBuilder, ImportResult
from alod.annotate.files import (NameMatcher, export_rows, is_id, is_number, place_images, read_json,
                                 ref_segments)
from alod.utils import AlodError, atomic_write_bytes

NAME = "labelstudio"
VERSION = "Label Studio JSON tasks/export (1.x)"
TASKS_FILE = "tasks.json"
CONFIG_FILE = "label_config.xml"
README_FILE = "README.txt"
#: ``data.image`` = this + the URL-quoted dataset name (see the module docstring).
DEFAULT_IMAGE_URL_PREFIX = "/data/local-files/?d=images/"
FROM_NAME, TO_NAME = "label", "image"
_EXPECTED = ("a Label Studio JSON export: a list of tasks, each an object with a 'data' object and "
             "'annotations' (Label Studio: Export > JSON, not JSON-MIN)")
# Aspect ratios closer than this count as the same picture (thumbnails round their sides).
_ASPECT_TOLERANCE = 0.01


def label_config(classes) -> str:
    """The labeling interface: one image, rectangles with one label per class."""
    labels = "".join(f"    <Label value={quoteattr(c)}/>\n" for c in classes)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}  </RectangleLabels>\n</View>\n')


def export(task: ExportTask, out_dir: str | Path, *, copy_images: bool = True,
           image_url_prefix: str = DEFAULT_IMAGE_URL_PREFIX) -> list[Path]:
    """Write ``tasks.json``, ``label_config.xml``, ``README.txt`` and ``images/`` under ``out_dir``.

    Pre-annotations (``float64[N, 4]`` x1, y1, x2, y2 pixels) become percent of the image size.
    Returns ``[tasks.json, label_config.xml]`` (the files to give Label Studio).
    """
    out_dir = Path(out_dir)
    doc = tasks(task, image_url_prefix=image_url_prefix)  # checks every name before anything is written
    place_images(task, out_dir, copy_images=copy_images)
    files = [out_dir / TASKS_FILE, out_dir / CONFIG_FILE]
    atomic_write_bytes(files[0], json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    atomic_write_bytes(files[1], label_config(task.classes).encode("utf-8"))
    atomic_write_bytes(out_dir / README_FILE, _readme(task, out_dir.resolve(), image_url_prefix).encode("utf-8"))
    return files


def tasks(task: ExportTask, *, image_url_prefix: str = DEFAULT_IMAGE_URL_PREFIX, from_name: str = FROM_NAME,
          to_name: str = TO_NAME, image_key: str = "image") -> list[dict]:
    """The Label Studio tasks of ``task``, in its order: what ``tasks.json`` holds (the module
    docstring has the shape), and what ``alod serve`` creates in a project and answers to
    ``/predict``. ``from_name``, ``to_name`` and ``image_key`` name the project's
    ``<RectangleLabels>``, ``<Image>`` and the image's data key (``$image``)."""
    rows = export_rows(task)
    priorities = [float(r.image.priority) for r in rows if r.image.priority is not None]
    lo, hi = (min(priorities), max(priorities)) if priorities else (0.0, 0.0)
    out = []
    for row in rows:
        im = row.image
        W, H = int(im.width), int(im.height)
        result = []
        for j, ((x1, y1, x2, y2), label) in enumerate(zip(row.boxes.tolist(), row.labels.tolist(), strict=True)):
            region = {
                "id": f"alod{j}", "type": "rectanglelabels", "from_name": from_name, "to_name": to_name,
                "original_width": W, "original_height": H, "image_rotation": 0,
                "value": {"x": 100.0 * x1 / W, "y": 100.0 * y1 / H, "width": 100.0 * (x2 - x1) / W,
                          "height": 100.0 * (y2 - y1) / H, "rotation": 0,
                          "rectanglelabels": [task.classes[label - 1]]},
            }
            if row.scores is not None:
                region["score"] = float(row.scores[j])
            result.append(region)
        prediction = {"model_version": f"alod-cycle-{task.cycle}", "result": result}
        priority = None if im.priority is None else float(im.priority)
        if priority is not None:
            prediction["score"] = (priority - lo) / (hi - lo) if hi > lo else 1.0
        out.append({
            "data": {image_key: image_url_prefix + quote(im.name), "alod_name": im.name, "alod_priority": priority},
            "meta": {"alod_name": im.name, "run": task.run, "cycle": task.cycle, "priority": priority,
                     "width": W, "height": H},
            "predictions": [prediction],
        })
    return out


def _readme(task: ExportTask, out_dir: Path, prefix: str) -> str:
    return f"""alod run {task.run!r}, cycle {task.cycle}: {len(task.images)} images to label in Label Studio (1.x).
Classes: {', '.join(task.classes)}. Boxes already drawn are the model's guesses: correct them.

1. Start Label Studio so that it serves the images (tasks.json points at {prefix}<name>):
     LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={out_dir} label-studio
2. Create a project; Settings > Labeling Interface > Code: paste {CONFIG_FILE}.
3. Settings > Cloud Storage > Add Source Storage > Local files, absolute path {out_dir / 'images'};
   add it but do not sync (tasks.json already has one task per image).
4. Import {TASKS_FILE}. Sort the tasks by "Prediction score", descending: the first are the most useful.
5. Correct the boxes of each task and Submit it. Tasks not submitted count as not labeled.
6. Export > JSON (not JSON-MIN), then: alod import --format {NAME} <the exported file>
"""


def read(path: str | Path, task: ExportTask) -> ImportResult:
    """Read a Label Studio JSON export against ``task`` (see the module docstring for the rules)."""
    path = Path(path)
    if path.is_dir():
        raise AlodError(f"{path}: is a folder; pass the JSON file Label Studio exported (Export > JSON)")
    doc = read_json(path, _EXPECTED)
    if not isinstance(doc, list):
        raise AlodError(f"{path}: a JSON {type(doc).__name__}, not a list; expected {_EXPECTED}")
    if doc and not any(_is_task(t) for t in doc):
        raise AlodError(f"{path}: none of its {len(doc)} entries is a task with a 'data' object; expected {_EXPECTED}")
    return read_tasks(doc, task, file=path)


def read_tasks(doc: list, task: ExportTask, *, file: str | Path, missing: bool = True) -> ImportResult:
    """Read Label Studio tasks (a parsed export: a list of task objects) against ``task``.

    ``file`` names the source in the problems. ``missing=False`` reads a few tasks on their own
    (``alod serve`` checks one annotation at a time): only the images those tasks name can be
    ``image_missing``, not every other image of ``task``.
    """
    reader = _Reader(ImportBuilder(task, file, NAME), task)
    for i, t in enumerate(doc):
        reader.task(i, t)
    result = reader.b.finish()
    why = reader.why_missing
    result.problems = [dataclasses.replace(p, detail=why[p.where]) if p.kind == "image_missing" and p.where in why
                       else p for p in result.problems
                       if missing or p.kind != "image_missing" or p.where in why]
    return result


def _is_task(t) -> bool:
    return isinstance(t, dict) and isinstance(t.get("data"), dict)


def _rejected(a: dict) -> bool:
    """Whether a reviewer rejected annotation ``a`` (Label Studio's review step): ``last_action``
    is ``"rejected"``, or (unless ``last_action`` is ``"accepted"`` / ``"fixed_and_accepted"``) the
    last entry of ``reviews`` with a boolean ``accepted`` says ``false``."""
    action = a.get("last_action")
    if action == "rejected":
        return True
    if action in ("accepted", "fixed_and_accepted"):
        return False
    reviews = a.get("reviews")
    verdicts = [r["accepted"] for r in reviews if isinstance(r, dict) and isinstance(r.get("accepted"), bool)] \
        if isinstance(reviews, list) else []
    return bool(verdicts) and verdicts[-1] is False


def _image_ref_segments(url: str) -> list[str] | None:
    """The path a task's image URL names (the ``d=`` parameter of a local-files URL, else the URL's
    path), unquoted and split; ``None`` if it has a ``..`` segment."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 host: no path to read
        return []
    d = parse_qs(parts.query).get("d")
    return ref_segments(d[0] if d else unquote(parts.path))


class _Reader:
    def __init__(self, b: ImportBuilder, task: ExportTask):
        self.b = b
        self.sizes = {im.name: (int(im.width), int(im.height)) for im in task.images}
        self.matcher = NameMatcher(self.sizes)
        self.why_missing: dict[str, str] = {}

    def _name(self, t: dict, where: str) -> str | None:
        """The exported image a task is about, or ``None`` (problem recorded)."""
        b, data, meta = self.b, t["data"], t.get("meta")
        for key, value in (("data.alod_name", data.get("alod_name")),
                           ("meta.alod_name", meta.get("alod_name") if isinstance(meta, dict) else None)):
            if value is None:
                continue
            if not isinstance(value, str):
                b.problem(where, "not_this_format", f"{key} is {value!r}, not a string; task skipped")
                return None
            if value not in self.sizes:
                b.image(value, where)  # records unsafe_image_name or image_not_asked_for
                return None
            return value
        url = data.get("image")
        if url is None:
            strings = [v for v in data.values() if isinstance(v, str)]
            url = strings[0] if len(strings) == 1 else None
        if not isinstance(url, str):
            b.problem(where, "not_this_format", "no image URL in data.image (and no data.alod_name); task skipped")
            return None
        segments = _image_ref_segments(url)
        if segments is None:
            b.problem(where, "unsafe_image_name", f"image URL {url!r} leaves its folder ('..'); task skipped")
            return None
        name, why = self.matcher.match(segments)
        if name is None:
            b.problem(where, "image_not_asked_for", f"image URL {url!r}: {why}; task skipped")
        return name

    def task(self, i: int, t) -> None:
        b = self.b
        if not _is_task(t):
            b.problem(f"tasks[{i}]", "not_this_format",
                      "not a Label Studio task (an object with a 'data' object); skipped")
            return
        where = f"task {t['id']}" if is_id(t.get("id")) else f"tasks[{i}]"
        name = self._name(t, where)
        if name is None:
            return
        where = f"{where} ({name})"
        anns = t.get("annotations") or []
        if not isinstance(anns, list):
            b.problem(where, "not_this_format", "'annotations' is not a list; task skipped")
            self.why_missing.setdefault(name, "its task's annotations are unreadable (see the problem above)")
            return
        usable = []
        for k, a in enumerate(anns):
            if not isinstance(a, dict) or not isinstance(a.get("result", []), list):
                b.problem(f"{where} annotations[{k}]", "not_this_format",
                          "not an annotation object with a 'result' list; skipped")
            elif not a.get("was_cancelled") and _rejected(a):
                b.problem(f"{where} annotation {a.get('id')}", "rejected_annotation",
                          f"task {t.get('id')!r}: annotation {a.get('id')!r} (completed_by {a.get('completed_by')!r}) "
                          f"was rejected by a reviewer (last_action {a.get('last_action')!r}); a rejected annotation "
                          "is not a label: skipped. Fix it in Label Studio until it is accepted, then export again")
            elif not a.get("was_cancelled"):
                usable.append(a)
        if not usable:
            self.why_missing.setdefault(name, self._why_not_labeled(t, anns))
            return
        chosen = next((a for a in usable if a.get("ground_truth") is True), usable[0])
        result = chosen.get("result", [])
        if not self._same_picture(result, name, where):
            self.why_missing.setdefault(name, "the annotated image's size differs (see the problem above)")
            return
        if not b.image(name, where):
            return
        self._regions(name, f"{where} annotation {chosen.get('id')}", result)
        for a in usable:
            if a is not chosen:
                kept = " (marked ground truth)" if chosen.get("ground_truth") is True else ""
                b.problem(f"{where} annotation {a.get('id')}", "duplicate_image",
                          f"another annotation of the same image (completed_by {a.get('completed_by')!r}); "
                          f"annotation {chosen.get('id')} (completed_by {chosen.get('completed_by')!r}){kept} is "
                          "kept. To take another, mark it as ground truth in Label Studio and export again")

    @staticmethod
    def _why_not_labeled(t: dict, anns: list) -> str:
        if any(isinstance(a, dict) and not a.get("was_cancelled") and _rejected(a) for a in anns):
            return "its annotations were rejected in review (see the problems above): not labeled"
        if any(isinstance(a, dict) and a.get("was_cancelled") for a in anns):
            return "its annotations were all cancelled (skipped) in Label Studio: not labeled"
        if anns:
            return "its annotations are unreadable (see the problems above)"
        if t.get("drafts"):
            return "it has a draft but no submitted annotation: submit it in Label Studio"
        if t.get("predictions"):
            return "it has only predictions, no submitted annotation: a human must confirm them (Submit)"
        return "its task has no annotation: not labeled"

    def _same_picture(self, result: list, name: str, where: str) -> bool:
        W, H = self.sizes[name]
        for r in result:
            if not isinstance(r, dict):
                continue
            ow, oh = r.get("original_width"), r.get("original_height")
            if (is_number(ow) and is_number(oh) and ow > 0 and oh > 0
                    and abs(ow * H - oh * W) > _ASPECT_TOLERANCE * ow * H):
                self.b.problem(where, "image_not_asked_for",
                               f"Label Studio showed a {ow}x{oh} image but the exported {name!r} is {W}x{H} "
                               "(another picture, or turned by its EXIF orientation); task skipped")
                return False
        return True

    def _regions(self, name: str, where: str, result: list) -> None:
        b = self.b
        W, H = self.sizes[name]
        ids = [r.get("id") for r in result if isinstance(r, dict)]
        label_of = {r["id"]: (r.get("value") or {}).get("labels") for r in result
                    if isinstance(r, dict) and r.get("type") == "labels" and isinstance(r.get("id"), str)
                    and isinstance(r.get("value"), dict)}
        for j, r in enumerate(result):
            if not isinstance(r, dict):
                b.problem(f"{where} result[{j}]", "not_a_box", f"not a region object ({r!r}); skipped")
                continue
            rid, kind, value = r.get("id"), r.get("type"), r.get("value")
            w = f"{where} region {rid}" if isinstance(rid, str) else f"{where} result[{j}]"
            if kind == "labels" and isinstance(rid, str) and ids.count(rid) > 1:
                continue  # the label of a region with the same id, read with it
            if kind not in ("rectanglelabels", "rectangle"):
                b.problem(w, "not_a_box", f"a {kind!r} region; only rectangles are imported; skipped")
                continue
            if not isinstance(value, dict):
                b.problem(w, "degenerate_box", "no 'value' object with the coordinates; skipped")
                continue
            labels = value.get("rectanglelabels") if kind == "rectanglelabels" else label_of.get(rid)
            if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
                b.problem(w, "unknown_category", f"a region needs exactly one label, got {labels!r}; skipped")
                continue
            xywh = [value.get(k) for k in ("x", "y", "width", "height")]
            rotation = value.get("rotation", 0)
            rotation = 0 if rotation is None else rotation
            if not (all(is_number(v) for v in xywh) and is_number(rotation)):
                b.problem(w, "degenerate_box", f"x, y, width, height, rotation must be numbers (percent, degrees), "
                          f"got {xywh + [rotation]}; skipped")
                continue
            if not (xywh[2] > 0 and xywh[3] > 0):
                b.problem(w, "degenerate_box", f"width {xywh[2]} and height {xywh[3]} must be positive; skipped")
                continue
            turned = r.get("image_rotation", 0)
            if turned not in (0, None):
                b.problem(w, "rotated_box", f"the image was rotated by {turned!r} degrees in Label Studio; its "
                          "regions are not mapped back; skipped")
                continue
            x, y = xywh[0] * W / 100, xywh[1] * H / 100
            bw, bh = xywh[2] * W / 100, xywh[3] * H / 100
            if rotation % 360 == 0:
                corners = (x, y, x + bw, y + bh)
            else:  # clockwise on screen (y points down), about the top-left corner
                c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
                xs = (x, x + bw * c, x + bw * c - bh * s, x - bh * s)
                ys = (y, y + bw * s, y + bw * s + bh * c, y + bh * c)
                corners = (min(xs), min(ys), max(xs), max(ys))
            n_problems = len(b.result.problems)
            b.box(name, w, labels[0], *corners)
            if rotation % 360 != 0 and len(b.result.problems) == n_problems:
                b.problem(w, "rotated_box", f"rotated by {rotation:g} degrees; its axis-aligned hull "
                          f"{[round(v, 1) for v in corners]} is taken")


def sniff(path: str | Path) -> bool:
    """A JSON list whose first entry is an object with a ``data`` object."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        doc = read_json(path, _EXPECTED)
    except AlodError:
        return False
    return isinstance(doc, list) and bool(doc) and _is_task(doc[0])


FORMAT = AnnotationFormat(name=NAME, export=export, read=read, sniff=sniff, version=VERSION)
