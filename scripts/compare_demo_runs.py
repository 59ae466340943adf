"""Compare two runs of the demo: schedule bytes and per-cycle metrics, to the last bit.

Used to check that a restructuring changed nothing the pipeline computes: run the demo with the
old code, copy its ``runs/demo/pretrain/`` (the scorer) and ``data/synthetic/`` into a checkout of
the new code, run the demo there (pretraining is then reused), and compare::

    python scripts/compare_demo_runs.py --before OLD/runs/demo --after NEW/runs/demo \\
        --before-commit 8d98e89 --after-commit 37b4311 --out benchmarks/results/restructure_parity.json

Reads both formats of ``cycles/state.json`` (``alod.cycles/1`` ``completed``, ``alod.cycles/2``
``cycles``). Exits 1 when anything differs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _machine import machine_info, write_result  # noqa: E402


def _cycles(run: Path) -> list[dict]:
    state = json.loads((run / "cycles" / "state.json").read_text())
    rows = state["completed"] if "completed" in state else [c for c in state["cycles"] if c["step"] == "evaluated"]
    return [{k: c[k] for k in ("cycle", "pool_size", "mAP50", "mAP")} for c in rows]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True)
    p.add_argument("--after", type=Path, required=True)
    p.add_argument("--before-commit", default="")
    p.add_argument("--after-commit", default="")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--what", default="the demo before and after a restructuring, from the same scorer checkpoint")
    p.add_argument("--command", dest="commands", action="append", default=[],
                   help="a command that made the runs, recorded under 'commands' (repeatable)")
    args = p.parse_args()
    a, b = (args.before / "schedule.json").read_bytes(), (args.after / "schedule.json").read_bytes()
    ca, cb = _cycles(args.before), _cycles(args.after)
    ckpt = args.before / "pretrain" / "checkpoint_last.pt"
    result = {
        "what": args.what,
        "machine": machine_info(),
        "commands": list(args.commands),
        "scorer_checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest() if ckpt.is_file() else None,
        "before": {"commit": args.before_commit, "schedule_sha256": hashlib.sha256(a).hexdigest(), "cycles": ca},
        "after": {"commit": args.after_commit, "schedule_sha256": hashlib.sha256(b).hexdigest(), "cycles": cb},
        "schedule_bytes_identical": a == b,
        "cycles_identical": ca == cb,
    }
    write_result(args.out, result)
    print(f"schedule.json identical: {a == b}; per-cycle metrics identical: {ca == cb} ({len(ca)} vs {len(cb)} cycles)")
    for x, y in zip(ca, cb):
        print(f"cycle {x['cycle']}: mAP50 {x['mAP50']:.6f} vs {y['mAP50']:.6f}")
    return 0 if a == b and ca == cb else 1


if __name__ == "__main__":
    sys.exit(main())
