"""Step 1 of a cycle, *select*: which unlabeled images go to the oracle next.

A selector is chosen by name (``cycles.selector`` in the YAML) from :data:`SELECTORS`. Its factory
is called once per run of the cycles stage with keyword arguments (``ctx``: the stage context,
:class:`alod.stage.StageContext`; ``train``: the training index; ``schedule_file``: an explicit
schedule path or ``None``) and returns an object with:

* ``identity() -> dict``: recorded in ``state.json``; resuming under another identity (another
  schedule, say) is refused instead of mixing two runs.
* ``num_cycles() -> int``: how many cycles it can serve.
* ``select(cycle, pool) -> Selection``: the images of cycle ``cycle`` (1-based) given the pool so
  far. It must not return images already in the pool.

Built: ``precomputed`` (the schedule written by ``make_batches.py``). An adaptive selector (re-score
the unlabeled images with the previous cycle's model) or a random baseline is one more factory
here: the cycle loop does not change.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from alod.pool import LabeledPool
from alod.utils import AlodError, sha256_file


@dataclass(frozen=True)
class Selection:
    """The images a cycle adds and the rule that chose them (the schedule's ``"random"`` or ``"top"``)."""

    images: list[str]
    rule: str


class Selector(Protocol):
    def identity(self) -> dict: ...

    def num_cycles(self) -> int: ...

    def select(self, cycle: int, pool: LabeledPool) -> Selection: ...


SELECTORS: dict[str, Callable[..., Selector]] = {}


def register_selector(name: str):
    def deco(factory):
        SELECTORS[name] = factory
        return factory

    return deco


def build_selector(name: str, **kwargs) -> Selector:
    if name not in SELECTORS:
        raise AlodError(f"unknown selector {name!r}; choose one of {', '.join(sorted(SELECTORS))}")
    return SELECTORS[name](**kwargs)


@register_selector("precomputed")
class PrecomputedSelector:
    """Cycle ``n`` takes the images the schedule lists for it (``schedule.json``, see
    :mod:`alod.schedule`). The schedule must have been made for this training set."""

    def __init__(self, *, ctx, train, schedule_file: str | Path | None = None):
        from alod.schedule import check_schedule_matches, load_schedule

        self.path = Path(schedule_file) if schedule_file else ctx.layout.schedule
        self.schedule = load_schedule(self.path)
        check_schedule_matches(self.schedule, train.fingerprint(), path=self.path)
        self.sha256 = sha256_file(self.path)
        self._known = set(train.name_to_index())
        self._by_cycle = {int(c["cycle"]): c for c in self.schedule["cycles"]}

    def identity(self) -> dict:
        return {"name": "precomputed", "schedule": str(self.path), "schedule_sha256": self.sha256}

    def num_cycles(self) -> int:
        return len(self.schedule["cycles"])

    def select(self, cycle: int, pool: LabeledPool) -> Selection:
        entry = self._by_cycle.get(cycle)
        if entry is None:
            raise AlodError(f"schedule {self.path} has no cycle {cycle} (it has {self.num_cycles()})")
        missing = [x for x in entry["images"] if x not in self._known]
        if missing:
            raise AlodError(f"schedule cycle {cycle} names images not in the training set: {missing[:3]}")
        return Selection(images=list(entry["images"]), rule=str(entry["rule"]))
