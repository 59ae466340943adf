"""The labeled pool: which images are labeled, since which cycle, and where their labels came from."""
from __future__ import annotations

from dataclasses import dataclass, field

from alod.utils import AlodError


@dataclass
class LabeledPool:
    """Labeled images in the order they were added, with the cycle and label source of each.

    ``sources[i]`` says where image ``names[i]``'s labels came from: ``"dataset"`` for the simulated
    oracle (the dataset's own labels revealed); a human oracle records its tool and file.
    """

    names: list[str] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in set(self.names)

    def add(self, names: list[str], *, cycle: int, source: str = "dataset") -> None:
        present = set(self.names)
        dup = [n for n in names if n in present]
        if dup or len(set(names)) != len(names):
            raise AlodError(f"cycle {cycle}: images already labeled or repeated: {dup[:3]}")
        self.names += list(names)
        self.cycles += [int(cycle)] * len(names)
        self.sources += [source] * len(names)

    def added_in(self, cycle: int) -> list[str]:
        return [n for n, c in zip(self.names, self.cycles) if c == cycle]

    def state_dict(self) -> dict:
        return {"names": list(self.names), "cycles": list(self.cycles), "sources": list(self.sources)}

    def load_state_dict(self, state: dict) -> None:
        self.names = list(state["names"])
        self.cycles = [int(c) for c in state["cycles"]]
        self.sources = list(state["sources"])
