"""The schedule a small config writes is pinned, so a refactor cannot change what the pipeline computes.

The hashes were taken from the code before the restructuring (commit 8d98e89) with the same tiny
config, on this project's 2-core x86 machines with torch 2.14.1 (CPU). The ``checkpoint`` entry is
left out: it holds the checkpoint's path and sha256, and the checkpoint embeds the resolved config,
which gained keys since. Everything else (the dataset fingerprint, every score and rank, the batches
and each cycle's images, the strategy and sizes) must stay byte-identical. A different CPU or torch
build can change low-order bits of the scores and so these hashes: then rerun this test on the old
commit there before suspecting the code.
"""
from __future__ import annotations

import hashlib
import json

import pytest

from alod.config import load_config
from alod.schedule import dumps_schedule
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod_testing import write_tiny_config

PINNED = {
    "entropy": "046c308a0b08e57a80a370f5e554da93cec7351e6e5cc559cce732668e90a2fd",
    "random": "de9d5ba66d28ee34f4891f65feb29f7a4cb58c70f274e145402eaa744a095850",
}


def _digest(path) -> str:
    schedule = json.loads(path.read_text())
    schedule.pop("checkpoint")
    return hashlib.sha256(dumps_schedule(schedule).encode()).hexdigest()


@pytest.mark.parametrize("strategy", sorted(PINNED))
def test_tiny_schedule_bytes_are_pinned(tmp_path, strategy):
    quiet = lambda *_: None  # noqa: E731
    params = {"entropy": {"aggregate": "sum"}} if strategy == "entropy" else {}
    cfg = load_config(write_tiny_config(tmp_path, score={"strategy": strategy, "params": params}))
    ckpt = run_pretrain(cfg, progress=False, log=quiet) if strategy != "random" else None
    out = run_scoring(cfg, ckpt=ckpt, progress=False, log=quiet)
    assert _digest(out) == PINNED[strategy]
