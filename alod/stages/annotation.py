"""Humans in the loop: ``alod export`` hands a cycle's selected images to an annotation tool and
``alod import`` brings the annotators' labels back for the ``human`` oracle (:mod:`alod.cycle.oracles`).

With ``cycles.oracle: human`` the cycle loop stops after *select* and prints both commands. Then:

1. :func:`run_export` reads the cycle's selection from the cycles state (``state.json``), builds an
   :class:`~alod.annotate.core.ExportTask` (dataset names, absolute image paths, sizes from the
   training index, the dataset's classes, each image's score in the precomputed schedule as its
   priority) and, with ``preannotate``, the current model's detections above a threshold as
   pre-annotations; the format module writes ``runs/<run>/cycles/cycle_NN/export_<format>/``.
2. Annotators label the images in the tool.
3. :func:`run_import` reads their file back with the format (named or detected), validated against
   the cycle's images, sizes and classes: every problem is printed and written to
   ``cycle_NN/import_problems.jsonl``, objects with problems are skipped. Images missing from the
   answer refuse the import unless ``allow_partial`` (then they go back to the unlabeled pool). A
   refused import changes no stored file: its problems go to
   ``cycle_NN/import_problems.refused-NNN.jsonl``. The labels are stored as
   ``cycle_NN/labels.npz`` + ``labels.json`` (:func:`alod.cycle.oracles.store_labels`). When the same
   format's export carried pre-annotations, ``labels.json`` also records what the annotators changed
   (``edits``, :func:`import_edits`).
4. Rerunning ``main_sample.py`` continues from the label step with the stored labels.

:func:`cycle_task` builds the same :class:`~alod.annotate.core.ExportTask` as step 1 without writing
files: ``alod serve`` (:mod:`alod.serve`) answers Label Studio with it, and feeds the annotations it
accepts to :func:`run_import` as a Label Studio export.

Re-importing: the same file again (same sha256; for a folder, of its annotation files: ``.json``
and ``.xml``, for YOLO ``.txt``, ``.names`` and ``.yaml``)
changes nothing. A different file replaces the previous import until the cycle's label step has run
(annotators fix mistakes); after that the labels are in the pool and in a trained model, and a
different file is refused.

This stage reads the cycles state but never writes it: only the cycles stage does. It does not import
the cycles stage (stages share files through :mod:`alod.layout`, not code).
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict
from pathlib import Path

import numpy as np

from alod.annotate.core import ExportImage, ExportTask
from alod.annotate.formats import detect_format, get_format
from alod.config import Config
from alod.cycle.actions import add_edits, edit_counts
from alod.cycle.oracles import read_labels_record, store_labels, stored_labels_intact
from alod.data.index import DetectionIndex
from alod.engine import predict
from alod.models import build_detector, load_detector
from alod.schedule import load_schedule
from alod.stages.setup import StageContext, open_stage
from alod.utils import AlodError, atomic_write_json, atomic_write_text, sha256_file, sha256_strings

#: The cycles state format this stage reads (``alod.stages.cycles.STATE_FORMAT``; a stage does not
#: import another stage).
_CYCLES_STATE_FORMAT = "alod.cycles/2"
_AFTER_SELECT = ("selected", "labeled", "trained", "evaluated")

#: What to import after labeling, per format: the export folder itself (labelme edits it in place)
#: or the file the tool exports (shown as a placeholder).
_IMPORT_PLACEHOLDER = {
    "cvat": "<the annotations.xml or .zip CVAT exports as 'CVAT for images 1.1'>",
    "coco": "<the COCO instances JSON your tool exports>",
    "labelstudio": "<the JSON Label Studio exports (Export > JSON)>",
    "voc": "<the VOC folder or .zip your tool exports (or this export folder, edited in place)>",
    "yolo": "<the YOLO folder or .zip your tool exports, with its classes.txt (or this export folder, edited)>",
}


# ------------------------------------------------------------------------------------- shared
def annotation_sha256(path: str | Path, *, suffixes: tuple[str, ...] = (".json", ".xml")) -> str:
    """The sha256 an import is known by: of the file, or for a folder (a LabelMe, VOC or YOLO
    export) of the sorted ``relative path, sha256`` lines of every file under it whose name ends in
    one of ``suffixes`` (the format's :attr:`~alod.annotate.core.AnnotationFormat.suffixes`; hidden
    entries and symbolic links skipped, as the readers skip them): images do not count.

    Raises:
        AlodError: ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise AlodError(f"{path} does not exist; give the file (or LabelMe folder) the annotation tool wrote")
    lines = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            p = Path(dirpath) / f
            if f.startswith(".") or p.is_symlink() or not f.lower().endswith(suffixes):
                continue
            lines.append(f"{p.relative_to(path).as_posix()}\t{sha256_file(p)}")
    return sha256_strings(sorted(lines))


def _read_cycles_state(ctx: StageContext) -> dict:
    path = ctx.layout.cycles_state
    if not path.is_file():
        raise AlodError(f"no cycles state at {path}: run the cycles first (python main_sample.py --config ... "
                        "--set cycles.oracle=human); with the human oracle they stop after selecting a cycle's images")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AlodError(f"{path} cannot be read ({e})") from None
    if not isinstance(state, dict) or state.get("format") != _CYCLES_STATE_FORMAT:
        raise AlodError(f"{path}: not an {_CYCLES_STATE_FORMAT} state file; rerun python main_sample.py once "
                        "(it upgrades older states)")
    return state


def _cycle_record(ctx: StageContext, state: dict, cycle: int) -> dict:
    """Cycle ``cycle``'s record, which must have reached ``selected``."""
    rec = next((c for c in state["cycles"] if c.get("cycle") == cycle), None)
    if rec is None or rec.get("step") not in _AFTER_SELECT:
        have = ", ".join(f"{c['cycle']} ({c['step']})" for c in state["cycles"]) or "none"
        raise AlodError(f"cycle {cycle} has no selected images yet (cycles in {ctx.layout.cycles_state}: {have}); "
                        "run python main_sample.py with the same config until it stops after selecting cycle "
                        f"{cycle}'s images")
    return rec


def _task(ctx: StageContext, train, names: list[str], cycle: int, *, priorities: dict | None = None,
          detections: dict | None = None):
    """The :class:`~alod.annotate.core.ExportTask` of ``names`` (dataset names; sizes from ``train``;
    ``detections``: name -> ``(boxes float64[N, 4], labels int64[N], scores float64[N])``)."""
    pos = train.name_to_index()
    unknown = [x for x in names if x not in pos]
    if unknown:
        raise AlodError(f"cycle {cycle}'s images are not in the training set {train.source}: {unknown[:3]}; "
                        "was the dataset changed after the cycles started?")
    images = []
    for name in names:
        i = pos[name]
        extra = {}
        if detections is not None:
            b, l, s = detections[name]
            extra = {"boxes": b, "labels": l, "scores": s}
        prio = None if priorities is None or name not in priorities else float(priorities[name])
        images.append(ExportImage(name=name, path=Path(os.path.abspath(train.image_path(i))),
                                  width=int(train.widths[i]), height=int(train.heights[i]), priority=prio, **extra))
    if priorities:  # most useful first; ties (and images without a score) keep the selection order
        images.sort(key=lambda im: -im.priority if im.priority is not None else float("inf"))
    return ExportTask(images=images, classes=tuple(train.classes), cycle=cycle, run=ctx.cfg.run.name)


def _schedule_scores(state: dict) -> dict[str, float] | None:
    """Every image's score in the precomputed schedule the cycles use, or ``None`` when the run has
    none (another selector, or the file is gone)."""
    sel = state.get("selector") or {}
    if sel.get("name") != "precomputed" or not sel.get("schedule") or not Path(sel["schedule"]).is_file():
        return None
    schedule = load_schedule(sel["schedule"])
    return {str(e["name"]): float(e["score"]) for e in schedule["images"]}


# ------------------------------------------------------------------------------------- export
def _model_checkpoint(ctx: StageContext, cycle: int) -> Path | None:
    """The model that pre-annotates cycle ``cycle``: cycle ``cycle - 1``'s, for cycle 1 the scorer
    (pretraining); ``None`` when only ``model.weights_path`` is there."""
    layout, cfg = ctx.layout, ctx.cfg
    ckpt = layout.cycle_checkpoint(cycle - 1) if cycle > 1 else layout.pretrain_checkpoint
    if ckpt.is_file():
        return ckpt
    if cfg.model.weights_path:
        return None
    whose = f"cycle {cycle - 1}'s model" if cycle > 1 else "the pretrained scorer"
    raise AlodError(f"--preannotate needs {whose} ({ckpt} does not exist) or model.weights_path; "
                    "export without --preannotate, or bring weights with --set model.weights_path=<file>")


def _detections(ctx: StageContext, train, names: list[str], cycle: int, threshold: float,
                ckpt: Path | None) -> tuple[dict, str]:
    """name -> ``(boxes float64[N, 4], labels int64[N], scores float64[N])`` of the detections with
    score >= ``threshold`` of the model in ``ckpt`` (``None``: ``model.weights_path``), and the
    weights used (a path)."""
    cfg = ctx.cfg
    model_kwargs = asdict(cfg.model)  # builds with model.weights_path when it is set
    model = (build_detector(num_classes=train.num_classes, **model_kwargs) if ckpt is None
             else load_detector(ckpt, num_classes=train.num_classes, **model_kwargs))
    model.to(ctx.accelerator.device)
    pos = train.name_to_index()
    subset = train.subset([pos[x] for x in names])
    dets = predict(model, ctx.dataset(subset), batch_size=cfg.train.eval_batch_size, accelerator=ctx.accelerator,
                   amp=cfg.train.amp, desc=f"cycle {cycle} pre-annotate", progress=ctx.progress)
    out = {}
    for name, d in zip(names, dets):
        keep = np.asarray(d["scores"], dtype=np.float64) >= threshold
        out[name] = (np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4)[keep],
                     np.asarray(d["labels"], dtype=np.int64)[keep], np.asarray(d["scores"], dtype=np.float64)[keep])
    return out, str(ckpt if ckpt is not None else cfg.model.weights_path)


def _export_task(ctx: StageContext, state: dict, cycle: int, *, preannotate: bool, threshold: float):
    """Cycle ``cycle``'s :class:`~alod.annotate.core.ExportTask` (with the current model's detections
    when ``preannotate``) and the weights that made them (``None`` without)."""
    names = list(_cycle_record(ctx, state, cycle)["selected"])
    ckpt = _model_checkpoint(ctx, cycle) if preannotate else None  # before the slow part: fail early
    train = ctx.load_split("train")
    detections, weights = None, None
    if preannotate:
        detections, weights = _detections(ctx, train, names, cycle, threshold, ckpt)
    task = _task(ctx, train, names, cycle, priorities=_schedule_scores(state), detections=detections)
    return task, weights


def waiting_cycle(state: dict) -> int | None:
    """The cycle that waits for its labels (its last step is ``selected``), or ``None``."""
    waiting = [c["cycle"] for c in state.get("cycles", []) if c.get("step") == "selected"]
    return max(waiting) if waiting else None


def cycle_task(cfg: Config, *, cycle: int | None = None, preannotate: bool = False, threshold: float = 0.5,
               progress: bool = False, log=print):
    """Cycle ``cycle``'s images as ``alod export`` hands them to annotators, without writing files.

    The same steps as :func:`run_export` (selection, sizes, the schedule's scores as priorities,
    with ``preannotate`` the detections of cycle ``cycle - 1``'s model above ``threshold``); used by
    ``alod serve`` to answer Label Studio.

    Args:
        cycle: a cycle the loop has selected; ``None``: the one waiting for labels.

    Returns:
        ``(task, info)``: the :class:`~alod.annotate.core.ExportTask` and ``{"cycle", "weights",
        "step"}`` (``weights``: the checkpoint that pre-annotated, or ``None``; ``step``: the
        cycle's last step).

    Raises:
        AlodError: no cycles state, no such cycle, or (``cycle=None``) no cycle waiting for labels.
    """
    if not 0.0 <= threshold <= 1.0:
        raise AlodError(f"threshold {threshold}: a detection score threshold lies in [0, 1]")
    with open_stage(cfg, "annotate", amp=cfg.train.amp, progress=progress, log=log) as ctx:
        state = _read_cycles_state(ctx)
        if cycle is None:
            cycle = waiting_cycle(state)
            if cycle is None:
                raise AlodError(f"no cycle waits for labels in {ctx.layout.cycles_state}; run python main_sample.py "
                                "with cycles.oracle=human until it stops after selecting a cycle's images")
        step = _cycle_record(ctx, state, cycle)["step"]
        task, weights = _export_task(ctx, state, cycle, preannotate=preannotate, threshold=threshold)
    return task, {"cycle": cycle, "weights": weights, "step": step}


def run_export(cfg: Config, *, cycle: int, fmt: str, preannotate: bool = False, threshold: float = 0.5,
               copy_images: bool = False, overwrite: bool = False, progress: bool = True, log=print) -> dict:
    """Write cycle ``cycle``'s selected images for annotators in format ``fmt``.

    Args:
        cycle: a cycle the loop has selected (``state.json``: step ``selected`` or later).
        fmt: ``labelme``, ``cvat``, ``coco``, ``labelstudio``, ``voc`` or ``yolo``.
        preannotate: the current model's detections (cycle ``cycle - 1``'s checkpoint; for cycle 1
            the pretraining checkpoint; else ``model.weights_path``) become pre-annotations.
        threshold: the lowest detection score kept as a pre-annotation, in ``[0, 1]``.
        copy_images: copy the images into the export (default: symbolic links).
        overwrite: write into an export folder that already holds files (annotators may be editing
            it: refused otherwise).

    Returns:
        ``{"folder", "files", "images", "preannotations", "weights", "import_path"}``: ``files`` to
        open or upload; ``import_path`` what ``alod import`` takes after labeling (a path, or a
        placeholder in ``<...>`` for the file the tool exports).
    """
    fmt_ = get_format(fmt)
    if not 0.0 <= threshold <= 1.0:
        raise AlodError(f"--threshold {threshold}: a detection score threshold lies in [0, 1]")
    with open_stage(cfg, "annotate", amp=cfg.train.amp, progress=progress, log=log) as ctx:
        ctx.ensure_dataset()
        state = _read_cycles_state(ctx)
        _cycle_record(ctx, state, cycle)
        out_dir = ctx.layout.cycle_export_dir(cycle, fmt_.name)
        if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
            raise AlodError(f"{out_dir} already holds an export (annotators may be working in it); import it, "
                            "delete the folder, or pass --overwrite to write over it")
        task, weights = _export_task(ctx, state, cycle, preannotate=preannotate, threshold=threshold)
        result = {"folder": str(out_dir), "files": [], "images": len(task.images),
                  "preannotations": sum(len(im.boxes) for im in task.images), "weights": weights,
                  "import_path": str(out_dir) if fmt_.name == "labelme" else _IMPORT_PLACEHOLDER[fmt_.name]}
        if ctx.is_main:
            files = fmt_.export(task, out_dir, copy_images=copy_images)
            result["files"] = [str(f) for f in files]
            atomic_write_json(ctx.layout.cycle_export_record(cycle, fmt_.name), export_record(
                task, cycle=cycle, fmt=fmt_, preannotate=preannotate, threshold=threshold, weights=weights,
                folder=str(out_dir), files=result["files"], copy_images=copy_images))
            pre = (f", {result['preannotations']} pre-annotations (score >= {threshold}) from {weights}"
                   if preannotate else "")
            ctx.log(f"cycle {cycle}: exported {len(task.images)} images for {fmt_.version}{pre} into {out_dir}")
            ctx.log("open / upload: " + " ".join(shlex.quote(f) for f in result["files"]))
        ctx.wait()
    return result


def export_record(task, *, cycle: int, fmt, preannotate: bool, threshold: float, weights, **where) -> dict:
    """What ``cycle_NN/export_<format>.json`` holds for ``task`` (an
    :class:`~alod.annotate.core.ExportTask`) handed out in format ``fmt``: its images, priorities and,
    with ``preannotate``, the pre-annotations' boxes that :func:`import_edits` compares an import
    with. ``where``: how it was handed out (``folder``, ``files``, ``copy_images`` for ``alod
    export``; ``served_by`` for ``alod serve``, which writes the record when it pre-annotates)."""
    return {"cycle": cycle, "format": fmt.name, "version": fmt.version, **where,
            "images": [im.name for im in task.images], "priorities": [im.priority for im in task.images],
            "preannotate": preannotate, "threshold": threshold if preannotate else None, "weights": weights,
            "weights_sha256": sha256_file(weights) if weights and Path(weights).is_file() else None,
            **({"preannotation_boxes": _preannotation_boxes(task)} if preannotate else {})}


def _preannotation_boxes(task) -> dict:
    """Image name -> ``{"boxes": [[x1, y1, x2, y2], ...], "labels", "scores"}``: the pre-annotations
    the export handed out, kept so that an import can be compared with them (:func:`import_edits`)."""
    return {im.name: {"boxes": np.asarray(im.boxes, dtype=np.float64).reshape(-1, 4).tolist(),
                      "labels": [int(x) for x in im.labels], "scores": [float(x) for x in im.scores]}
            for im in task.images}


# ------------------------------------------------------------------------------------- import
def _pool_sources(state: dict, cycle: int) -> set[str]:
    pool = state.get("pool") or {}
    return {s for c, s in zip(pool.get("cycles", []), pool.get("sources", [])) if c == cycle}


def run_import(cfg: Config, *, cycle: int, path: str | Path, fmt: str = "auto", allow_partial: bool = False,
               progress: bool = True, log=print) -> dict:
    """Store the annotators' labels of cycle ``cycle`` for the human oracle.

    Args:
        path: the annotation file (or LabelMe / VOC / YOLO folder, CVAT zip, ...) the tool wrote.
        fmt: a format name, or ``auto`` to detect it from the content.
        allow_partial: accept an answer that misses some of the cycle's images; those go back to
            the unlabeled pool. Without it such an import is refused and nothing is stored.

    Returns:
        The stored ``labels.json`` record plus ``"status"``: ``"imported"``, ``"replaced"`` (a
        different file before the label step) or ``"already imported"`` (nothing changed).

    Raises:
        AlodError: no such cycle, an unreadable file, missing images without ``allow_partial``, no
            image answered, or a different file after the cycle's label step. A refused import
            changes no stored file: its problems go to ``import_problems.refused-NNN.jsonl``
            (:meth:`alod.layout.RunLayout.cycle_refused_import_problems`), not over the last
            accepted import's ``import_problems.jsonl``.
    """
    path = Path(path)
    with open_stage(cfg, "annotate", progress=progress, log=log) as ctx:
        ctx.ensure_dataset()
        if cfg.cycles.oracle != "human":
            ctx.log(f"note: this config has cycles.oracle={cfg.cycles.oracle!r}; the labels are used only when the "
                    "cycles run with --set cycles.oracle=human")
        state = _read_cycles_state(ctx)
        rec = _cycle_record(ctx, state, cycle)
        if not path.exists():
            raise AlodError(f"{path} does not exist; give the file (or folder) the annotation tool wrote")
        fmt_ = detect_format(path) if fmt == "auto" else get_format(fmt)
        sha = annotation_sha256(path, suffixes=fmt_.suffixes)
        source = f"{fmt_.name}:{sha[:16]}"
        previous, unchanged = _previous_import(ctx, state, rec, path=path, sha=sha, source=source)
        if unchanged is not None:
            return unchanged
        names = list(rec["selected"])
        train = ctx.load_split("train")
        result = fmt_.read(path, _task(ctx, train, names, cycle))
        for p in result.problems:
            ctx.log(f"problem: {p}")
        missing = _accept_answer(ctx, result, names, cycle=cycle, path=path, fmt=fmt_.name,
                                 allow_partial=allow_partial)
        if ctx.is_main:  # only an accepted import replaces the cycle's problem list
            atomic_write_text(ctx.layout.cycle_import_problems(cycle), _problem_lines(result.problems))
        record = {"tool": fmt_.name, "version": fmt_.version, "path": str(path.resolve()), "sha256": sha,
                  "source": source, "allow_partial": allow_partial,
                  "edits": import_edits(ctx.layout.cycle_export_record(cycle, fmt_.name), result,
                                        [n for n in names if n in result.boxes])}
        return _store(ctx, train, result, names, missing, cycle=cycle, record=record, previous=previous)


def import_edits(export_record: Path, result, labeled: list[str]) -> dict:
    """What annotators changed, per image of ``labeled``, against the pre-annotations the export
    recorded in ``export_record`` (``cycle_NN/export_<format>.json``), for the ``labels.json`` record.

    Each image's imported boxes (``result``, an :class:`~alod.annotate.core.ImportResult`) are
    matched with the exported ones by :func:`alod.cycle.actions.edit_counts` (greedy by score at IoU
    >= 0.5; same class and IoU >= 0.7 is ``kept``, else ``changed``; unmatched exported boxes are
    ``deleted``, unmatched imported ones ``added``).

    Returns:
        ``{"preannotated": True, "export", "weights", "threshold", "per_image": {name: {added,
        deleted, changed, kept}}, "totals"}``, or, when there is nothing to compare with (no export
        of this format, an export without ``--preannotate``, one made before alod kept its boxes, or
        one of other images), ``{"preannotated": False, "export", "reason"}`` and no counts.
    """

    def none(reason: str) -> dict:
        return {"preannotated": False, "export": str(export_record) if export_record.is_file() else None,
                "reason": reason}

    if not export_record.is_file():
        return none(f"no {export_record.name}: this format was not exported by alod export")
    try:
        exported = json.loads(export_record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return none(f"{export_record} cannot be read ({e})")
    if not exported.get("preannotate"):
        return none("exported without --preannotate: there were no pre-annotations to change")
    pre = exported.get("preannotation_boxes")
    if not isinstance(pre, dict):
        return none("exported before alod kept the pre-annotations' boxes; export with --preannotate again")
    if any(name not in pre for name in labeled):
        return none(f"{export_record} was written for other images than this import's")
    per_image = {name: edit_counts(pre[name]["boxes"], pre[name]["labels"], result.boxes[name], result.labels[name],
                                   pre_scores=pre[name]["scores"]) for name in labeled}
    return {"preannotated": True, "export": str(export_record), "weights": exported.get("weights"),
            "threshold": exported.get("threshold"), "per_image": per_image, "totals": add_edits(per_image.values())}


def _previous_import(ctx: StageContext, state: dict, rec: dict, *, path: Path, sha: str, source: str):
    """``(previous labels record or None, result or None)``: the result when the same file is
    already imported (nothing to do). Raises when the cycle's label step has run and ``path`` is a
    different file (its labels are in the pool and in a trained model)."""
    layout, cycle = ctx.layout, rec["cycle"]
    previous = read_labels_record(layout, cycle)
    intact = previous is not None and stored_labels_intact(layout, cycle, previous)
    if rec["step"] != "selected":  # the label step ran: the pool holds these labels
        joined = _pool_sources(state, cycle) or ({previous["source"]} if previous else set())
        if source not in joined:
            was = (f" from {previous['path']} ({previous['source']})" if previous
                   else f" ({', '.join(sorted(joined))})")
            raise AlodError(
                f"cycle {cycle}'s labels joined the pool at its label step{was} and the cycle has reached "
                f"'{rec['step']}'; {path} ({source}) is a different file and cannot replace them. Correct "
                f"those images in a new run, or delete {layout.cycles_dir} to start the cycles over")
    if intact and previous["sha256"] == sha:
        ctx.log(f"cycle {cycle}: {path} is already imported ({source}); nothing changed")
        return previous, {**previous, "status": "already imported"}
    return previous, None


def _problem_lines(problems) -> str:
    """Import problems as JSON lines (``file``, ``where``, ``kind``, ``detail``)."""
    return "".join(json.dumps({"file": p.file, "where": p.where, "kind": p.kind, "detail": p.detail},
                              ensure_ascii=False) + "\n" for p in problems)


def _refused_problems_path(layout, cycle: int) -> Path:
    """The first unused ``import_problems.refused-NNN.jsonl`` of the cycle."""
    attempt = 1
    while layout.cycle_refused_import_problems(cycle, attempt).exists():
        attempt += 1
    return layout.cycle_refused_import_problems(cycle, attempt)


def _accept_answer(ctx: StageContext, result, names: list[str], *, cycle: int, path: Path, fmt: str,
                   allow_partial: bool) -> list[str]:
    """The cycle's images the answer lacks, or :class:`AlodError` when the import is refused (no
    image answered; some missing without ``allow_partial``). A refusal writes its problems under
    the attempt's own name and leaves every stored file as it was."""
    selected = set(names)
    strays = [n for n in result.boxes if n not in selected]
    missing = [n for n in names if n not in result.boxes]
    why = None
    if strays:  # the formats refuse these already; never store a name the cycle did not export
        why = f"the {fmt} reader returned images that were not exported: {strays[:3]}"
    elif len(missing) == len(names):
        why = f"none of cycle {cycle}'s {len(names)} images is answered (is it the {fmt} file for this cycle?)"
    elif missing and not allow_partial:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        why = (f"{len(missing)} of cycle {cycle}'s {len(names)} images have no answer: {shown}. Label them and "
               "import again, or pass --allow-partial to import the others and return these to the unlabeled pool")
    if why is None:
        return missing
    refused = _refused_problems_path(ctx.layout, cycle)
    if ctx.is_main:
        atomic_write_text(refused, _problem_lines(result.problems))
    raise AlodError(f"{path}: {why}. Nothing was imported: no stored file changed (this attempt's "
                    f"{len(result.problems)} problem(s) are listed in {refused})")


def _store(ctx: StageContext, train, result, names: list[str], missing: list[str], *, cycle: int, record: dict,
           previous: dict | None) -> dict:
    """Store the accepted answer as ``labels.npz`` + ``labels.json`` and log what was imported."""
    layout = ctx.layout
    labeled = [n for n in names if n in result.boxes]
    pos = train.name_to_index()
    index = DetectionIndex.from_lists(
        image_root=train.image_root, names=labeled,
        widths=[int(train.widths[pos[n]]) for n in labeled], heights=[int(train.heights[pos[n]]) for n in labeled],
        boxes_per_image=[result.boxes[n] for n in labeled], labels_per_image=[result.labels[n] for n in labeled],
        classes=tuple(train.classes), source=record["path"],
    )
    counts: dict[str, int] = {}
    for p in result.problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    record = {**record, "images_labeled": labeled, "images_returned": missing, "boxes": int(index.num_boxes),
              "problems": counts}
    status = "replaced" if previous is not None and previous.get("sha256") != record["sha256"] else "imported"
    if ctx.is_main:
        record = store_labels(layout, cycle, index, record)
    ctx.wait()
    if status == "replaced":
        ctx.log(f"cycle {cycle}: replaced the previous import ({previous.get('path')}, {previous.get('source')})")
    back = f"; {len(missing)} image(s) returned to the unlabeled pool" if missing else ""
    where = f"problems listed in {layout.cycle_import_problems(cycle)}"
    ctx.log(f"cycle {cycle}: imported {len(labeled)} images with {index.num_boxes} boxes from {record['path']} "
            f"({record['source']}){back}; {len(result.problems)} problem(s)"
            + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}), {where}" if counts else ""))
    edits = record["edits"]
    if edits["preannotated"]:
        t = edits["totals"]
        ctx.log(f"cycle {cycle}: against the exported pre-annotations, annotators added {t['added']}, deleted "
                f"{t['deleted']}, changed {t['changed']} and kept {t['kept']} boxes")
    else:
        ctx.log(f"cycle {cycle}: edits not counted: {edits['reason']}")
    return {**record, "status": status}
