"""The schedule a small config writes is pinned, so a refactor cannot change what the pipeline computes.

The hashes were taken from the code before the restructuring (commit 8d98e89) with the same tiny
config and torch 2.14.1 (CPU). The ``checkpoint`` entry is left out: it holds the checkpoint's path
and sha256, and the checkpoint embeds the resolved config, which gained keys since. Everything else
(the dataset fingerprint, every score and rank, the batches and each cycle's images, the strategy
and sizes) must stay byte-identical.

``random`` runs no model, so one hash holds everywhere. ``entropy`` trains a scorer, and the CPU's
vector kernels (torch's CPU capability: AVX512 against AVX2) change low-order bits of the trained
weights and so of the scores: its hash is pinned per capability, each taken from the old code on
that kind of machine (AVX512 with torch's default threads on 2 cores; AVX2 on 2026-11-25, commit
d1198cc, with one torch thread, which the test sets there). On a CPU without a recorded hash the
test says so and skips: rerun the old commit there to add one before suspecting the code.
"""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from alod.config import load_config
from alod.schedule import dumps_schedule
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod_testing import write_tiny_config

RANDOM = "de9d5ba66d28ee34f4891f65feb29f7a4cb58c70f274e145402eaa744a095850"
# CPU capability -> (torch threads to run with, None = torch's default; the hash)
ENTROPY = {
    "AVX512": (None, "046c308a0b08e57a80a370f5e554da93cec7351e6e5cc559cce732668e90a2fd"),
    "AVX2": (1, "a968f069365dccdbb87678143ed46f30dd66cc86d6494624f4fdcd1b6418d360"),
}


def _digest(path) -> str:
    schedule = json.loads(path.read_text())
    schedule.pop("checkpoint")
    return hashlib.sha256(dumps_schedule(schedule).encode()).hexdigest()


def _schedule_digest(tmp_path, strategy: str) -> str:
    quiet = lambda *_: None  # noqa: E731
    params = {"entropy": {"aggregate": "sum"}} if strategy == "entropy" else {}
    cfg = load_config(write_tiny_config(tmp_path, score={"strategy": strategy, "params": params}))
    ckpt = run_pretrain(cfg, progress=False, log=quiet) if strategy != "random" else None
    return _digest(run_scoring(cfg, ckpt=ckpt, progress=False, log=quiet))


def test_random_schedule_bytes_are_pinned(tmp_path):
    assert _schedule_digest(tmp_path, "random") == RANDOM


def test_entropy_schedule_bytes_are_pinned_for_this_cpu(tmp_path):
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ENTROPY:
        pytest.skip(f"no entropy schedule hash recorded for CPU capability {capability} (recorded: "
                    f"{', '.join(ENTROPY)}); run this test's config on the old commit here to add one")
    threads, pinned = ENTROPY[capability]
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        assert _schedule_digest(tmp_path, "entropy") == pinned
    finally:
        torch.set_num_threads(before)
