"""Step 2 of a cycle, *label*: who provides the labels of the selected images.

An oracle is chosen by name (``cycles.oracle`` in the YAML) from :data:`ORACLES`. Its factory is
called with keyword arguments (``ctx``: the stage context; ``train``: the training index) and returns
an object with:

* ``label(cycle, images) -> Labels | None``: the labels of ``images``, or ``None`` when they are not
  available yet (a human oracle exports the images and waits for an import; the cycle loop then
  stops after recording the selection and continues from there when rerun).
* ``training_index(pool) -> DetectionIndex``: the labeled pool's images with their labels, in the
  index format the readers produce, so training cannot tell where labels came from.

* ``Labels.work``: what labeling the images cost, when the oracle counts it (``simulated_boxes``):
  the cycles stage records it in the cycle's record in ``state.json`` (``label_work``).

Built:

* ``simulated``: the dataset's own labels are revealed, as in the original project.
* ``simulated_boxes``: box-level labels. The labels are the same as ``simulated``'s (training is
  identical); what it adds is the count of the annotator's work. For each selected image of cycle
  ``n``, cycle ``n - 1``'s detector (its checkpoint) predicts boxes; those with a score >=
  ``cycles.accept_score`` (default 0.5, :data:`alod.cycle.actions.ACCEPT`) stand as
  pre-annotations, and the simulated annotator turns them into the ground truth by keeping, fixing,
  deleting and drawing boxes (:func:`alod.cycle.actions.annotator_actions`). Cycle 1 has no model:
  every ground-truth box is drawn. The cycle's totals (:data:`alod.cycle.actions.ACTION_KEYS`:
  boxes, accepted, kept, fix, delete, draw, actions) go to the cycle's record in ``state.json``
  (``label_work``) and, with the per-image counts, the acceptance score and the checkpoint, to
  ``cycle_NN/label_work.json`` (:meth:`alod.layout.RunLayout.cycle_label_work`). That file is
  written atomically before the label step is recorded, and a rerun reuses it when it was made for
  the same images, acceptance score and checkpoint: a crash in between neither recounts nor loses
  a cycle's work. Cost: one inference pass over the cycle's images. ``alod compare`` counts the
  same actions after the fact for any oracle (``cycles/label_work.json``).
* ``human``: ``alod export`` hands the selected images to an annotation tool, ``alod import`` stores
  the answers in ``runs/<run>/cycles/cycle_NN/labels.{npz,json}``, and the oracle reads them; see
  :class:`HumanOracle`. The stored-labels files are defined here (:func:`store_labels`,
  :func:`read_labels_record`, :func:`load_stored_labels`), so the annotation stage that writes them
  and the oracle that reads them share one definition without importing each other.

:data:`DATASET_ORACLES` names the oracles whose labels are the dataset's (what the selectors that
read the dataset's box counts need).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from alod.cycle.actions import ACCEPT, add_actions, annotator_actions
from alod.cycle.pool import LabeledPool
from alod.data.index import DetectionIndex
from alod.data.sources import training_split_labeled
from alod.utils import AlodError, Registry, atomic_write_json, sha256_file


@dataclass(frozen=True)
class Labels:
    """Images whose labels are now known, where the labels came from (recorded per image) and, when
    the oracle counts it, what labeling them cost (``work``: :data:`alod.cycle.actions.ACTION_KEYS`
    totals, recorded in the cycle's record)."""

    names: list[str]
    source: str
    work: dict | None = None


class Oracle(Protocol):
    def label(self, cycle: int, images: list[str]) -> Labels | None: ...

    def training_index(self, pool: LabeledPool): ...


ORACLES: Registry[Callable[..., Oracle]] = Registry("oracle")
#: Oracles that reveal the dataset's own labels (pool source ``"dataset"``).
DATASET_ORACLES = ("simulated", "simulated_boxes")


def build_oracle(name: str, **kwargs) -> Oracle:
    """The oracle ``name`` built with ``kwargs`` (``ctx``, ``train``)."""
    return ORACLES.get(name)(**kwargs)


def check_oracle(name: str) -> None:
    """Refuse an unknown ``cycles.oracle`` when the config is checked, before any work."""
    ORACLES.get(name, where="config: cycles.oracle")


@ORACLES.register("simulated")
class SimulatedOracle:
    """Labels come from the dataset's label file (source ``"dataset"``)."""

    def __init__(self, *, ctx=None, train):
        if ctx is not None:
            if not training_split_labeled(ctx.cfg.data):
                raise AlodError(f"cycles.oracle={ctx.cfg.cycles.oracle} reveals the dataset's labels, and data.kind="
                                f"{ctx.cfg.data.kind} has no training labels to reveal; use cycles.oracle=human "
                                "(alod export / alod import)")
        self.train = train
        self._pos = train.name_to_index()

    def label(self, cycle: int, images: list[str]) -> Labels:
        return Labels(names=list(images), source="dataset")

    def training_index(self, pool: LabeledPool):
        # Sorted dataset positions: the training set's order does not depend on the order of cycles.
        positions = np.array(sorted(self._pos[x] for x in pool.names), dtype=np.int64)
        return self.train.subset(positions)


#: ``cycle_NN/label_work.json``: what the ``simulated_boxes`` oracle counted for a cycle.
LABEL_WORK_FORMAT = "alod.cycle-label-work/1"


@ORACLES.register("simulated_boxes")
class SimulatedBoxesOracle(SimulatedOracle):
    """The dataset's labels, and the annotator's work against pre-annotations (module docstring).

    ``predict(cycle, positions) -> list[dict] | None``: the detections (``boxes float[N, 4]``,
    ``labels int[N]``, ``scores float[N]``) of the model that pre-annotates cycle ``cycle`` on the
    training images ``positions``, ``None`` when there is none. Default: cycle ``cycle - 1``'s
    checkpoint (:func:`alod.cycle.scorer.checkpoint_model`, :func:`alod.engine.predict`); cycle 1:
    ``None``. Tests inject their own. ``ctx=None``: nothing is written (counting only).
    """

    def __init__(self, *, ctx=None, train, predict: Callable | None = None, accept: float | None = None):
        super().__init__(ctx=ctx, train=train)
        self.ctx = ctx
        self.accept = float(accept if accept is not None else ctx.cfg.cycles.accept_score if ctx else ACCEPT)
        self.predict = predict or self._predict_with_checkpoint

    def label(self, cycle: int, images: list[str]) -> Labels:
        return Labels(names=list(images), source="dataset", work=self.label_work(cycle, images)["totals"])

    def _model(self, cycle: int):
        """The checkpoint that pre-annotates cycle ``cycle`` (``None``: cycle 1, or no run folder)."""
        return self.ctx.layout.cycle_checkpoint(cycle - 1) if cycle > 1 and self.ctx is not None else None

    def _predict_with_checkpoint(self, cycle: int, positions: list[int]):
        from alod.cycle.scorer import checkpoint_model  # why: keeps torch out of config checks
        from alod.engine import predict  # why: (same)

        ckpt = self._model(cycle)
        if ckpt is None:
            return None
        ctx, cfg = self.ctx, self.ctx.cfg
        return predict(checkpoint_model(ctx, self.train, ckpt), ctx.dataset(self.train), indices=positions,
                       batch_size=cfg.train.eval_batch_size, accelerator=ctx.accelerator, amp=cfg.train.amp,
                       desc=f"cycle {cycle} pre-annotate", progress=ctx.progress)

    def label_work(self, cycle: int, images: list[str]) -> dict:
        """Cycle ``cycle``'s ``label_work.json`` content: ``format``, ``cycle``, ``images``, ``accept``,
        ``model`` and ``model_sha256`` (``None`` for cycle 1), ``per_image`` (one
        :data:`~alod.cycle.actions.ACTION_KEYS` dict per image, in ``images``' order) and ``totals``.
        Read back when the file was made for the same inputs; else counted and written (main process)."""
        model = self._model(cycle)
        key = {"format": LABEL_WORK_FORMAT, "cycle": int(cycle), "images": list(images), "accept": self.accept,
               "model": None if model is None else str(model),
               "model_sha256": sha256_file(model) if model is not None and model.is_file() else None}
        path = self.ctx.layout.cycle_label_work(cycle) if self.ctx is not None else None
        # Every process decides alike: the main process writes the file only after the prediction,
        # which every process joins, so no process can see a file another is about to write.
        old = _read_json(path) if path is not None else None
        if isinstance(old, dict) and {k: old.get(k) for k in key} == key and "totals" in old:
            return old
        positions = [self._pos[x] for x in images]
        dets = self.predict(cycle, positions)
        per_image = []
        for k, i in enumerate(positions):
            gt, gl, gi = self.train.annotations(i)
            d = dets[k] if dets is not None else {"boxes": np.zeros((0, 4)), "labels": [], "scores": []}
            per_image.append(annotator_actions(gt, gl, gi, d["boxes"], d["labels"], d["scores"], accept=self.accept))
        out = {**key, "per_image": per_image, "totals": add_actions(per_image)}
        if path is not None and self.ctx.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, out)
        return out


def _read_json(path) -> object | None:
    """The JSON at ``path``, or ``None`` when it is missing or unreadable (then it is made again)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------ the human oracle
#: ``labels.json``: what ``alod import`` stored for a cycle.
LABELS_FORMAT = "alod.human_labels/1"


@dataclass(frozen=True)
class StoredLabels:
    """A cycle's imported labels: ``record`` (``labels.json``) and ``index`` (``labels.npz``, one
    entry per labeled image, in the readers' index format)."""

    record: dict
    index: DetectionIndex


def read_labels_record(layout, cycle: int) -> dict | None:
    """Cycle ``cycle``'s ``labels.json`` (``None`` when nothing was imported), unchecked against
    ``labels.npz``. Keys: ``format``, ``cycle``, ``tool``, ``path``, ``sha256``, ``source``,
    ``images_labeled``, ``images_returned``, ``boxes``, ``problems`` (count per kind),
    ``allow_partial``, ``labels_sha256`` (of ``labels.npz``), and from imports made since it was
    added ``edits`` (what annotators changed against the exported pre-annotations, per image and in
    total: :func:`alod.stages.annotation.import_edits`)."""
    path = layout.cycle_labels_record(cycle)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AlodError(f"{path} cannot be read ({e}); it is written atomically, so something else changed it. "
                        f"Import the cycle's labels again (alod import --cycle {cycle} ...)") from None
    if not isinstance(record, dict) or record.get("format") != LABELS_FORMAT:
        raise AlodError(f"{path}: not an {LABELS_FORMAT} file")
    return record


def stored_labels_intact(layout, cycle: int, record: dict) -> bool:
    """Whether ``labels.npz`` is the file ``record`` was written with (an import killed between the
    two writes leaves a new ``.npz`` beside the old record)."""
    npz = layout.cycle_labels(cycle)
    return npz.is_file() and sha256_file(npz) == record.get("labels_sha256")


def load_stored_labels(layout, cycle: int) -> StoredLabels | None:
    """Cycle ``cycle``'s imported labels, or ``None`` when nothing was imported.

    Raises:
        AlodError: the two files do not belong together (rerun the import).
    """
    record = read_labels_record(layout, cycle)
    if record is None:
        return None
    if not stored_labels_intact(layout, cycle, record):
        raise AlodError(f"{layout.cycle_labels(cycle)} is missing or does not match "
                        f"{layout.cycle_labels_record(cycle)} "
                        f"(an import was interrupted?); run the import again: alod import --cycle {cycle} "
                        f"{record.get('path')}")
    return StoredLabels(record=record, index=DetectionIndex.load(layout.cycle_labels(cycle)))


def store_labels(layout, cycle: int, index, record: dict) -> dict:
    """Write ``labels.npz`` (``index``) and then ``labels.json`` (``record`` plus the ``.npz``'s
    sha256), each atomically; the record is written last, so a kill in between leaves the previous
    record, which then no longer matches (see :func:`stored_labels_intact`). Returns the record."""
    npz = layout.cycle_labels(cycle)
    npz.parent.mkdir(parents=True, exist_ok=True)
    index.save(npz)
    record = {**record, "format": LABELS_FORMAT, "cycle": int(cycle), "labels_sha256": sha256_file(npz)}
    atomic_write_json(layout.cycle_labels_record(cycle), record)
    return record


@ORACLES.register("human")
class HumanOracle:
    """Labels come from annotators, through ``alod export`` and ``alod import``.

    ``label(cycle, images)`` returns ``None`` until ``alod import`` has stored the cycle's labels
    (the loop then stops after selection; rerunning ``main_sample.py`` continues from the label
    step). Then it returns the images the import labeled, with the source ``"<tool>:<sha256[:16]>"``
    of the imported file; images the import accepted as missing (``--allow-partial``) are left out,
    so they go back to the unlabeled pool.

    ``training_index(pool)`` holds the pool's images with their imported labels (every cycle's
    ``labels.npz``), in the readers' format (``float64`` boxes, labels ``1..C``, nothing ignored,
    the dataset's classes, image root and sizes), sorted by dataset position like the simulated
    oracle's, so training cannot tell them from dataset labels. Pool images whose source is
    ``"dataset"`` (cycles labeled by the simulated oracle before the run switched to ``human``)
    keep the dataset's labels: the pool records where each image's labels came from.
    """

    def __init__(self, *, ctx, train):
        self.layout = ctx.layout
        self.train = train
        self._pos = train.name_to_index()

    def label(self, cycle: int, images: list[str]) -> Labels | None:
        stored = load_stored_labels(self.layout, cycle)
        if stored is None:
            return None
        rec = stored.record
        labeled, returned = list(rec["images_labeled"]), list(rec["images_returned"])
        if sorted(labeled + returned) != sorted(images):
            raise AlodError(f"{self.layout.cycle_labels_record(cycle)} was imported for other images than cycle "
                            f"{cycle}'s selection; import the cycle's labels again (alod import --cycle {cycle} ...)")
        keep = set(labeled)
        return Labels(names=[x for x in images if x in keep], source=str(rec["source"]))

    def training_index(self, pool: LabeledPool):
        train = self.train
        stored: dict[int, tuple[StoredLabels, dict[str, int]]] = {}
        names, widths, heights, boxes, labels, ignore = [], [], [], [], [], []
        for name, cycle, source in sorted(zip(pool.names, pool.cycles, pool.sources), key=lambda t: self._pos[t[0]]):
            i = self._pos[name]
            if source == "dataset":
                b, l, ig = train.annotations(i)
            else:
                if cycle not in stored:
                    got = load_stored_labels(self.layout, cycle)
                    if got is None:
                        raise AlodError(f"cycle {cycle}'s images are in the pool (source {source!r}) but "
                                        f"{self.layout.cycle_labels_record(cycle)} is gone; import the same file "
                                        f"again (alod import --cycle {cycle} ...)")
                    if tuple(got.index.classes) != tuple(train.classes):
                        raise AlodError(f"{self.layout.cycle_labels(cycle)} was imported with the classes "
                                        f"{list(got.index.classes)}, not the dataset's {list(train.classes)}")
                    stored[cycle] = (got, got.index.name_to_index())
                got, where = stored[cycle]
                if got.record.get("source") != source or name not in where:
                    raise AlodError(f"{self.layout.cycle_labels_record(cycle)} (source {got.record.get('source')!r}) "
                                    f"is not the import that labeled {name!r} (source {source!r}); import that file "
                                    "again, or start the cycles over")
                b, l, _ = got.index.annotations(where[name])
                ig = np.zeros(len(b), dtype=bool)
            names.append(name)
            widths.append(int(train.widths[i]))
            heights.append(int(train.heights[i]))
            boxes.append(b)
            labels.append(l)
            ignore.append(ig)
        return DetectionIndex.from_lists(
            image_root=train.image_root, names=names, widths=widths, heights=heights, boxes_per_image=boxes,
            labels_per_image=labels, ignore_per_image=ignore, classes=train.classes,
            source=f"imported labels under {self.layout.cycles_dir}")
