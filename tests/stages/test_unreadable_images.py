"""An image that breaks during a run: strict mode stops with one clear error; non-strict skips it,
lists it, and every stage goes on (training, scoring, evaluation)."""
from __future__ import annotations

import json

import pytest

from alod.config import load_config
from alod.stages.cycles import finished_cycles, run_cycles
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod.utils import AlodError
from alod_testing import run_layout, write_tiny_config

QUIET = lambda *_: None  # noqa: E731


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a JPEG cut short: the header is fine, decoding fails


def test_strict_stops_with_the_file_and_the_option(tmp_path):
    cfg = load_config(write_tiny_config(tmp_path, pretrain={"epochs": 1}))
    from alod.data.sources import ensure_dataset

    ensure_dataset(cfg.data, progress=False)
    _truncate(tmp_path / "data" / "images" / "100k" / "train" / "train_00003.jpg")
    with pytest.raises(AlodError, match=r"train_00003.jpg .*cannot be decoded.*data.strict: false"):
        run_pretrain(cfg, progress=False, log=QUIET)


def test_non_strict_skips_lists_and_goes_on(tmp_path):
    path = write_tiny_config(tmp_path, pretrain={"epochs": 1}, cycles={"epochs": 1, "num_cycles": 2})
    cfg = load_config(path, ["data.strict=false"])
    from alod.data.sources import ensure_dataset

    ensure_dataset(cfg.data, progress=False)
    for split, name in (("train", "train_00001.jpg"), ("train", "train_00020.jpg"), ("val", "val_00002.jpg")):
        _truncate(tmp_path / "data" / "images" / "100k" / split / name)
    said = []
    ckpt = run_pretrain(cfg, progress=False, log=said.append)
    sched = json.loads(run_scoring(cfg, ckpt=ckpt, progress=False, log=said.append).read_text())
    state = run_cycles(cfg, progress=False, log=said.append)
    assert len(finished_cycles(state)) == 2
    # The broken files are still in the pool (their labels are fine), scored 0 when scoring.
    scores = {r["name"]: r["score"] for r in sched["images"]}
    assert len(scores) == 36 and scores["train_00001.jpg"] == 0.0
    listed = [json.loads(line) for line in run_layout(cfg).unreadable_images.read_text().splitlines()]
    names = {(r["stage"], r["image"]) for r in listed}
    assert ("scoring", "train_00001.jpg") in names and ("scoring", "train_00020.jpg") in names
    assert ("evaluate val", "val_00002.jpg") in names
    assert any("could not be decoded and were skipped" in s for s in said)
    metrics = json.loads(run_layout(cfg).cycle_metrics(1).read_text())
    assert 0.0 <= metrics["mAP50"] <= 1.0
