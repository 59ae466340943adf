"""Step 2 of a cycle, *label*: who provides the labels of the selected images.

An oracle is chosen by name (``cycles.oracle`` in the YAML) from :data:`ORACLES`. Its factory is
called with keyword arguments (``ctx``: the stage context; ``train``: the training index) and returns
an object with:

* ``label(cycle, images) -> Labels | None``: the labels of ``images``, or ``None`` when they are not
  available yet (a human oracle exports the images and waits for an import; the cycle loop then
  stops after recording the selection and continues from there when rerun).
* ``training_index(pool) -> DetectionIndex``: the labeled pool's images with their labels, in the
  index format the readers produce, so training cannot tell where labels came from.

Built: ``simulated`` (the dataset's own labels are revealed, as in the original project). A human
oracle (export to an annotation tool, import the answers) is another factory here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from alod.pool import LabeledPool
from alod.utils import AlodError


@dataclass(frozen=True)
class Labels:
    """Images whose labels are now known, and where the labels came from (recorded per image)."""

    names: list[str]
    source: str


class Oracle(Protocol):
    def label(self, cycle: int, images: list[str]) -> Labels | None: ...

    def training_index(self, pool: LabeledPool): ...


ORACLES: dict[str, Callable[..., Oracle]] = {}


def register_oracle(name: str):
    def deco(factory):
        ORACLES[name] = factory
        return factory

    return deco


def build_oracle(name: str, **kwargs) -> Oracle:
    if name not in ORACLES:
        raise AlodError(f"unknown oracle {name!r}; choose one of {', '.join(sorted(ORACLES))}")
    return ORACLES[name](**kwargs)


@register_oracle("simulated")
class SimulatedOracle:
    """Labels come from the dataset's label file (source ``"dataset"``)."""

    def __init__(self, *, ctx=None, train):
        self.train = train
        self._pos = train.name_to_index()

    def label(self, cycle: int, images: list[str]) -> Labels:
        return Labels(names=list(images), source="dataset")

    def training_index(self, pool: LabeledPool):
        # Sorted dataset positions: the training set's order does not depend on the order of cycles.
        positions = np.array(sorted(self._pos[x] for x in pool.names), dtype=np.int64)
        return self.train.subset(positions)
