"""End to end on a tiny generated dataset: the three stages, TensorBoard output, resume, errors.

Each test trains a tiny detector for a few steps on the CPU (seconds), the way Detectron2 tests
its training loop: the point is that the stages fit together and recover, not accuracy.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alod.cli import script_main
from alod.config import load_config
from alod.stages.cycles import finished_cycles, run_cycles
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring
from alod.strategies import STRATEGIES
from alod_testing import REPO, run_layout, subprocess_env, write_tiny_config


def _scalars(tb_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return {}
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = load_config(write_tiny_config(tmp))
    ckpt = run_pretrain(cfg, progress=False)
    sched = run_scoring(cfg, ckpt=ckpt, progress=False)
    state = run_cycles(cfg, progress=False)
    return cfg, ckpt, sched, state


def test_stages_write_their_contracts(finished_run):
    cfg, ckpt, sched, state = finished_run
    import torch

    ck = torch.load(ckpt, map_location="cpu", weights_only=True)  # alod checkpoints hold no objects
    assert {"model", "optimizer", "scheduler", "epoch", "config"} <= set(ck)
    part = json.loads((run_layout(cfg).root / "pretrain" / "partition.json").read_text())
    assert len(part["images"]) == round(0.7 * 36) and part["seed"] == 0
    s = json.loads(Path(sched).read_text())
    assert len(s["images"]) == 36 and len(s["cycles"]) == 3
    assert [c["cycle"] for c in finished_cycles(state)] == [1, 2, 3]
    assert [c["pool_size"] for c in finished_cycles(state)] == [4, 8, 12]
    # The pool holds exactly the schedule's selections, recorded with their cycle.
    assert state["pool"]["names"] == [x for c in s["cycles"] for x in c["images"]]
    assert state["pool"]["cycles"] == [1] * 4 + [2] * 4 + [3] * 4
    layout = run_layout(cfg)
    for stage in ("pretrain", "batches", "cycles"):  # each stage writes the config it ran with
        assert load_config(layout.stage_config(stage)) == cfg
    for n in (1, 2, 3):
        m = json.loads((run_layout(cfg).root / "cycles" / f"cycle_{n:02d}" / "metrics.json").read_text())
        assert 0.0 <= m["mAP50"] <= 1.0 and "AP50/car" in m


def test_tensorboard_has_map50_for_every_cycle(finished_run):
    cfg, *_ = finished_run
    by_cycle = _scalars(run_layout(cfg).tb_root, "mAP50")
    assert sorted(by_cycle) == [1, 2, 3]
    assert sorted(_scalars(run_layout(cfg).tb_root, "by_pool_size/mAP50")) == [4, 8, 12]
    assert sorted(_scalars(run_layout(cfg).tb_root / "cycle_02", "train/loss_classifier")) == [1, 2]
    assert sorted(_scalars(run_layout(cfg).tb_root / "cycle_02", "train/lr")) == [1, 2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_layout(cfg).tb_root), size_guidance={"images": 0})
    acc.Reload()
    assert "val_predictions" in acc.Tags()["images"]


def test_rerun_after_completion_does_nothing_new(finished_run):
    cfg, ckpt, sched, state = finished_run
    before = run_layout(cfg).cycles_state.read_bytes()
    run_cycles(cfg, progress=False)
    assert run_layout(cfg).cycles_state.read_bytes() == before


def test_schedule_is_byte_identical_when_rescored(finished_run, tmp_path):
    cfg, ckpt, sched, _ = finished_run
    first = Path(sched).read_bytes()
    cfg2 = load_config(write_tiny_config(tmp_path, data_root=Path(cfg.data.root)))
    out = run_scoring(cfg2, ckpt=ckpt, progress=False)
    s1, s2 = json.loads(first), json.loads(Path(out).read_text())
    assert s1["cycles"] == s2["cycles"] and s1["images"] == s2["images"]
    # Everything but the stored checkpoint path is identical; with the same path the bytes are.
    s2["checkpoint"]["path"] = s1["checkpoint"]["path"]
    from alod.schedule import dumps_schedule

    assert dumps_schedule(s2).encode() == first


def _cli(script: str, *args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_missing_checkpoint_says_what_to_run(tiny_config):
    r = _cli("make_batches.py", "--config", str(tiny_config), "--no-progress")
    assert r.returncode == 2
    assert "train_part_entropy.py" in r.stderr and "Traceback" not in r.stderr
    r = _cli("make_batches.py", "--config", str(tiny_config), "--ckpt", "nope.pt", "--no-progress")
    assert r.returncode == 2 and "nope.pt" in r.stderr


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_runs_from_the_command_line_with_its_own_defaults(finished_run, tmp_path, strategy, capsys):
    """make_batches.py --set score.strategy=S, through the same parser and config path as the script."""
    cfg, ckpt, *_ = finished_run
    cfg_path = write_tiny_config(tmp_path, data_root=Path(cfg.data.root))
    rc = script_main("batches", prog="make_batches.py",
                     argv=["--config", str(cfg_path), "--ckpt", str(ckpt), "--set", f"score.strategy={strategy}",
                           "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "runs" / "tiny" / "schedule.json").read_text())
    expected = {"aggregate": "sum"} if strategy == "entropy" else {}  # the tiny config's entropy table
    assert s["strategy"] == {"name": strategy, "params": expected}
    assert len(s["images"]) == 36 and len(s["cycles"]) == 3
    assert (s["checkpoint"] is None) == (STRATEGIES[strategy].inference == "none")


def test_wrong_strategy_parameter_is_one_clear_line(tiny_config):
    r = _cli("make_batches.py", "--config", str(tiny_config), "--set", "score.params.entropy.agregate=max")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("error: score.params.entropy.agregate: strategy 'entropy' has no parameter "
                                "'agregate'; its parameters: aggregate, min_score")


def test_random_baseline_needs_no_checkpoint(tiny_config, tmp_path):
    r = _cli("make_batches.py", "--config", str(tiny_config), "--set", "score.strategy=random", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "runs" / "tiny" / "schedule.json").read_text())
    assert s["checkpoint"] is None and s["strategy"]["name"] == "random"
    assert not (tmp_path / "runs" / "tiny" / "pretrain").exists()


def test_alod_subcommands_are_real():
    r = subprocess.run([sys.executable, "-m", "alod", "--help"], cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True)
    assert r.returncode == 0
    for name in ("demo", "pretrain", "batches", "cycles", "evaluate"):
        assert name in r.stdout
        h = subprocess.run([sys.executable, "-m", "alod", name, "--help"], cwd=REPO, env=subprocess_env(),
                           capture_output=True, text=True)
        assert h.returncode == 0 and "usage: alod " + name in h.stdout
    r = subprocess.run([sys.executable, "-m", "alod", "batches", "--help"], cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True)
    assert "--ckpt" in r.stdout and "box_count" in r.stdout


def test_missing_schedule_says_what_to_run(tiny_config):
    r = _cli("main_sample.py", "--config", str(tiny_config), "--no-progress")
    assert r.returncode == 2
    assert "make_batches.py" in r.stderr and "Traceback" not in r.stderr


def test_schedule_for_another_dataset_is_refused(finished_run, tmp_path):
    cfg, *_ = finished_run
    s = json.loads(run_layout(cfg).schedule.read_text())
    s["dataset"]["num_images"] = 999
    bad = tmp_path / "schedule.json"
    bad.write_text(json.dumps(s))
    cfg_path = write_tiny_config(tmp_path, data_root=Path(cfg.data.root))
    r = _cli("main_sample.py", "--config", str(cfg_path), "--schedule", str(bad), "--no-progress")
    assert r.returncode == 2
    assert "999 training images but the dataset has 36" in r.stderr and "Traceback" not in r.stderr


def test_malformed_label_file_is_a_clear_error(finished_run, tmp_path):
    cfg, *_ = finished_run
    import shutil

    root = tmp_path / "data"
    shutil.copytree(cfg.data.root, root)
    labels = root / "labels" / "det_20" / "det_train.json"
    text = labels.read_text()
    labels.write_text(text[: len(text) // 2])  # truncated file
    cfg_path = write_tiny_config(tmp_path, data_root=root)
    r = _cli("train_part_entropy.py", "--config", str(cfg_path), "--no-progress")
    assert r.returncode == 2
    assert "det_train.json" in r.stderr and "Traceback" not in r.stderr


def test_cli_help():
    for script in ("train_part_entropy.py", "make_batches.py", "main_sample.py"):
        r = _cli(script, "--help")
        assert r.returncode == 0 and "--config" in r.stdout and "--set" in r.stdout


def _kill_during_cycle_2(cfg_path: Path, run_dir: Path) -> None:
    """Start main_sample.py on ``cfg_path`` and SIGKILL it once cycle 2 has its first epoch's checkpoint."""
    proc = subprocess.Popen([sys.executable, str(REPO / "main_sample.py"), "--config", str(cfg_path), "--no-progress"],
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt2 = run_dir / "cycles" / "cycle_02" / "checkpoint_last.pt"
    deadline = time.time() + 300
    while not ckpt2.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "cycles finished before they could be interrupted: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # a reference run plus a killed and resumed one: about 40 s on 2 cores
def test_resume_after_kill_matches_uninterrupted_run(finished_run, tmp_path):
    """Kill main_sample.py during cycle 2, rerun: same pools and same state as the uninterrupted run."""
    cfg, ckpt, sched, reference = finished_run
    cfg_path = write_tiny_config(tmp_path, data_root=Path(cfg.data.root), cycles={"epochs": 3})
    ref_cfg = load_config(cfg_path, [f"run.out_dir={tmp_path / 'ref_runs'}", f"run.tb_dir={tmp_path / 'ref_tb'}"])
    run_layout(ref_cfg).root.mkdir(parents=True)
    (run_layout(ref_cfg).root / "schedule.json").write_bytes(Path(sched).read_bytes())
    reference = run_cycles(ref_cfg, progress=False)

    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "schedule.json").write_bytes(Path(sched).read_bytes())
    _kill_during_cycle_2(cfg_path, run_dir)
    state = json.loads((run_dir / "cycles" / "state.json").read_text())
    assert [c["cycle"] for c in finished_cycles(state)] == [1]  # killed inside cycle 2...
    assert [c["step"] for c in state["cycles"]] == ["evaluated", "labeled"]  # ...while training it

    r = _cli("main_sample.py", "--config", str(cfg_path), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((run_dir / "cycles" / "state.json").read_text())
    assert resumed["pool"] == reference["pool"]
    assert [(c["cycle"], c["pool_size"], c["epochs"]) for c in finished_cycles(resumed)] == [
        (c["cycle"], c["pool_size"], c["epochs"]) for c in finished_cycles(reference)]
    # Training is deterministic on CPU and resumes at the epoch boundary: the metrics agree too.
    for a, b in zip(finished_cycles(resumed), finished_cycles(reference)):
        assert a["mAP50"] == pytest.approx(b["mAP50"], abs=1e-6)


@pytest.mark.slow  # a reference and a killed + resumed subprocess run: about 1 minute on 2 cores
def test_resume_after_kill_with_every_cost_option_on(finished_run, tmp_path):
    """Every training option of the cost issue on (warm start, plateau stopping, bf16 autocast on the CPU,
    channels_last weights, a narrow trunk, RoIAlign sampling ratio 1):
    SIGKILL during cycle 2's training, rerun, and the run ends as the uninterrupted one (both are
    subprocesses: one thread count, one accelerate state per process)."""
    from alod.models import load_checkpoint

    cfg, _, sched, _ = finished_run
    options = dict(cycles={"epochs": 4, "init": "warm", "stop": "plateau", "eval_every": 1, "patience": 1},
                   train={"amp": "all"}, model={"channels_last": True, "trunk_width": 32, "roi_sampling_ratio": 1})
    runs = {}
    for name in ("reference", "killed"):
        (tmp_path / name).mkdir()
        path = write_tiny_config(tmp_path / name, data_root=Path(cfg.data.root), **options)
        run_dir = tmp_path / name / "runs" / "tiny"
        run_dir.mkdir(parents=True)
        (run_dir / "schedule.json").write_bytes(Path(sched).read_bytes())
        runs[name] = (path, run_dir)

    r = _cli("main_sample.py", "--config", str(runs["reference"][0]), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    path, run_dir = runs["killed"]
    _kill_during_cycle_2(path, run_dir)
    assert [c["step"] for c in json.loads((run_dir / "cycles" / "state.json").read_text())["cycles"]] == [
        "evaluated", "labeled"]  # killed while training cycle 2
    r = _cli("main_sample.py", "--config", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]

    ref = json.loads((runs["reference"][1] / "cycles" / "state.json").read_text())
    got = json.loads((run_dir / "cycles" / "state.json").read_text())
    assert got["pool"] == ref["pool"]
    keys = ("cycle", "pool_size", "epochs", "init", "stop", "mAP50", "mAP")
    assert [{k: c[k] for k in keys} for c in got["cycles"]] == [{k: c[k] for k in keys} for c in ref["cycles"]]
    assert [c["init"] for c in got["cycles"]] == ["scratch", "warm", "warm"]
    for c in got["cycles"]:  # stopped at a plateau: the kept epoch is the best evaluated one
        evals = dict(c["stop"]["evals"])
        assert c["stop"]["rule"] == "plateau" and c["epochs"] <= 4
        assert evals[c["stop"]["best_epoch"]] == max(evals.values())
        assert c["mAP50"] == pytest.approx(max(evals.values()), abs=1e-9)  # the evaluated model is the kept one
    for n in (1, 2, 3):
        a = load_checkpoint(run_dir / "cycles" / f"cycle_{n:02d}" / "checkpoint_last.pt")["model"]
        b = load_checkpoint(runs["reference"][1] / "cycles" / f"cycle_{n:02d}" / "checkpoint_last.pt")["model"]
        for k in a:
            assert torch.equal(a[k], b[k]), (n, k)
