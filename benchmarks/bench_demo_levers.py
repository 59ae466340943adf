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

Other sweeps over the same machinery: ``--set`` applies overrides to the scorer and to every variant
(e.g. a narrower model), ``--variant NAME=OVERRIDE;OVERRIDE`` adds a variant of your own, and
``--run-name``/``--out`` keep such a sweep apart from the default one (``cycle_levers.json`` is
written only by the default sweep, the one ``bench_schedule_cost.py`` reads)::

    python benchmarks/bench_demo_levers.py --run-name demo-fast --set model.trunk_width=32 \
        --variant "warm_e3_lr04=cycles.init=warm;cycles.epochs=3;train.lr=0.04" --variants warm_e3_lr04 \
        --out benchmarks/results/demo_fast.json
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
    "warm_e4": ("warm start, 4 epochs per cycle", ["cycles.init=warm", "cycles.epochs=4"]),
    "plateau": ("from scratch, at most 10 epochs, plateau (every 2 epochs, patience 2)",
                ["cycles.stop=plateau", "cycles.eval_every=2", "cycles.patience=2"]),
    "scratch_e10": ("from scratch, 10 epochs per cycle (the original protocol)", []),
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
    p.add_argument("--run-name", default="demo-levers", help="run folder of the shared scorer; variants add -NAME")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the scorer and every variant (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE;OVERRIDE",
                   help="an extra variant: its name and its ;-separated --set overrides of the cycles")
    args = p.parse_args(argv)
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        if not name or name in VARIANTS:
            p.error(f"--variant {spec!r}: give a new NAME=OVERRIDE;OVERRIDE")
        VARIANTS[name] = (f"overrides {sets}", [s for s in sets.split(";") if s])

    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.setdefault("machine", run_info(load_before=os.getloadavg()[0]))
    result.setdefault("config", args.config)
    result.setdefault("variants", {})
    if args.overrides:
        result.setdefault("overrides", args.overrides)
        if result["overrides"] != args.overrides:
            p.error(f"{out} was measured with --set {result['overrides']}; use another --out")
    base = ["--config", args.config, "--set", f"run.name={args.run_name}",
            "--set", f"pretrain.epochs={args.pretrain_epochs}"]
    for s in args.overrides:
        base += ["--set", s]
    (ROOT / "runs").mkdir(exist_ok=True)
    with open(ROOT / "runs" / f"{args.run_name}.log", "a") as log:
        _sweep(args, out, result, base, log)
    return 0


def _sweep(args, out: Path, result: dict, base: list[str], log) -> None:
    if "scorer" not in result:
        seconds = {"pretrain": _alod(["pretrain", *base], log), "batches": _alod(["batches", *base], log)}
        metrics = json.loads((ROOT / "runs" / args.run_name / "pretrain/metrics.json").read_text())
        result["scorer"] = {"pretrain_epochs": args.pretrain_epochs, "seconds": seconds,
                            "mAP50": metrics.get("mAP50")}
        _write(out, result)

    for name in args.variants.split(","):
        what, sets = VARIANTS[name]
        run_name = f"{args.run_name}-{name}"
        state_path = ROOT / "runs" / run_name / "cycles" / "state.json"
        if name in result["variants"]:
            if "pool_sizes" not in result["variants"][name]:  # written by an earlier version of this script
                result["variants"][name].update(_from_state(state_path))
                _write(out, result)
            continue
        resumed = state_path.exists()
        cmd = ["cycles", *base, "--set", f"run.name={run_name}",
               "--schedule", f"runs/{args.run_name}/schedule.json"]
        for s in sets:
            cmd += ["--set", s]
        seconds = _alod(cmd, log)
        result["variants"][name] = {"what": what, "overrides": sets, "seconds": seconds, "resumed": resumed,
                                    **_from_state(state_path)}
        _write(out, result)
        print(name, result["variants"][name], flush=True)

    if BASELINE in result["variants"] and not args.overrides and args.run_name == "demo-levers":
        _write(HERE / "results" / "cycle_levers.json", cycle_levers(result))


def _from_state(state_path: Path) -> dict:
    """Per-cycle mAP50, epochs, pool sizes, plateau evaluations and step seconds of a finished run."""
    cycles = [c for c in json.loads(state_path.read_text())["cycles"] if c.get("step") == "evaluated"]
    return {
        "mAP50": [round(c["mAP50"], 4) for c in cycles],
        "epochs": [c["epochs"] for c in cycles],
        "pool_sizes": [c["pool_size"] for c in cycles],
        "plateau_evals": [len(c["stop"]["evals"]) for c in cycles if isinstance(c.get("stop"), dict)],
        "train_seconds": round(sum(c["seconds"].get("train", 0) for c in cycles), 1),
        "evaluate_seconds": round(sum(c["seconds"].get("evaluate", 0) for c in cycles), 1),
    }


def _epoch_fraction(v: dict, base: dict) -> float:
    """Cycle training image-iterations relative to the baseline's: sum epochs_n * pool_n over sum of
    the baseline's (the definition bench_schedule_cost.py reads)."""
    return sum(e * p for e, p in zip(v["epochs"], v["pool_sizes"])) / sum(
        e * p for e, p in zip(base["epochs"], base["pool_sizes"]))


def cycle_levers(result: dict) -> dict:
    """``cycle_levers.json`` for bench_schedule_cost.py: ``warm`` is the cheapest fixed-epoch warm
    variant whose final mAP50 reached the baseline's (absent if none did), ``warm_plateau`` and
    ``plateau`` the plateau variants; each with its fraction of the baseline's cycle training, its
    evaluations per cycle, and the mAP50 it reached, so the saving's price is in the same file."""
    variants = result["variants"]
    base = variants[BASELINE]
    out = {"source": "benchmarks/bench_demo_levers.py on the demo (configs/demo.yaml, one shared scorer)",
           "machine": result["machine"], "baseline": {"what": base["what"], "final_mAP50": base["mAP50"][-1],
                                                      "seconds": base["seconds"]}}
    warm = sorted((_epoch_fraction(v, base), name) for name, v in variants.items()
                  if name.startswith("warm_e") and v["mAP50"][-1] >= base["mAP50"][-1])
    picks = {"warm": warm[0][1] if warm else None, "warm_plateau": "warm_plateau", "plateau": "plateau"}
    for lever, name in picks.items():
        if name not in variants:
            continue
        v = variants[name]
        out[lever] = {"variant": name, "what": v["what"], "epoch_fraction": round(_epoch_fraction(v, base), 4),
                      "seconds_fraction": round(v["seconds"] / base["seconds"], 4),
                      "final_mAP50": v["mAP50"][-1], "baseline_final_mAP50": base["mAP50"][-1],
                      "source": f"bench_demo_levers.py variant {name} on the demo, {result['machine'].get('date')}"}
        if "plateau" in name:
            out[lever]["evals_per_cycle"] = round(sum(v["plateau_evals"]) / len(v["plateau_evals"]), 3)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
