"""``alod compare`` on a tiny generated dataset: the fair protocol (shared cycle 1, the baseline's
seeds, the scorer's labels, equal boxes, full-data seeds), the report, reuse on a rerun, resume after a kill."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from alod.compare import equal_boxes_name, plan, resolve, run_compare, run_name
from alod.config import load_config
from alod.layout import RunLayout
from alod.utils import AlodError
from alod_testing import REPO, subprocess_env, write_tiny_config

QUIET = lambda *_: None  # noqa: E731
ARGS = dict(strategies=["entropy", "random"], modes=["precomputed", "adaptive"], seeds=[0, 1], full_seeds=[0])
SETS = ["cycles.epochs=1", "cycles.num_cycles=3", "pretrain.epochs=1"]


def test_plan_runs_random_in_every_mode():
    assert plan(["entropy", "random"], ["precomputed", "adaptive"], [0, 1]) == [
        (0, "precomputed", "entropy"), (0, "precomputed", "random"), (0, "adaptive", "entropy"),
        (0, "adaptive", "random"), (1, "precomputed", "entropy"), (1, "precomputed", "random"),
        (1, "adaptive", "entropy"), (1, "adaptive", "random")]


def test_bad_requests_are_clear(tmp_path):
    cfg = load_config(write_tiny_config(tmp_path))
    with pytest.raises(AlodError, match="needs the 'random' baseline"):
        resolve(cfg, strategies=["entropy"], modes=["precomputed"], seeds=[0])
    with pytest.raises(AlodError, match="unknown modes"):
        resolve(cfg, strategies=["random"], modes=["online"], seeds=[0])
    with pytest.raises(AlodError, match="unknown strategies"):
        resolve(cfg, strategies=["random", "entropyy"], modes=["adaptive"], seeds=[0])
    with pytest.raises(AlodError, match="repeated seeds"):
        resolve(cfg, strategies=["random"], modes=["adaptive"], seeds=[1, 1])
    with pytest.raises(AlodError, match="compare.seeds"):
        load_config(write_tiny_config(tmp_path, compare={"seeds": []}))


@pytest.fixture(scope="module")
def compared(tmp_path_factory, one_torch_thread):
    # One torch thread, as the CLI subprocesses below get (OMP_NUM_THREADS=1): with another thread
    # count, training's float sums round differently and the resumed curves would differ in the 6th decimal.
    tmp = tmp_path_factory.mktemp("compare")
    cfg = resolve(load_config(write_tiny_config(tmp), SETS), **ARGS)
    report = run_compare(cfg, progress=False, log=QUIET)
    return cfg, report


def _state(cfg, name: str) -> dict:
    layout = RunLayout.from_config(load_config(None, [f"run.name={name}", f"run.out_dir={cfg.run.out_dir}"]).run)
    return json.loads(layout.cycles_state.read_text())


def _pool(state: dict, upto: int) -> list[str]:
    return [x for x, k in zip(state["pool"]["names"], state["pool"]["cycles"]) if k <= upto]


def test_every_run_of_a_seed_starts_from_the_same_images(compared):
    cfg, report = compared
    assert report["protocol"]["cycle1_shared"] is True and report["protocol"]["seeds"] == [0, 1]
    firsts = {}
    for seed in (0, 1):
        names = [run_name("tiny", mode=m, strategy=s, seed=seed) for m in ARGS["modes"] for s in ARGS["strategies"]]
        names += [equal_boxes_name("tiny", mode=m, strategy="entropy", seed=seed) for m in ARGS["modes"]]
        pools = {sorted(_pool(_state(cfg, n), 1)).__repr__() for n in names}
        assert len(pools) == 1, pools
        firsts[seed] = pools.pop()
        # The precomputed scorer trained on exactly these labels, no others: they are charged.
        part = json.loads((RunLayout.from_config(load_config(None, [
            f"run.name=tiny-scorer-s{seed}", f"run.out_dir={cfg.run.out_dir}"]).run).partition).read_text())
        assert part["images_from"] == "cycle1" and repr(sorted(part["images"])) == firsts[seed]
    assert firsts[0] != firsts[1]


def test_the_baseline_draws_change_with_the_seed(compared):
    cfg, _ = compared
    for mode in ARGS["modes"]:
        a, b = (_pool(_state(cfg, run_name("tiny", mode=mode, strategy="random", seed=s)), 3) for s in (0, 1))
        assert a != b
    sched = json.loads((RunLayout.from_config(load_config(None, [
        "run.name=tiny-precomputed-random-s1", f"run.out_dir={cfg.run.out_dir}"]).run).schedule).read_text())
    assert sched["strategy"]["params"] == {"seed": 1}


def test_records_carry_scorer_images_and_equal_boxes(compared):
    cfg, _ = compared
    out = RunLayout.from_config(cfg.run).compare_dir
    runs = json.loads((out / "runs.json").read_text())
    records = runs["records"]
    assert len(records) == 12 and len(runs["full"]) == 1 and runs["full"][0]["images"] == 36
    by = {(r["strategy"], r["mode"], r["seed"], r["equal_boxes_to"]): r for r in records}
    assert by["entropy", "precomputed", 0, None]["scorer_images"] == cfg.schedule.query_size
    assert by["entropy", "adaptive", 0, None]["scorer_images"] == 0
    for (strategy, mode, seed, to), rec in by.items():
        assert [c["images"] for c in rec["cycles"]][:1] == [4]
        if to is None:
            assert [c["images"] for c in rec["cycles"]] == [4, 8, 12]
            continue
        target = by[to, mode, seed, None]
        for mine, theirs in zip(rec["cycles"][1:], target["cycles"][1:]):
            assert mine["boxes"] >= theirs["boxes"]  # random images until the strategy's box count ...
            assert mine["boxes"] - theirs["boxes"] < 10  # ... overshooting by less than one image (<= 6 objects)


def test_records_carry_annotator_actions_and_agreement(compared):
    cfg, report = compared
    records = json.loads((RunLayout.from_config(cfg.run).compare_dir / "runs.json").read_text())["records"]
    for rec in records:
        first, *rest = rec["cycles"]
        assert first["actions"] == first["boxes"] and first["agreement"] is None  # no model pre-annotates cycle 1
        actions = [c["actions"] for c in rec["cycles"]]
        assert actions == sorted(actions)
        # Each later image costs at most its boxes plus the detector's false boxes, and at least 0.
        assert all(c["agreement"] is not None and 0.0 <= c["agreement"] <= 1.0 for c in rest)
        assert "stop_cycle" in rec
    assert report["actions_recorded"] is True
    cached = json.loads(RunLayout.from_config(load_config(None, [
        "run.name=tiny-adaptive-entropy-s0", f"run.out_dir={cfg.run.out_dir}"]).run).label_work.read_text())
    assert cached["probe_images"] > 0 and len(cached["actions"]) == 3


def test_run_json_records_the_resolved_config(compared):
    cfg, _ = compared
    info = json.loads((RunLayout.from_config(cfg.run).compare_dir / "run.json").read_text())
    assert info["config"] == cfg.to_dict()
    assert info["machine"]["cpu_count"] >= 1 and info["wall_s_total"] > 0


def test_adaptive_runs_never_select_twice_and_seeds_differ(compared):
    cfg, _ = compared
    pools = {}
    for seed in (0, 1):
        for mode in ("precomputed", "adaptive"):
            layout = RunLayout.from_config(load_config(None, [f"run.name={run_name('tiny', mode=mode, strategy='entropy', seed=seed)}",
                                                              f"run.out_dir={cfg.run.out_dir}"]).run)
            state = json.loads(layout.cycles_state.read_text())
            names = state["pool"]["names"]
            assert len(names) == len(set(names)) == 12
            pools[seed, mode] = names
    assert pools[0, "adaptive"] != pools[1, "adaptive"]  # the seed changes the arrivals and cycle 1's draw


def test_rerun_reuses_every_finished_run(compared):
    cfg, report = compared
    t0 = time.perf_counter()
    again = run_compare(cfg, progress=False, log=QUIET)
    assert time.perf_counter() - t0 < 60
    assert again["comparisons"] == report["comparisons"]


@pytest.mark.slow
def test_a_killed_comparison_resumes_to_the_same_curves(compared, tmp_path):
    cfg, report = compared
    path = write_tiny_config(tmp_path, data_root=tmp_path / "data")
    args = ["--config", str(path), "--strategies", "entropy,random", "--modes", "precomputed,adaptive",
            "--seeds", "0,1", "--full-seeds", "0", "--no-progress"] + [a for s in SETS for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "alod", "compare", *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    trigger = tmp_path / "runs" / "tiny-adaptive-entropy-s0" / "cycles" / "state.json"
    deadline = time.time() + 600
    while not trigger.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run([sys.executable, "-m", "alod", "compare", *args], cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((tmp_path / "runs" / "tiny" / "compare" / "report.json").read_text())
    per_seed = lambda rep: [(s["strategy"], s["random"]) for c in rep["comparisons"]  # noqa: E731
                            for s in c["aulc"]["per_seed"]]
    assert len(per_seed(report)) == 4  # 2 strategies' modes x 2 seeds
    assert [x for pair in per_seed(resumed) for x in pair] == pytest.approx(
        [x for pair in per_seed(report) for x in pair], abs=1e-9)


def test_timings_add_a_resumed_stage_but_not_a_finished_one(tmp_path):
    from alod.compare.protocol import _Timings

    path, done = tmp_path / "timings.json", tmp_path / "metrics.json"

    def stage(seconds, finish=False):
        def fn():
            time.sleep(seconds)
            if finish:
                done.write_text("{}")
            return "ckpt"
        return fn

    t = _Timings(path)
    assert t.time("run/pretrain", stage(0.05), done=done) == "ckpt"  # killed before it finished
    first = t.get("run/pretrain")
    assert first >= 0.05
    t = _Timings(path)  # a rerun resumes it: the seconds add up
    t.time("run/pretrain", stage(0.05, finish=True), done=done)
    resumed = t.get("run/pretrain")
    assert resumed >= first + 0.05
    t = _Timings(path)  # a third run only reloads the finished stage: nothing added
    assert t.time("run/pretrain", stage(0.05), done=done) == "ckpt"
    assert _Timings(path).get("run/pretrain") == resumed
