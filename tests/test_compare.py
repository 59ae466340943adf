"""``alod compare`` on a tiny generated dataset: every run, the report, reuse on a rerun, resume after a kill."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from alod.compare import plan, run_compare, run_name
from alod.config import load_config
from alod.layout import RunLayout
from alod.utils import AlodError
from alod_testing import REPO, subprocess_env, write_tiny_config

QUIET = lambda *_: None  # noqa: E731
ARGS = dict(strategies=["entropy", "random"], modes=["precomputed", "adaptive"], seeds=[0, 1])
SETS = ["cycles.epochs=1", "cycles.num_cycles=2", "pretrain.epochs=1"]


def test_plan_runs_random_once_per_seed():
    assert plan(["entropy", "random"], ["precomputed", "adaptive"], [0, 1]) == [
        (0, "precomputed", "entropy"), (0, "precomputed", "random"), (0, "adaptive", "entropy"),
        (1, "precomputed", "entropy"), (1, "precomputed", "random"), (1, "adaptive", "entropy")]
    assert plan(["margin", "random"], ["adaptive"], [3]) == [(3, "adaptive", "margin"), (3, "precomputed", "random")]


def test_bad_requests_are_clear(tmp_path):
    cfg = load_config(write_tiny_config(tmp_path))
    with pytest.raises(AlodError, match="needs the 'random' baseline"):
        run_compare(cfg, strategies=["entropy"], modes=["precomputed"], seeds=[0], log=QUIET)
    with pytest.raises(AlodError, match="unknown modes"):
        run_compare(cfg, strategies=["random"], modes=["online"], seeds=[0], log=QUIET)
    with pytest.raises(AlodError, match="unknown strategies"):
        run_compare(cfg, strategies=["random", "entropyy"], modes=["adaptive"], seeds=[0], log=QUIET)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    cfg = load_config(write_tiny_config(tmp), SETS)
    report = run_compare(cfg, **ARGS, progress=False, log=QUIET)
    return cfg, report


def test_compare_writes_the_report(compared):
    cfg, report = compared
    out = RunLayout.from_config(cfg.run).compare_dir
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["format"] == "alod.compare-report/1" and on_disk["baseline"] == "random"
    assert set(on_disk["strategies"]) == {"random/precomputed", "entropy/precomputed", "entropy/adaptive"}
    assert on_disk["seeds"] == [0, 1] and on_disk["full"]["images"] == 36
    md = (out / "report.md").read_text()
    for entry in on_disk["strategies"].values():
        assert entry["sentence"] in md
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs["records"]) == 6
    for rec in runs["records"]:
        assert [c["images"] for c in rec["cycles"]] == [4, 8]
        assert all(c["boxes"] >= 0 and 0 <= c["mAP50"] <= 1 for c in rec["cycles"])
        assert rec["cycles"][-1]["seconds"]["training"] > 0
        scoring = sum(c["seconds"]["scoring"] for c in rec["cycles"])
        # The precomputed entropy schedule paid for a scorer; random paid nothing; adaptive re-scored in cycle 2.
        if rec["strategy"] == "random":
            assert scoring < 5
        else:
            assert scoring > 0


def test_adaptive_runs_never_select_twice_and_seeds_differ(compared):
    cfg, _ = compared
    pools = {}
    for seed in (0, 1):
        for mode in ("precomputed", "adaptive"):
            layout = RunLayout.from_config(load_config(None, [f"run.name={run_name('tiny', mode=mode, strategy='entropy', seed=seed)}",
                                                              f"run.out_dir={cfg.run.out_dir}"]).run)
            state = json.loads(layout.cycles_state.read_text())
            names = state["pool"]["names"]
            assert len(names) == len(set(names)) == 8
            pools[seed, mode] = names
    assert pools[0, "adaptive"] != pools[1, "adaptive"]  # the seed changes the arrivals and cycle 1's draw


def test_rerun_reuses_every_finished_run(compared):
    cfg, report = compared
    t0 = time.perf_counter()
    again = run_compare(cfg, **ARGS, progress=False, log=QUIET)
    assert time.perf_counter() - t0 < 60
    strip = lambda r: {k: v["curve"] for k, v in r["strategies"].items()}  # noqa: E731
    assert strip(again) == strip(report)


@pytest.mark.slow
def test_a_killed_comparison_resumes_to_the_same_curves(compared, tmp_path):
    cfg, report = compared
    path = write_tiny_config(tmp_path, data_root=tmp_path / "data")
    args = ["--config", str(path), "--strategies", "entropy,random", "--modes", "precomputed,adaptive",
            "--seeds", "0,1", "--no-progress"] + [a for s in SETS for a in ("--set", s)]
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
    for key, entry in report["strategies"].items():
        assert [c["mAP50"]["mean"] for c in resumed["strategies"][key]["curve"]] == pytest.approx(
            [c["mAP50"]["mean"] for c in entry["curve"]], abs=1e-9)
