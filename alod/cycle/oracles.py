"""Step 2 of a cycle, *label*: who provides the labels of the selected images.

An oracle is chosen by name (``cycles.oracle`` in the YAML) from :data:`ORACLES`. Its factory is
called with keyword arguments (``ctx``: the stage context; ``train``: the training index) and returns
an object with:

* ``label(cycle, images) -> Labels | None``: the labels of ``images``, or ``None`` when they are not
  available yet (a human oracle exports the images and waits for an import; the cycle loop then
  stops after recording the selection and continues from there when rerun).
* ``training_index(pool) -> DetectionIndex``: the labeled pool's images with their labels, in the
  index format the readers produce, so training cannot tell where labels came from.

Built: ``simulated`` (the dataset's own labels are revealed, as in the original project) and
``human`` (``alod export`` hands the selected images to an annotation tool, ``alod import`` stores
the answers in ``runs/<run>/cycles/cycle_NN/labels.{npz,json}``, and the oracle reads them; see
:class:`HumanOracle`). The stored-labels files are defined here (:func:`store_labels`,
:func:`read_labels_record`, :func:`load_stored_labels`), so the annotation stage that writes them and
the oracle that reads them share one definition without importing each other.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from alod.cycle.pool import LabeledPool
from alod.data.index import DetectionIndex
from alod.data.sources import training_split_labeled
from alod.utils import AlodError, Registry, atomic_write_json, sha256_file


@dataclass(frozen=True)
class Labels:
    """Images whose labels are now known, and where the labels came from (recorded per image)."""

    names: list[str]
    source: str


class Oracle(Protocol):
    def label(self, cycle: int, images: list[str]) -> Labels | None: ...

    def training_index(self, pool: LabeledPool): ...


ORACLES: Registry[Callable[..., Oracle]] = Registry("oracle")


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
                raise AlodError(f"cycles.oracle=simulated reveals the dataset's labels, and data.kind="
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
    ``allow_partial``, ``labels_sha256`` (of ``labels.npz``)."""
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
