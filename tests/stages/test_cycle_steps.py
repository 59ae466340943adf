"""The cycle as steps (select -> label -> train -> evaluate) with the step reached in ``state.json``.

A stand-in oracle that has no labels yet (as a human oracle before the import) stops the loop right
after selection; a rerun with labels continues from there and ends where an uninterrupted run ends.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from alod.config import load_config
from alod.cycle.oracles import ORACLES, SimulatedOracle
from alod.stages.cycles import STATE_FORMAT, STEPS, finished_cycles, load_state, run_cycles, summary_table
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod.utils import AlodError
from alod_testing import run_layout, write_tiny_config

QUIET = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    """A tiny run up to its schedule (3 cycles of 4 images), with a random-strategy schedule (no model)."""
    tmp = tmp_path_factory.mktemp("steps")
    path = write_tiny_config(tmp, score={"strategy": "random", "params": {}}, cycles={"epochs": 1})
    cfg = load_config(path)
    sched = run_scoring(cfg, progress=False, log=QUIET)
    return sched, path


class WaitingOracle(SimulatedOracle):
    """Has labels only for the cycles in ``ready`` (a human oracle before the import)."""

    ready: set = set()

    def label(self, cycle, images):
        return super().label(cycle, images) if cycle in self.ready else None


def test_loop_stops_after_selection_and_resumes_from_the_label_step(scheduled, monkeypatch):
    sched, path = scheduled
    monkeypatch.setitem(ORACLES, "waiting", WaitingOracle)
    cfg = load_config(path, ["cycles.oracle=waiting", "run.name=waiting"])
    WaitingOracle.ready = {1}
    state = run_cycles(cfg, progress=False, log=QUIET, schedule_file=sched)
    assert [(c["cycle"], c["step"]) for c in state["cycles"]] == [(1, "evaluated"), (2, "selected")]
    assert len(state["cycles"][1]["selected"]) == 4 and state["cycles"][1]["rule"] == "top"
    on_disk = json.loads(run_layout(cfg).cycles_state.read_text())
    assert on_disk == state and on_disk["pool"]["cycles"] == [1] * 4  # cycle 2's images are not in the pool
    assert not run_layout(cfg).cycle_dir(2).exists()  # nothing trained for cycle 2

    WaitingOracle.ready = {1, 2, 3}
    state = run_cycles(cfg, progress=False, log=QUIET, schedule_file=sched)
    assert [c["step"] for c in state["cycles"]] == ["evaluated"] * 3

    reference = run_cycles(load_config(path, ["run.name=straight"]), progress=False, log=QUIET, schedule_file=sched)
    assert state["pool"] == reference["pool"]
    assert [c["selected"] for c in state["cycles"]] == [c["selected"] for c in reference["cycles"]]
    assert [c["mAP50"] for c in finished_cycles(state)] == pytest.approx(
        [c["mAP50"] for c in finished_cycles(reference)], abs=1e-9)
    assert summary_table(state).splitlines()[1].split()[:2] == ["1", "4"]


def test_resume_from_the_evaluate_step_restores_the_trained_model(scheduled):
    sched, path = scheduled
    cfg = load_config(path, ["run.name=evalresume", "cycles.num_cycles=1"])
    done = run_cycles(cfg, progress=False, log=QUIET, schedule_file=sched)
    layout = run_layout(cfg)
    # As if killed after training: the state says "trained", metrics.json is gone.
    state = json.loads(layout.cycles_state.read_text())
    state["cycles"][0] = {k: v for k, v in state["cycles"][0].items() if k not in ("mAP50", "mAP", "pool_size")}
    state["cycles"][0]["step"] = "trained"
    layout.cycles_state.write_text(json.dumps(state))
    layout.cycle_metrics(1).unlink()
    ckpt_mtime = layout.cycle_checkpoint(1).stat().st_mtime_ns
    again = run_cycles(cfg, progress=False, log=QUIET, schedule_file=sched)
    seconds = again["cycles"][0].pop("seconds"), done["cycles"][0].pop("seconds")
    assert again == done and seconds[0]["evaluate"] > seconds[1]["evaluate"]  # evaluated once more
    assert layout.cycle_checkpoint(1).stat().st_mtime_ns == ckpt_mtime  # no training happened
    assert json.loads(layout.cycle_metrics(1).read_text())["mAP50"] == pytest.approx(done["cycles"][0]["mAP50"])


def test_state_records_selector_and_refuses_another_schedule(scheduled, tmp_path):
    sched, path = scheduled
    cfg = load_config(path, ["run.name=other", "cycles.num_cycles=1"])
    state = run_cycles(cfg, progress=False, log=QUIET, schedule_file=sched)
    assert state["format"] == STATE_FORMAT and state["oracle"] == "simulated"
    assert state["selector"]["name"] == "precomputed" and len(state["selector"]["schedule_sha256"]) == 64
    assert set(c["step"] for c in state["cycles"]) <= set(STEPS)
    edited = json.loads(Path(sched).read_text())
    edited["cycles"][0]["images"] = edited["cycles"][0]["images"][::-1]
    other = tmp_path / "schedule.json"
    other.write_text(json.dumps(edited))
    with pytest.raises(AlodError, match="belongs to another selection"):
        run_cycles(cfg, schedule_file=other, progress=False, log=QUIET)


def test_a_v1_state_file_is_upgraded(tmp_path):
    v1 = {"format": "alod.cycles/1", "schedule": "s.json", "schedule_sha256": "ab",
          "pool": {"names": ["a", "b", "c"], "cycles": [1, 1, 2], "sources": ["dataset"] * 3},
          "completed": [{"cycle": 1, "pool_size": 2, "epochs": 3, "mAP50": 0.5, "mAP": 0.2}]}
    p = tmp_path / "state.json"
    p.write_text(json.dumps(v1))
    state = load_state(p)
    assert state["format"] == STATE_FORMAT
    assert state["selector"] == {"name": "precomputed", "schedule": "s.json", "schedule_sha256": "ab"}
    assert state["cycles"] == [
        {"cycle": 1, "step": "evaluated", "rule": None, "selected": ["a", "b"], "pool_size": 2, "epochs": 3,
         "mAP50": 0.5, "mAP": 0.2},
        {"cycle": 2, "step": "labeled", "rule": None, "selected": ["c"]},
    ]
    p.write_text(json.dumps({"format": "something/9"}))
    with pytest.raises(AlodError, match="not an alod.cycles/2 state file"):
        load_state(p)


def test_pretrain_checkpoint_is_where_the_layout_says(tmp_path):
    cfg = load_config(write_tiny_config(tmp_path, pretrain={"epochs": 1, "fraction": 0.3}))
    ckpt = run_pretrain(cfg, progress=False, log=QUIET)
    layout = run_layout(cfg)
    assert Path(ckpt) == layout.pretrain_checkpoint and ckpt.is_file()
    assert layout.partition.is_file() and layout.pretrain_metrics.is_file()
    assert load_config(layout.stage_config("pretrain")) == cfg


def test_adaptive_selection_never_repeats_and_resumes_to_the_same_pool(scheduled, tmp_path):
    """Adaptive: cycle 1 random from batch 1, then the top unlabeled arrived images under the last model."""
    import signal
    import subprocess
    import sys
    import time

    from alod_testing import REPO, subprocess_env

    _, path = scheduled
    over = ["cycles.selector=adaptive", "score.strategy=entropy", "cycles.epochs=1"]
    ref = run_cycles(load_config(path, over + ["run.name=adaptive_ref"]), progress=False, log=QUIET)
    assert [c["step"] for c in ref["cycles"]] == ["evaluated"] * 3
    assert [c["rule"] for c in ref["cycles"]] == ["random", "adaptive top", "adaptive top"]
    names = ref["pool"]["names"]
    assert len(names) == len(set(names)) == 12  # never an image twice, never a labeled one
    assert ref["selector"]["name"] == "adaptive" and ref["selector"]["strategy"] == "entropy"
    assert all(c["seconds"]["select"] >= 0 for c in ref["cycles"])

    # Kill while cycle 3 is being selected or trained, rerun: the same pool as the uninterrupted run.
    cfg_args = ["--config", str(path)] + [a for o in over + ["run.name=adaptive_kill"] for a in ("--set", o)]
    cfg = load_config(path, over + ["run.name=adaptive_kill"])
    proc = subprocess.Popen([sys.executable, str(REPO / "main_sample.py"), *cfg_args, "--no-progress"], cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    trigger = run_layout(cfg).cycle_metrics(2)
    deadline = time.time() + 300
    while not trigger.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_cycles(cfg, progress=False, log=QUIET)
    assert resumed["pool"] == ref["pool"]
    assert [c["mAP50"] for c in resumed["cycles"]] == pytest.approx([c["mAP50"] for c in ref["cycles"]], abs=1e-9)


def test_warm_start_begins_from_the_previous_cycles_weights(scheduled, monkeypatch):
    """``cycles.init: warm``: cycle 1 from a random init, cycle n from cycle n - 1's final weights;
    ``scratch`` never passes weights."""
    import torch

    import alod.stages.cycles as cycles_mod
    from alod.models import load_checkpoint

    sched, path = scheduled
    given = {}
    real = cycles_mod.train_detector

    def spy(ctx, index, **kw):
        n = kw["extra"]["cycle"]
        given[n] = kw["init_weights"]
        if n > 1 and kw["init_weights"] is not None:  # what cycle n - 1 ended with, before cycle n trains
            before = load_checkpoint(ctx.layout.cycle_checkpoint(n - 1))["model"]
            assert all(torch.equal(before[k], v) for k, v in kw["init_weights"].items())
        return real(ctx, index, **kw)

    monkeypatch.setattr(cycles_mod, "train_detector", spy)
    state = run_cycles(load_config(path, ["run.name=warm", "cycles.init=warm"]), progress=False, log=QUIET,
                       schedule_file=sched)
    assert given[1] is None and given[2] is not None and given[3] is not None
    assert [c["init"] for c in state["cycles"]] == ["scratch", "warm", "warm"]
    assert "stop" not in state["cycles"][0]
    given.clear()
    state = run_cycles(load_config(path, ["run.name=cold"]), progress=False, log=QUIET, schedule_file=sched)
    assert set(given.values()) == {None} and [c["init"] for c in state["cycles"]] == ["scratch"] * 3


def test_cycle_options_are_checked_at_load(scheduled):
    _, path = scheduled
    for bad in ("cycles.init=hot", "cycles.stop=never", "cycles.patience=0", "cycles.eval_every=0", "train.amp=cpu"):
        with pytest.raises(AlodError, match=bad.split("=")[0]):
            load_config(path, [bad])
