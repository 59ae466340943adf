"""Append one demo run's record to a JSONL file: ``python _demo_record.py RUN_NAME WALL_S DEST``.

The record holds the wall seconds, the scorer's metrics and, per evaluated cycle, the pool size,
epochs, mAP50, mAP and step seconds, read from ``runs/RUN_NAME/``. Used by ``run_gpu_checks.sh``
(which had the same code inline when it ran on the H100) and ``run_gpu_demo.sh``."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def record(name: str, seconds: int) -> dict:
    rec: dict = {"run": name, "wall_s": seconds}
    state = Path("runs", name, "cycles", "state.json")
    if state.exists():
        s = json.loads(state.read_text())
        rec["cycles"] = [{k: c.get(k) for k in ("cycle", "pool_size", "epochs", "mAP50", "mAP", "seconds")}
                         for c in s["cycles"] if c.get("step") == "evaluated"]
    pre = Path("runs", name, "pretrain", "metrics.json")
    if pre.exists():
        rec["scorer"] = json.loads(pre.read_text())
    return rec


if __name__ == "__main__":
    name, seconds, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(dest, "a") as f:
        f.write(json.dumps(record(name, seconds)) + "\n")
