"""The cycle levers on the demo: warm start with fewer epochs and plateau stopping, against the
demo's own protocol (retrained from scratch, 10 epochs per cycle), measured in one run.

One scorer (``pretrain.epochs`` of ``--pretrain-epochs``) and one schedule are shared by every
variant, so the variants differ only in how the cycles train. Each variant is one ``alod cycles``
process; its wall seconds, per-cycle mAP50 and epochs go to ``benchmarks/results/demo_levers.json``
as soon as it ends, so a killed sweep resumes at the first variant without a result (a variant
killed half-way resumes from its own checkpoints; its seconds then count the restart, and the
record says ``resumed``).

Writes ``cycle_levers.json`` too: for each lever the fraction of the baseline's training epochs
it used (summed over cycles), which ``bench_schedule_cost.py`` scales the BDD100K schedule by, with
the mAP50 each reached, so a reader can see what the saving costs.

    python benchmarks/bench_demo_levers.py            # about 40 minutes on a 2-core CPU
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _machine import run_info

#: name -> (what it is, --set overrides of the cycles). Order = run order: the levers first, the
#: (long) baseline last.
VARIANTS = {
    "warm_e3": ("warm start, 3 epochs per cycle", ["cycles.init=warm", "cycles.epochs=3"]),
    "warm_e5": ("warm start, 5 epochs per cycle", ["cycles.init=warm", "cycles.epochs=5"]),
    "warm_plateau": ("warm start, at most 5 epochs, plateau (every epoch, patience 2)",
                     ["cycles.init=warm", "cycles.epochs=5", "cycles.stop=plateau",
                      "cycles.eval_every=1", "cycles.patience=2"]),
    "warm_e2": ("warm start, 2 epochs per cycle", ["cycles.init=warm", "cycles.epochs=2"]),
    "plateau": ("from scratch, at most 10 epochs, plateau (every 2 epochs, patience 2)",
                ["cycles.stop=plateau", "cycles.eval_every=2", "cycles.patience=2"]),
    "scratch_e10": ("from scratch, 10 epochs per cycle (the demo's protocol)", []),
}
BASELINE = "scratch_e10"


def _alod(args: list[str], log) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "alod", *args, "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return round(time.perf_counter() - t0, 1)


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, in run order")
    p.add_argument("--out", default=str(HERE / "results" / "demo_levers.json"))
    args = p.parse_args(argv)

    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.setdefault("machine", run_info(load_before=os.getloadavg()[0]))
    result.setdefault("config", args.config)
    result.setdefault("variants", {})
    base = ["--config", args.config, "--set", "run.name=demo-levers",
            "--set", f"pretrain.epochs={args.pretrain_epochs}"]
    (ROOT / "runs").mkdir(exist_ok=True)
    with open(ROOT / "runs" / "demo-levers.log", "a") as log:
        _sweep(args, out, result, base, log)
    return 0


def _sweep(args, out: Path, result: dict, base: list[str], log) -> None:
    if "scorer" not in result:
        seconds = {"pretrain": _alod(["pretrain", *base], log), "batches": _alod(["batches", *base], log)}
        metrics = json.loads((ROOT / "runs/demo-levers/pretrain/metrics.json").read_text())
        result["scorer"] = {"pretrain_epochs": args.pretrain_epochs, "seconds": seconds,
                            "mAP50": metrics.get("mAP50")}
        _write(out, result)

    for name in args.variants.split(","):
        if name in result["variants"]:
            continue
        what, sets = VARIANTS[name]
        run_name = f"demo-levers-{name}"
        state_path = ROOT / "runs" / run_name / "cycles" / "state.json"
        resumed = state_path.exists()
        cmd = ["cycles", *base, "--set", f"run.name={run_name}",
               "--schedule", "runs/demo-levers/schedule.json"]
        for s in sets:
            cmd += ["--set", s]
        seconds = _alod(cmd, log)
        state = json.loads(state_path.read_text())
        cycles = [c for c in state["cycles"] if c.get("step") == "evaluated"]
        result["variants"][name] = {
            "what": what, "overrides": sets, "seconds": seconds, "resumed": resumed,
            "mAP50": [round(c["mAP50"], 4) for c in cycles],
            "epochs": [c["epochs"] for c in cycles],
            "train_seconds": round(sum(c["seconds"].get("train", 0) for c in cycles), 1),
            "evaluate_seconds": round(sum(c["seconds"].get("evaluate", 0) for c in cycles), 1),
        }
        _write(out, result)
        print(name, result["variants"][name], flush=True)

    if BASELINE in result["variants"]:
        b = result["variants"][BASELINE]
        levers = {}
        for name, v in result["variants"].items():
            if name == BASELINE:
                continue
            levers[name] = {"what": v["what"], "epoch_fraction": round(sum(v["epochs"]) / sum(b["epochs"]), 3),
                            "seconds_fraction": round(v["seconds"] / b["seconds"], 3),
                            "final_mAP50": v["mAP50"][-1], "baseline_final_mAP50": b["mAP50"][-1]}
        _write(HERE / "results" / "cycle_levers.json",
               {"source": "bench_demo_levers.py on the demo", "machine": result["machine"], "levers": levers})


if __name__ == "__main__":
    raise SystemExit(main())
