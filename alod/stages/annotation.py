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
   answer refuse the import unless ``allow_partial`` (then they go back to the unlabeled pool). The
   labels are stored as ``cycle_NN/labels.npz`` + ``labels.json``
   (:func:`alod.cycle.oracles.store_labels`).
4. Rerunning ``main_sample.py`` continues from the label step with the stored labels.

Re-importing: the same file again (same sha256; for a folder, of its ``.json``/``.xml`` files)
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
}


# ------------------------------------------------------------------------------------- shared
def annotation_sha256(path: str | Path) -> str:
    """The sha256 an import is known by: of the file, or for a folder (a LabelMe export) of the
    sorted ``relative path, sha256`` lines of every ``.json`` and ``.xml`` file under it (hidden
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
            if f.startswith(".") or p.is_symlink() or p.suffix.lower() not in (".json", ".xml"):
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


def run_export(cfg: Config, *, cycle: int, fmt: str, preannotate: bool = False, threshold: float = 0.5,
               copy_images: bool = False, overwrite: bool = False, progress: bool = True, log=print) -> dict:
    """Write cycle ``cycle``'s selected images for annotators in format ``fmt``.

    Args:
        cycle: a cycle the loop has selected (``state.json``: step ``selected`` or later).
        fmt: ``labelme``, ``cvat``, ``coco`` or ``labelstudio``.
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
        rec = _cycle_record(ctx, state, cycle)
        names = list(rec["selected"])
        out_dir = ctx.layout.cycle_export_dir(cycle, fmt_.name)
        if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
            raise AlodError(f"{out_dir} already holds an export (annotators may be working in it); import it, "
                            "delete the folder, or pass --overwrite to write over it")
        ckpt = _model_checkpoint(ctx, cycle) if preannotate else None  # before the slow part: fail early
        train = ctx.load_split("train")
        detections, weights = None, None
        if preannotate:
            detections, weights = _detections(ctx, train, names, cycle, threshold, ckpt)
        task = _task(ctx, train, names, cycle, priorities=_schedule_scores(state), detections=detections)
        result = {"folder": str(out_dir), "files": [], "images": len(task.images),
                  "preannotations": sum(len(im.boxes) for im in task.images), "weights": weights,
                  "import_path": str(out_dir) if fmt_.name == "labelme" else _IMPORT_PLACEHOLDER[fmt_.name]}
        if ctx.is_main:
            files = fmt_.export(task, out_dir, copy_images=copy_images)
            result["files"] = [str(f) for f in files]
            atomic_write_json(ctx.layout.cycle_export_record(cycle, fmt_.name), {
                "cycle": cycle, "format": fmt_.name, "version": fmt_.version, "folder": str(out_dir),
                "files": result["files"], "images": [im.name for im in task.images],
                "priorities": [im.priority for im in task.images], "preannotate": preannotate,
                "threshold": threshold if preannotate else None, "weights": weights,
                "weights_sha256": sha256_file(weights) if weights else None, "copy_images": copy_images,
            })
            pre = (f", {result['preannotations']} pre-annotations (score >= {threshold}) from {weights}"
                   if preannotate else "")
            ctx.log(f"cycle {cycle}: exported {len(task.images)} images for {fmt_.version}{pre} into {out_dir}")
            ctx.log("open / upload: " + " ".join(shlex.quote(f) for f in result["files"]))
        ctx.wait()
    return result


# ------------------------------------------------------------------------------------- import
def _pool_sources(state: dict, cycle: int) -> set[str]:
    pool = state.get("pool") or {}
    return {s for c, s in zip(pool.get("cycles", []), pool.get("sources", [])) if c == cycle}


def run_import(cfg: Config, *, cycle: int, path: str | Path, fmt: str = "auto", allow_partial: bool = False,
               progress: bool = True, log=print) -> dict:
    """Store the annotators' labels of cycle ``cycle`` for the human oracle.

    Args:
        path: the annotation file (or LabelMe folder, CVAT zip, ...) the tool wrote.
        fmt: a format name, or ``auto`` to detect it from the content.
        allow_partial: accept an answer that misses some of the cycle's images; those go back to
            the unlabeled pool. Without it such an import is refused and nothing is stored.

    Returns:
        The stored ``labels.json`` record plus ``"status"``: ``"imported"``, ``"replaced"`` (a
        different file before the label step) or ``"already imported"`` (nothing changed).

    Raises:
        AlodError: no such cycle, an unreadable file, missing images without ``allow_partial``, no
            image answered, or a different file after the cycle's label step.
    """
    path = Path(path)
    with open_stage(cfg, "annotate", progress=progress, log=log) as ctx:
        ctx.ensure_dataset()
        if cfg.cycles.oracle != "human":
            ctx.log(f"note: this config has cycles.oracle={cfg.cycles.oracle!r}; the labels are used only when the "
                    "cycles run with --set cycles.oracle=human")
        state = _read_cycles_state(ctx)
        rec = _cycle_record(ctx, state, cycle)
        sha = annotation_sha256(path)  # also: a clear error when the path does not exist
        fmt_ = detect_format(path) if fmt == "auto" else get_format(fmt)
        source = f"{fmt_.name}:{sha[:16]}"
        previous = read_labels_record(ctx.layout, cycle)
        _check_replaceable(ctx, state, rec, cycle=cycle, path=path, source=source, previous=previous)
        if previous is not None and stored_labels_intact(ctx.layout, cycle, previous) and previous["sha256"] == sha:
            ctx.log(f"cycle {cycle}: {path} is already imported ({source}); nothing changed")
            return {**previous, "status": "already imported"}
        names = list(rec["selected"])
        train = ctx.load_split("train")
        result, counts = _read_answer(ctx, fmt_, path, _task(ctx, train, names, cycle), cycle=cycle)
        labeled, missing = _answered(path, names, result, cycle=cycle, fmt_name=fmt_.name,
                                     allow_partial=allow_partial, where=_problems_note(ctx, cycle))
        index = _labels_index(train, labeled, result, path=path)
        record = {"tool": fmt_.name, "version": fmt_.version, "path": str(path.resolve()), "sha256": sha,
                  "source": source, "images_labeled": labeled, "images_returned": missing,
                  "boxes": int(index.num_boxes), "problems": counts, "allow_partial": allow_partial}
        status = "replaced" if previous is not None and previous.get("sha256") != sha else "imported"
        if ctx.is_main:
            record = store_labels(ctx.layout, cycle, index, record)
        ctx.wait()
        if status == "replaced":
            ctx.log(f"cycle {cycle}: replaced the previous import ({previous.get('path')}, {previous.get('source')})")
        back = f"; {len(missing)} image(s) returned to the unlabeled pool" if missing else ""
        problems = sum(counts.values())
        ctx.log(f"cycle {cycle}: imported {len(labeled)} images with {index.num_boxes} boxes from {path} "
                f"({source}){back}; {problems} problem(s)"
                + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}), {_problems_note(ctx, cycle)}"
                   if problems else ""))
        return {**record, "status": status}


def _problems_note(ctx: StageContext, cycle: int) -> str:
    return f"problems listed in {ctx.layout.cycle_import_problems(cycle)}"


def _check_replaceable(ctx: StageContext, state: dict, rec: dict, *, cycle: int, path: Path, source: str,
                       previous: dict | None) -> None:
    """Refuse a different file once the cycle's label step has put the previous labels in the pool."""
    if rec["step"] == "selected":
        return
    joined = _pool_sources(state, cycle) or ({previous["source"]} if previous else set())
    if source not in joined:
        was = (f" from {previous['path']} ({previous['source']})" if previous
               else f" ({', '.join(sorted(joined))})")
        raise AlodError(
            f"cycle {cycle}'s labels joined the pool at its label step{was} and the cycle has reached "
            f"'{rec['step']}'; {path} ({source}) is a different file and cannot replace them. Correct "
            f"those images in a new run, or delete {ctx.layout.cycles_dir} to start the cycles over")


def _read_answer(ctx: StageContext, fmt_, path: Path, task, *, cycle: int):
    """Read the tool's file against ``task``; write and log its problems. Returns the
    :class:`~alod.annotate.core.ImportResult` and the problem count per kind."""
    result = fmt_.read(path, task)
    problems = result.problems
    lines = [json.dumps({"file": p.file, "where": p.where, "kind": p.kind, "detail": p.detail},
                        ensure_ascii=False) for p in problems]
    if ctx.is_main:
        atomic_write_text(ctx.layout.cycle_import_problems(cycle), "".join(x + "\n" for x in lines))
    for p in problems:
        ctx.log(f"problem: {p}")
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return result, counts


def _answered(path: Path, names: list[str], result, *, cycle: int, fmt_name: str, allow_partial: bool,
              where: str) -> tuple[list[str], list[str]]:
    """``(labeled, missing)``: the cycle's images the file answers, and those it does not.

    Raises:
        AlodError: the file names images that were not exported, answers none, or misses some
            without ``allow_partial``.
    """
    selected = set(names)
    strays = [n for n in result.boxes if n not in selected]
    if strays:  # the formats refuse these already; never store a name the cycle did not export
        raise AlodError(f"{path}: the {fmt_name} reader returned images that were not exported: {strays[:3]}")
    missing = [n for n in names if n not in result.boxes]
    if len(missing) == len(names):
        raise AlodError(f"{path}: none of cycle {cycle}'s {len(names)} images is answered ({where}); "
                        f"nothing was imported. Is it the {fmt_name} file for this cycle?")
    if missing and not allow_partial:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise AlodError(f"{path}: {len(missing)} of cycle {cycle}'s {len(names)} images have no answer: {shown}; "
                        "nothing was imported. Label them and import again, or pass --allow-partial to import "
                        f"the others and return these to the unlabeled pool ({where})")
    return [n for n in names if n in result.boxes], missing


def _labels_index(train, labeled: list[str], result, *, path: Path) -> DetectionIndex:
    """The imported labels of ``labeled`` as a :class:`~alod.data.index.DetectionIndex` (sizes and
    classes from ``train``; nothing ignored)."""
    pos = train.name_to_index()
    return DetectionIndex.from_lists(
        image_root=train.image_root, names=labeled,
        widths=[int(train.widths[pos[n]]) for n in labeled], heights=[int(train.heights[pos[n]]) for n in labeled],
        boxes_per_image=[result.boxes[n] for n in labeled], labels_per_image=[result.labels[n] for n in labeled],
        classes=tuple(train.classes), source=str(path.resolve()),
    )
