"""SIGKILL during the long jobs, then the same command again: the results equal an uninterrupted run.

GUIDE "Run state": every long job (pretraining, scoring, cycles) writes its progress atomically and
a rerun continues from the last completed unit (epoch, score shard, cycle) with the same results.
The cycles have their kill test in tests/test_pipeline_e2e.py; these cover pretraining (killed
after its first epoch checkpoint) and scoring (killed after its first shard). Each job runs as a
subprocess of its script on the tiny config; the reference runs as a subprocess too, so both sides
use the same thread count (OMP_NUM_THREADS=1) and their floating-point results can be compared
exactly. The moment of the kill varies by a seeded random delay after the trigger file appears.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alod.config import load_config
from alod.models import load_checkpoint
from alod_testing import REPO, run_layout, subprocess_env, write_tiny_config

pytestmark = pytest.mark.slow  # six subprocess runs of the tiny config: about 1 minute on 2 cores

PRETRAIN = {"epochs": 3}
SCORE = {"shard_size": 4, "batch_size": 2}  # 36 images -> 9 shards


def _script(script: str, cfg_path: Path, *args: str) -> list[str]:
    return [sys.executable, str(REPO / script), "--config", str(cfg_path), "--no-progress", *args]


def _run(cmd: list[str]) -> str:
    """Run ``cmd`` to completion; its stdout."""
    r = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _kill_when(cmd: list[str], trigger, *, delay: float, timeout: float = 300) -> None:
    """Start ``cmd``, wait until ``trigger()`` is true, sleep ``delay`` s, SIGKILL it (it must still run)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + timeout
        while not trigger() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert trigger(), "trigger never appeared: " + (proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "")
        time.sleep(delay)
        assert proc.poll() is None, "the job finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _config(tmp: Path, data: Path, name: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    return write_tiny_config(folder, data_root=data, pretrain=PRETRAIN, score=SCORE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted pretraining and scoring run (subprocesses); the generated data is shared."""
    tmp = tmp_path_factory.mktemp("kill_ref")
    data = tmp / "data"
    cfg_path = _config(tmp, data, "ref")
    _run(_script("train_part_entropy.py", cfg_path))
    layout = run_layout(load_config(cfg_path))
    _run(_script("make_batches.py", cfg_path, "--ckpt", str(layout.pretrain_checkpoint)))
    return data, layout


def test_pretrain_killed_after_first_epoch_resumes_to_the_same_weights(reference, tmp_path):
    data, ref = reference
    cfg_path = _config(tmp_path, data, "killed")
    layout = run_layout(load_config(cfg_path))
    delay = random.Random(0).uniform(0.0, 0.5)
    _kill_when(_script("train_part_entropy.py", cfg_path), layout.pretrain_checkpoint.is_file, delay=delay)
    killed = load_checkpoint(layout.pretrain_checkpoint)
    assert killed["epoch"] < PRETRAIN["epochs"] - 1 and not layout.pretrain_metrics.exists()  # killed mid-training

    out = _run(_script("train_part_entropy.py", cfg_path))
    # It continued after the last saved epoch instead of starting over.
    assert f"pretrain epoch {killed['epoch'] + 1}:" not in out and f"pretrain epoch {PRETRAIN['epochs']}:" in out, out
    a, b = load_checkpoint(layout.pretrain_checkpoint), load_checkpoint(ref.pretrain_checkpoint)
    assert a["epoch"] == b["epoch"] == PRETRAIN["epochs"] - 1
    assert a["model"].keys() == b["model"].keys()
    unequal = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not unequal, f"weights differ from the uninterrupted run: {unequal[:5]}"
    assert a["scheduler"] == b["scheduler"]
    assert json.loads(layout.pretrain_metrics.read_text()) == json.loads(ref.pretrain_metrics.read_text())
    assert layout.partition.read_bytes() == ref.partition.read_bytes()


def test_scoring_killed_after_first_shard_resumes_to_the_same_schedule(reference, tmp_path):
    data, ref = reference
    cfg_path = _config(tmp_path, data, "killed")
    layout = run_layout(load_config(cfg_path))
    # The reference's checkpoint, by the same path: the schedule records the path and its sha256.
    cmd = _script("make_batches.py", cfg_path, "--ckpt", str(ref.pretrain_checkpoint))

    def shards() -> list[Path]:
        return sorted(layout.scores_dir.glob("*/shard_*.npz"))

    delay = random.Random(1).uniform(0.0, 0.3)
    _kill_when(cmd, lambda: len(shards()) > 0, delay=delay)
    n_shards = 36 // SCORE["shard_size"]
    assert 1 <= len(shards()) < n_shards and not layout.schedule.exists()  # killed mid-scoring
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards()}

    _run(cmd)
    assert len(shards()) == n_shards
    # The finished shards are not scored again: same file, same bytes.
    assert all((p.stat().st_mtime_ns, p.read_bytes()) == before[p.name] for p in shards() if p.name in before)
    assert layout.schedule.read_bytes() == ref.schedule.read_bytes()
