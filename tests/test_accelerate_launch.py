"""Two real CPU processes under ``accelerate launch``: pretraining, scoring, and the same schedule.

``accelerate launch --multi_gpu --num_processes 2`` on a machine without a GPU, with the script
building ``Accelerator(cpu=True)``, gives a real 2-process gloo group (GUIDE section 5).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from alod.config import load_config
from alod_testing import REPO, run_layout, subprocess_env, write_tiny_config

# Two real processes (gloo) each starting torch and Accelerate: about 35 s on 2 cores.
pytestmark = pytest.mark.slow


def _launch(script: str, *args, nproc: int = 2):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(REPO / script), *args]
    return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launch")
    cfg_path = write_tiny_config(tmp)
    r = _launch("train_part_entropy.py", "--config", str(cfg_path), "--no-progress")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return tmp, cfg_path, r


def test_two_process_pretraining(launched):
    tmp, cfg_path, r = launched
    cfg = load_config(cfg_path)
    import torch

    ck = torch.load(run_layout(cfg).root / "pretrain" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 0
    # 25 images, batch 4 per process, 2 processes -> ceil(25 / 8) = 4 steps per epoch.
    assert ck["total_steps"] == 4
    part = json.loads((run_layout(cfg).root / "pretrain" / "partition.json").read_text())
    assert len(part["images"]) == 25
    # only the main process logged the epoch
    assert (r.stdout + r.stderr).count("pretrain epoch 1:") == 1


def test_same_schedule_from_one_and_two_processes(launched):
    tmp, cfg_path, _ = launched
    cfg = load_config(cfg_path)
    ckpt = run_layout(cfg).root / "pretrain" / "checkpoint_last.pt"
    r2 = _launch("make_batches.py", "--config", str(cfg_path), "--ckpt", str(ckpt), "--no-progress")
    assert r2.returncode == 0, r2.stderr[-4000:]
    two = (run_layout(cfg).root / "schedule.json").read_bytes()
    n_shards = len(list((run_layout(cfg).root / "scores").glob("*/shard_*.npz")))
    assert n_shards == 4  # 36 images in shards of 10, written by both processes

    shutil.rmtree(run_layout(cfg).root / "scores")
    (run_layout(cfg).root / "schedule.json").unlink()
    r1 = subprocess.run([sys.executable, str(REPO / "make_batches.py"), "--config", str(cfg_path), "--ckpt", str(ckpt),
                         "--no-progress"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-4000:]
    one = (run_layout(cfg).root / "schedule.json").read_bytes()
    assert one == two
