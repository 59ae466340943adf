"""Two training jobs on one small CPU: torch's default threads against one thread per job.

`alod compare` runs of two benchmarks (or of one comparison split by ``--seeds``) are often run two
at a time on a 2-core machine. This times the demo preset's training step (SGD with backward, batch
2 of generated 320x192 scenes, as ``configs/demo.yaml`` trains) in three settings:

* ``alone``: one job, torch's default threads (the machine to itself: the baseline);
* ``two_default``: two jobs at once, each with torch's default threads;
* ``two_single``: two jobs at once, each with ``OMP_NUM_THREADS=1``.

Each job is a subprocess; concurrent jobs warm up, then wait at a file barrier so their timed steps
overlap. Settings are timed in alternation (ABCABC...), so a machine that gets busier slows all
alike. The result is the throughput (training steps per second summed over the jobs) of each
setting against ``two_default``, and each job's step time against ``alone``: ratios, not seconds.

    python benchmarks/bench_parallel_threads.py [--steps 40] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "parallel_threads.json"
REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"alone": (1, None), "two_default": (2, None), "two_single": (2, "1")}


def worker(steps: int, barrier: Path, jobs: int) -> None:
    """One job: build the demo detector, warm up, wait for the other jobs, time ``steps`` steps."""
    import torch
    from _inputs import scene_batch, sgd_step

    from alod.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        images, targets, _ = scene_batch(Path(tmp), 2, 320, 192)
    _, step = sgd_step(load_config(REPO / "configs" / "demo.yaml").model, images, targets)
    step()  # warm-up (allocations, oneDNN kernel choice)
    (barrier / f"{os.getpid()}").touch()
    while len(list(barrier.iterdir())) < jobs:  # start the timed steps together
        time.sleep(0.01)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"step_s": (time.perf_counter() - t0) / steps, "threads": torch.get_num_threads()}))


def run_setting(jobs: int, omp: str | None, steps: int) -> list[dict]:
    """Start ``jobs`` workers at once (``OMP_NUM_THREADS=omp`` when given); their per-step seconds."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    with tempfile.TemporaryDirectory() as barrier:
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(steps), "--barrier", barrier,
                                   "--jobs", str(jobs)], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(jobs)]
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per job (after one warm-up step)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the three settings, in alternation")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--barrier", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--note", default="", help="what else the machine was doing (recorded)")
    args = ap.parse_args()
    if args.worker is not None:
        return worker(args.worker, Path(args.barrier), args.jobs)

    from _machine import run_info, write_result

    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    per_job: dict[str, list[dict]] = {k: [] for k in SETTINGS}
    for _ in range(args.repeats):
        for name, (jobs, omp) in SETTINGS.items():
            per_job[name] += run_setting(jobs, omp, args.steps)
    rows = {}
    for name, (jobs, _) in SETTINGS.items():
        step_s = sum(j["step_s"] for j in per_job[name]) / len(per_job[name])
        rows[name] = {"jobs": jobs, "threads_per_job": per_job[name][0]["threads"], "step_s": step_s,
                      "steps_per_s": jobs / step_s, "runs": per_job[name]}
    for r in rows.values():
        r["throughput_vs_two_default"] = r["steps_per_s"] / rows["two_default"]["steps_per_s"]
        r["job_slowdown_vs_alone"] = r["step_s"] / rows["alone"]["step_s"]
    print(f"{'setting':<12} {'jobs':>4} {'threads':>7} {'step s':>7} {'steps/s':>8} {'throughput':>11} {'job slowdown':>13}")
    for name, r in rows.items():
        print(f"{name:<12} {r['jobs']:>4} {r['threads_per_job']:>7} {r['step_s']:>7.3f} {r['steps_per_s']:>8.2f} "
              f"{r['throughput_vs_two_default']:>10.2f}x {r['job_slowdown_vs_alone']:>12.2f}x")
    write_result(RESULTS, {
        "benchmark": "parallel_threads",
        "command": f"python benchmarks/bench_parallel_threads.py --steps {args.steps} --repeats {args.repeats}",
        "setup": "demo preset training step (SGD with backward), batch 2 of 320x192 generated scenes; "
                 "jobs are subprocesses whose timed steps start together; settings in alternation",
        "settings": rows,
        "wall_s": time.perf_counter() - t_start,
        "machine": {**run_info(load_before=load_before), "note": args.note},
    })


if __name__ == "__main__":
    main()
